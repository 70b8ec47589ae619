"""The global stages over every document, after the map: exact dedup -> near dedup -> split ->
tokenizer -> shards -> documents.jsonl, datasheet and manifest.

They need all documents at once, so they run in one process whatever the shard count; the output
folder is written here, the manifest last (readers wait for it).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from tokenizers import Tokenizer

from capstan_api.cleaning import NearDedup
from capstan_api.dataset import DatasetSpec, Output
from capstan_api.tokenizer import Tokenizer as TokenizerSpec
from capstan_trainer import shards, storage
from capstan_trainer.prepare import datasheet, dedup
from capstan_trainer.prepare.mapper import Part
from capstan_trainer.prepare.read import InputError
from capstan_trainer.prepare.stats import manifest_stats
from capstan_trainer.prepare.tokens import (
    ShardWriter,
    load_tokenizer,
    token_stream,
    tokenizer_config,
    train_tokenizer,
)

SPLITS = ("train", "validation")


def merge(spec: DatasetSpec, part: Part, allowed: list[str], name: str) -> dict:
    """Global stages over all documents; writes the output folder and returns the manifest stats."""
    seconds = Counter(part.seconds)
    check_error_rate(part, spec.max_error_rate)
    n = len(part.ids)
    with _timed(seconds, "exactDedup"):
        keep = exact_dedup(part) if spec.dedup.exact else np.ones(n, dtype=bool)
    exact_removed = int(n - keep.sum())
    with _timed(seconds, "nearDedup"):
        near_removed = near_dedup(part, keep, spec.dedup.near)
    kept = np.flatnonzero(keep).tolist()
    with _timed(seconds, "tokenizerTrain"):
        split = split_documents(part, kept, spec.output.validation_fraction)
        tok = build_tokenizer(spec, part, split["train"])
    with _timed(seconds, "tokenize"):
        splits, tokens_of = write_shards(tok, part, split, spec.output)
    # ---- statistics, datasheet, manifest (last: readers wait for it)
    out = spec.output.uri
    stats = manifest_stats(part, n, exact_removed, near_removed, kept, splits)
    fp = fingerprint(spec, allowed, part.files, tok.sha256)
    write_tokenizer(out, tok, spec.tokenizer)
    storage.write_bytes(storage.join(out, "documents.jsonl"), documents_jsonl(part, split, tokens_of))
    storage.write_bytes(
        storage.join(out, "datasheet.md"), datasheet.render(name, spec, stats, allowed, fp).encode()
    )
    write_manifest(out, tok, splits, fp, stats)
    stats["seconds"] = {k: round(v, 3) for k, v in seconds.items()}
    return stats


@contextmanager
def _timed(seconds: Counter, stage: str) -> Iterator[None]:
    t = time.perf_counter()
    yield
    seconds[stage] += time.perf_counter() - t


def check_error_rate(part: Part, max_error_rate: float) -> None:
    c = part.counts
    if c["records"] and c["malformed"] / c["records"] > max_error_rate:
        worst = max(part.malformed_by_file.items(), key=lambda kv: kv[1])
        raise InputError(
            f"spec.maxErrorRate: {c['malformed']} of {c['records']} records are malformed "
            f"({c['malformed'] / c['records']:.4%} > {max_error_rate:.4%}); most in {worst[0]} ({worst[1]})"
        )


def exact_dedup(part: Part) -> np.ndarray:
    """Keep mask (D,) with only the first (lowest id) document of each normalised text."""
    keep = np.ones(len(part.ids), dtype=bool)
    seen: set[bytes] = set()
    for i, d in enumerate(part.digests):
        if d in seen:
            keep[i] = False
        seen.add(d)
    return keep


def near_dedup(part: Part, keep: np.ndarray, near: NearDedup) -> int:
    """Clears near duplicates among the exact survivors in `keep`; returns how many."""
    if not near.enabled or part.bands is None:
        return 0
    survivors = np.flatnonzero(keep)
    sigs = part.sigs[survivors] if part.sigs is not None else None
    drop = dedup.near_duplicates(part.bands[survivors], sigs, near.threshold)
    keep[survivors[drop]] = False
    return len(drop)


def split_documents(part: Part, kept: list[int], validation_fraction: float) -> dict[str, list[int]]:
    """Kept ids per split, in id order; a document's split is drawn from its text's hash."""
    if not kept:
        raise InputError("spec.sources: no documents left after licence, filters and deduplication")
    split: dict[str, list[int]] = {name: [] for name in SPLITS}
    for i in kept:
        split["validation" if dedup.split_draw(part.digests[i]) < validation_fraction else "train"].append(i)
    if not split["train"]:
        raise InputError(
            "spec.output.validationFraction: every remaining document fell in the validation split"
        )
    return split


@dataclass(frozen=True)
class BuiltTokenizer:
    tok: Tokenizer
    json: bytes  # tokenizer.json as written
    sha256: str
    vocab_size: int  # special tokens included
    dtype: str  # of the shards' token ids
    eos: int


def build_tokenizer(spec: DatasetSpec, part: Part, train_idx: list[int]) -> BuiltTokenizer:
    if spec.tokenizer.uri:
        tok = load_tokenizer(spec.tokenizer.uri, spec.tokenizer)
    else:
        tok = train_tokenizer(_sample(part, train_idx, spec.tokenizer.sample_bytes), spec.tokenizer)
    tok_json = tok.to_str().encode("utf-8")
    vocab = tok.get_vocab_size(with_added_tokens=True)
    return BuiltTokenizer(
        tok=tok,
        json=tok_json,
        sha256=hashlib.sha256(tok_json).hexdigest(),
        vocab_size=vocab,
        dtype=shards.dtype_for_vocab(vocab),
        eos=tok.token_to_id(spec.tokenizer.special_tokens.eos),
    )


def _sample(part: Part, idx: list[int], limit: int):
    """Training-split texts in id order up to `limit` bytes: deterministic tokenizer input."""
    used = 0
    for i in idx:
        if used >= limit:
            return
        used += len(part.texts[i])
        yield part.texts[i]


def write_shards(
    tok: BuiltTokenizer, part: Part, split: dict[str, list[int]], output: Output
) -> tuple[dict[str, shards.SplitInfo], dict[int, int]]:
    """Tokenizes each split into shard files; returns the splits and every document's token count."""
    splits: dict[str, shards.SplitInfo] = {}
    tokens_of: dict[int, int] = {}
    for name, idx in split.items():
        writer = ShardWriter(output.uri, name, output.shard_tokens, tok.dtype)
        pos = 0
        for flat, lengths in token_stream(tok.tok, [part.texts[i] for i in idx], tok.eos, tok.dtype):
            writer.add(flat)
            tokens_of.update(zip(idx[pos : pos + len(lengths)], lengths, strict=True))
            pos += len(lengths)
        splits[name] = shards.SplitInfo(shards=writer.close(), documents=len(idx))
    return splits, tokens_of


