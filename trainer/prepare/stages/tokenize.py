"""tokenize: one map part's kept documents, duplicates dropped, split by their text's hash and
tokenized. Writes per split a token stream (`tokens-<i>-<split>.bin`, documents each followed by
end-of-text) and its documents.jsonl lines (`meta-<i>-<split>.jsonl`), with every input file's
range in both, so the shard stage can lay all parts out in document-id order.
"""

from __future__ import annotations

import io
import json
from collections import Counter
from contextlib import ExitStack

import numpy as np
from tokenizers import Tokenizer

from capstan_api.drift import PromptStats
from capstan_trainer import shards, storage
from capstan_trainer.prepare import dedup
from capstan_trainer.prepare.content import ContentSizes
from capstan_trainer.prepare.read import RECORD_BITS
from capstan_trainer.prepare.stages import cluster, mapper
from capstan_trainer.prepare.tokens import ENCODE_BATCH, token_stream
from capstan_trainer.prepare.work import Context, Progress, markers, write_marker
from capstan_trainer.textstats import byte_token_ids, count_byte_tokens

SPLITS = ("train", "validation")


def tokens_name(i: int, split: str) -> str:
    return f"tokens-{i:05d}-{split}.bin"


def meta_name(i: int, split: str) -> str:
    return f"meta-{i:05d}-{split}.jsonl"


def load_tokenizer(ctx: Context) -> tuple[Tokenizer, str, int]:
    """The stage's tokenizer, the shards' dtype and the end-of-text id."""
    tok = Tokenizer.from_str(storage.read_bytes(ctx.path("cluster", cluster.TOKENIZER_FILE)).decode())
    dtype = shards.dtype_for_vocab(tok.get_vocab_size(with_added_tokens=True))
    return tok, dtype, tok.token_to_id(ctx.spec.tokenizer.special_tokens.eos)


class SplitWriter:
    """One split's token stream and documents.jsonl lines, with each input file's ranges."""

    def __init__(self, tokens, meta, name: str) -> None:
        self.tokens, self.meta, self.name = tokens, meta, name
        self.tok_pos = self.meta_pos = self.docs = 0
        self.files: dict[int, list[int]] = {}  # file -> [token offset, tokens, meta offset, meta bytes, docs]

    def add(self, doc: dict, ids: np.ndarray) -> None:
        file = doc["id"] >> RECORD_BITS
        record = {
            "split": self.name,
            "id": doc["id"],
            "file": file,
            "record": doc["id"] & ((1 << RECORD_BITS) - 1),
            "licence": doc["licence"],
            "url": doc["url"],
            "tokens": len(ids),
        }
        line = (json.dumps(record, sort_keys=True) + "\n").encode()
        data = ids.tobytes()
        r = self.files.setdefault(file, [self.tok_pos, 0, self.meta_pos, 0, 0])
        r[1] += len(ids)
        r[3] += len(line)
        r[4] += 1
        self.tokens.write(data)
        self.meta.write(line)
        self.tok_pos += len(ids)
        self.meta_pos += len(line)
        self.docs += 1


def run(ctx: Context) -> dict:
    spec = ctx.spec
    markers(ctx, "cluster")
    drop = set(np.load(io.BytesIO(storage.read_bytes(ctx.path("cluster", cluster.DROP_FILE)))).tolist())
    tok, dtype, eos = load_tokenizer(ctx)
    pii: Counter = Counter()
    licences: Counter = Counter()
    sizes = ContentSizes()
    # The validation split's drift statistics (capstan_api.drift), as the server counts prompts.
    validation, byte_ids = PromptStats(), byte_token_ids(tok)
    with ExitStack() as stack:
        progress = stack.enter_context(Progress(ctx))
        writers = {
            s: SplitWriter(
                stack.enter_context(storage.open_write(ctx.path("tokenize", tokens_name(ctx.index, s)))),
                stack.enter_context(storage.open_write(ctx.path("tokenize", meta_name(ctx.index, s)))),
                s,
            )
            for s in SPLITS
        }
        batch: list[dict] = []

        def flush() -> None:
            encoded = token_stream(tok, [d["text"] for d in batch], eos, dtype)
            for flat, lengths in encoded:  # one batch of at most ENCODE_BATCH: one item
                flat = flat.astype(np.dtype(dtype).newbyteorder("<"), copy=False)
                ends = np.cumsum(lengths)
                for d, end, n in zip(batch, ends.tolist(), lengths, strict=True):
                    writers[d["split"]].add(d, flat[end - n : end])
                    sizes.add(d, n)
                    if d["split"] == "validation":
                        text_ids = flat[end - n : end - 1]  # without the end-of-text
                        validation.add(n - 1, count_byte_tokens(text_ids, byte_ids))
            progress.documents_out += len(batch)
            batch.clear()

        for line in mapper.read_docs(ctx.path("map", mapper.docs_name(ctx.index))):
            doc = json.loads(line)
            progress.documents_in += 1
            if doc["id"] in drop:
                continue
            held_out = dedup.split_draw(bytes.fromhex(doc["d"])) < spec.output.validation_fraction
            doc["split"] = "validation" if held_out else "train"
            pii.update(doc["pii"])
            licences[doc["licence"]] += 1
            batch.append(doc)
            if len(batch) >= ENCODE_BATCH:
                flush()
        if batch:
            flush()
    body = {
        "splits": {
            s: {
                "documents": w.docs,
                "tokens": w.tok_pos,
                "files": {str(f): r for f, r in sorted(w.files.items())},
            }
            for s, w in writers.items()
        },
        "pii": dict(pii),
        "licences": dict(licences),
        **sizes.to_marker(),
        "promptStats": validation.to_wire(),
    }
    write_marker(ctx, body)
    return body
