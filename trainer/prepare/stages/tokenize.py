"""tokenize: one map part's kept documents, duplicates dropped, split by their text's hash,
counterfactual copies added (each right after its original, in its split) and tokenized. Writes
per split a token stream (`tokens-<i>-<split>.bin`, documents each followed by
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
from capstan_trainer.prepare import chat_tokens, dedup
from capstan_trainer.prepare.content import ContentSizes
from capstan_trainer.prepare.counterfactual import Augmenter
from capstan_trainer.prepare.read import RECORD_BITS, InputError
from capstan_trainer.prepare.stages import cluster, mapper
from capstan_trainer.prepare.tokens import ENCODE_BATCH, token_stream
from capstan_trainer.prepare.work import Context, Progress, markers, write_marker
from capstan_trainer.textstats import byte_token_ids, count_byte_tokens

SPLITS = ("train", "validation")


def tokens_name(i: int, split: str) -> str:
    return f"tokens-{i:05d}-{split}.bin"


def meta_name(i: int, split: str) -> str:
    return f"meta-{i:05d}-{split}.jsonl"


def mask_name(i: int, split: str) -> str:
    return f"mask-{i:05d}-{split}.bin"


def load_tokenizer(ctx: Context) -> tuple[Tokenizer, str, int]:
    """The stage's tokenizer, the shards' dtype and the end-of-text id."""
    tok = Tokenizer.from_str(storage.read_bytes(ctx.path("cluster", cluster.TOKENIZER_FILE)).decode())
    dtype = shards.dtype_for_vocab(tok.get_vocab_size(with_added_tokens=True))
    return tok, dtype, tok.token_to_id(ctx.spec.tokenizer.special_tokens.eos)


class SplitWriter:
    """One split's token stream and documents.jsonl lines, with each input file's ranges."""

    def __init__(self, tokens, meta, name: str, mask=None) -> None:
        self.tokens, self.meta, self.name, self.mask = tokens, meta, name, mask
        self.tok_pos = self.meta_pos = self.docs = self.loss_tokens = 0
        self.files: dict[int, list[int]] = {}  # file -> [token offset, tokens, meta offset, meta bytes, docs]

    def add(self, doc: dict, ids: np.ndarray, mask: np.ndarray | None = None) -> None:
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
        if doc.get("counterfactual"):
            record["counterfactual"] = True
        line = (json.dumps(record, sort_keys=True) + "\n").encode()
        data = ids.tobytes()
        r = self.files.setdefault(file, [self.tok_pos, 0, self.meta_pos, 0, 0])
        r[1] += len(ids)
        r[3] += len(line)
        r[4] += 1
        self.tokens.write(data)
        self.meta.write(line)
        if self.mask is not None:  # one byte per token: its offsets are the token offsets
            self.mask.write(mask.tobytes())
            self.loss_tokens += int(np.count_nonzero(mask & shards.LOSS))
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
    augment = Augmenter(spec)
    sizes = ContentSizes()
    # The validation split's drift statistics (capstan_api.drift), as the server counts prompts.
    validation, byte_ids = PromptStats(), byte_token_ids(tok)
    with ExitStack() as stack:
        progress = stack.enter_context(Progress(ctx))

        def out(name) -> object:
            return stack.enter_context(storage.open_write(ctx.path("tokenize", name)))

        writers = {
            s: SplitWriter(
                out(tokens_name(ctx.index, s)),
                out(meta_name(ctx.index, s)),
                s,
                out(mask_name(ctx.index, s)) if spec.loss_mask else None,
            )
            for s in SPLITS
        }
        batch: list[dict] = []
        np_dtype = np.dtype(dtype).newbyteorder("<")

        def flush() -> None:
            encoded = encode_batch(tok, batch, eos, dtype, spec.tokenizer.chat_template, spec.train_on)
            for d, (ids, mask) in zip(batch, encoded, strict=True):
                if spec.loss_mask and mask is None:
                    mask = chat_tokens.plain_mask(len(ids))
                writers[d["split"]].add(d, ids.astype(np_dtype, copy=False), mask)
                sizes.add(d, len(ids))
                if d["split"] == "validation":
                    # without the end-of-text, as the server counts a prompt
                    validation.add(len(ids) - 1, count_byte_tokens(ids[:-1], byte_ids))
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
            if copy := augment.copy(doc):
                licences[doc["licence"]] += 1
                batch.append(copy)
            if len(batch) >= ENCODE_BATCH:
                flush()
        if batch:
            flush()
    body = {
        "splits": {
            s: {
                "documents": w.docs,
                "tokens": w.tok_pos,
                "lossTokens": w.loss_tokens,
                "files": {str(f): r for f, r in sorted(w.files.items())},
            }
            for s, w in writers.items()
        },
        "pii": dict(pii),
        "licences": dict(licences),
        "augmentation": dict(augment.counts),
        **sizes.to_marker(),
        "promptStats": validation.to_wire(),
    }
    write_marker(ctx, body)
    return body


def encode_batch(
    tok: Tokenizer, batch: list[dict], eos: int, dtype: str, template: str, train_on: str
) -> list[tuple[np.ndarray, np.ndarray | None]]:
    """(ids followed by eos, loss mask or None) per document, in order: text documents encoded
    together, conversations one by one (rendered with the template, with their masks)."""
    out: list = [None] * len(batch)
    plain = [i for i, d in enumerate(batch) if "messages" not in d and "pair" not in d]
    for flat, lengths in token_stream(tok, [batch[i]["text"] for i in plain], eos, dtype):
        ends = np.cumsum(lengths)  # one batch of at most ENCODE_BATCH: one item
        for i, end, n in zip(plain, ends.tolist(), lengths, strict=True):
            out[i] = (flat[end - n : end], None)
    for i, d in enumerate(batch):
        if out[i] is None:
            try:
                if "pair" in d:
                    out[i] = chat_tokens.encode_pair(tok, template, d["pair"], eos)
                else:
                    out[i] = chat_tokens.encode(tok, template, d["messages"], eos, train_on)
            except ValueError as exc:  # the template, not the record: every conversation fails alike
                raise InputError(f"spec.tokenizer.chatTemplate: {exc}") from exc
    return out