def fingerprint(spec: DatasetSpec, allowed: list[str], files: dict[str, str], tokenizer_sha: str) -> str:
    """Hash of the inputs' bytes and everything in the spec that shapes the output (not its location)."""
    wire = spec.to_wire()
    wire.pop("output", None)
    wire["output"] = {k: v for k, v in spec.output.to_wire().items() if k != "uri"}
    body = {"spec": wire, "allowed": allowed, "files": sorted(files.items()), "tokenizer": tokenizer_sha}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def write_tokenizer(out: str, tok: BuiltTokenizer, spec: TokenizerSpec) -> None:
    storage.write_bytes(storage.join(out, "tokenizer.json"), tok.json)
    storage.write_bytes(storage.join(out, "tokenizer_config.json"), tokenizer_config(tok.tok, spec).encode())


def write_manifest(
    out: str, tok: BuiltTokenizer, splits: dict[str, shards.SplitInfo], fp: str, stats: dict
) -> None:
    manifest = shards.Manifest(
        dtype=tok.dtype,
        vocab_size=tok.vocab_size,
        eos_id=tok.eos,
        tokenizer={"path": "tokenizer.json", "sha256": tok.sha256, "config": "tokenizer_config.json"},
        splits=splits,
        fingerprint=fp,
        stats=stats,
    )
    storage.write_bytes(storage.join(out, "manifest.json"), manifest.to_json().encode())


def documents_jsonl(part: Part, split: dict[str, list[int]], tokens_of: dict[int, int]) -> bytes:
    """documents.jsonl: where every output document came from, in output order."""
    lines = []
    for name, idx in split.items():
        for i in idx:
            record = {
                "split": name,
                "id": part.ids[i],
                "file": part.ids[i] >> 32,
                "record": part.ids[i] & 0xFFFFFFFF,
                "licence": part.licences[i],
                "url": part.urls[i],
                "tokens": tokens_of[i],
            }
            lines.append(json.dumps(record, sort_keys=True))
    return ("\n".join(lines) + "\n").encode()
