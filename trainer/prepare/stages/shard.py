"""shard: the token streams laid end to end in document-id order (input file by input file) and
cut into `shardTokens`-token files `<split>-NNNNN.bin` in the output folder; shard g of all
splits goes to the worker g % workers. Each shard is read with ranged reads from the parts it spans.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator

from capstan_trainer import storage
from capstan_trainer.prepare.read import InputError
from capstan_trainer.prepare.stages import tokenize
from capstan_trainer.prepare.tokenize_layout import Segment, layout
from capstan_trainer.prepare.work import Context, Progress, markers, write_marker


def shard_name(split: str, k: int) -> str:
    return f"{split}-{k:05d}.bin"


def mask_shard_name(split: str, k: int) -> str:
    return f"{split}-{k:05d}.mask.bin"


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
                    sha = copy(
                        ctx,
                        segments,
                        split,
                        (a, b),
                        (tokenize.tokens_name, itemsize),
                        shard_name(split, k),
                        progress,
                    )
                    row = [split, k, b - a, sha]
                    if ctx.spec.loss_mask:  # the mask bytes of the same tokens, beside them
                        row.append(
                            copy(
                                ctx,
                                segments,
                                split,
                                (a, b),
                                (tokenize.mask_name, 1),
                                mask_shard_name(split, k),
                                progress,
                            )
                        )
                    written.append(row)
                    progress.documents_out += 1
                g += 1
    body = {"shards": written}
    write_marker(ctx, body)
    return body


def copy(ctx: Context, segments, split: str, span, stream, name: str, progress) -> str:
    """Writes items [a, b) of a stream (tokens or mask bytes) to the output file `name`; its sha256."""
    sha = hashlib.sha256()
    with storage.open_write(storage.join(ctx.out, name)) as f:
        for piece in read_tokens(ctx, segments, split, *span, *stream):
            f.write(piece)
            sha.update(piece)
            progress.bytes_in += len(piece)
    return sha.hexdigest()


PIECE_TOKENS = 4 << 20  # tokens read at a time: a shard is streamed, not held


def read_tokens(
    ctx: Context,
    segments: list[Segment],
    split: str,
    a: int,
    b: int,
    part_name: Callable[[int, str], str],
    itemsize: int,
) -> Iterator[bytes]:
    """Items [a, b) of the split's global stream (tokens, or mask bytes), in pieces."""
    for s in segments:
        lo, hi = max(a, s.start), min(b, s.start + s.tokens)
        uri = ctx.path("tokenize", part_name(s.part, split))
        for start in range(lo, hi, PIECE_TOKENS):
            n = min(PIECE_TOKENS, hi - start)
            yield storage.read_range(uri, (s.offset + start - s.start) * itemsize, n * itemsize)
