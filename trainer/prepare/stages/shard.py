"""shard: the token streams laid end to end in document-id order (input file by input file) and
cut into `shardTokens`-token files `<split>-NNNNN.bin` in the output folder; shard g of all
splits goes to the worker g % workers. Each shard is read with ranged reads from the parts it spans.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

from capstan_trainer import storage
from capstan_trainer.prepare.read import InputError
from capstan_trainer.prepare.stages import tokenize
from capstan_trainer.prepare.tokenize_layout import Segment, layout
from capstan_trainer.prepare.work import Context, Progress, markers, write_marker


def shard_name(split: str, k: int) -> str:
    return f"{split}-{k:05d}.bin"


def run(ctx: Context) -> dict:
    parts = markers(ctx, "tokenize")
    if not sum(p["splits"]["train"]["documents"] for p in parts):
        raise InputError(
            "spec.output.validationFraction: every remaining document fell in the validation split"
        )
    _, dtype, _ = tokenize.load_tokenizer(ctx)
    itemsize = 2 if dtype == "uint16" else 4
    size = ctx.spec.output.shard_tokens
    written = []
    with Progress(ctx) as progress:
        g = 0
        for split in tokenize.SPLITS:
            segments = layout(parts, split)
            total = sum(s.tokens for s in segments)
            for k in range(-(-total // size)):
                if g % ctx.workers == ctx.index:
                    a, b = k * size, min((k + 1) * size, total)
                    sha = hashlib.sha256()
                    with storage.open_write(storage.join(ctx.out, shard_name(split, k))) as f:
                        for piece in read_tokens(ctx, segments, split, a, b, itemsize):
                            f.write(piece)
                            sha.update(piece)
                            progress.bytes_in += len(piece)
                    written.append([split, k, b - a, sha.hexdigest()])
                    progress.documents_out += 1
                g += 1
    body = {"shards": written}
    write_marker(ctx, body)
    return body


PIECE_TOKENS = 4 << 20  # tokens read at a time: a shard is streamed, not held


def read_tokens(
    ctx: Context, segments: list[Segment], split: str, a: int, b: int, itemsize: int
) -> Iterator[bytes]:
    """Tokens [a, b) of the split's global stream, in pieces."""
    for s in segments:
        lo, hi = max(a, s.start), min(b, s.start + s.tokens)
        uri = ctx.path("tokenize", tokenize.tokens_name(s.part, split))
        for start in range(lo, hi, PIECE_TOKENS):
            n = min(PIECE_TOKENS, hi - start)
            yield storage.read_range(uri, (s.offset + start - s.start) * itemsize, n * itemsize)
