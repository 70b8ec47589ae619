"""Where each input file's tokens and documents.jsonl lines sit in the tokenize stage's part
files, in global document-id order: what the shard and finish stages read."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Segment:
    file: int
    part: int
    start: int
    """start: the file's first token in the split's global stream."""
    offset: int
    """offset: the same token's index in its part's stream."""
    tokens: int
    meta_offset: int
    meta_bytes: int
    documents: int


def layout(parts: list[dict], split: str) -> list[Segment]:
    """The split's segments in input-file order, from the tokenize markers (one per part)."""
    found = sorted(
        (int(f), p, r) for p, m in enumerate(parts) for f, r in m["splits"][split]["files"].items()
    )
    out, start = [], 0
    for f, p, (offset, tokens, meta_offset, meta_bytes, docs) in found:
        out.append(Segment(f, p, start, offset, tokens, meta_offset, meta_bytes, docs))
        start += tokens
    return out
