"""Stages 8-9: train or load the tokenizer, tokenize in parallel, write shards.

Hugging Face `tokenizers` does the work: its BPE trainer and its batch encoder both run on all
cores (RAYON_NUM_THREADS caps them). Shards follow trainer/shards.py: flat little-endian token
arrays, end-of-text after every document.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from itertools import chain

import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from capstan_api.tokenizer import Tokenizer as TokenizerSpec
from capstan_trainer import storage
from capstan_trainer.prepare.read import InputError

ENCODE_BATCH = 2048  # documents per encode_batch call: big enough to keep every core busy


def train_tokenizer(texts: Iterable[str], spec: TokenizerSpec) -> Tokenizer:
    """Byte-level BPE (GPT-2 style pre-tokenizer, no prefix space); special tokens get the first ids."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=spec.vocab_size,
        min_frequency=spec.min_frequency,
        special_tokens=spec.special_tokens.all(),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def load_tokenizer(
    uri: str, spec: TokenizerSpec, field: str = "spec.tokenizer.uri"
) -> tuple[Tokenizer, bytes]:
    """A given tokenizer.json and its bytes (kept as they are: a TrainingRun compares their sha256
    with its model's); InputError naming `field` when it is missing, malformed or lacks eos."""
    try:
        raw = storage.read_bytes(uri)
        tok = Tokenizer.from_str(raw.decode("utf-8"))
    except FileNotFoundError as exc:
        raise InputError(f"{field}: no such file {uri}") from exc
    except Exception as exc:  # tokenizers raises a bare Exception for a malformed file
        raise InputError(f"{field}: {uri} is not a tokenizer.json: {exc}") from exc
    if tok.token_to_id(spec.special_tokens.eos) is None:
        raise InputError(
            f"{field}: {uri} has no token {spec.special_tokens.eos!r} (spec.tokenizer.specialTokens.eos)"
        )
    return tok, raw


def given_tokenizer(spec: TokenizerSpec) -> tuple[Tokenizer, bytes] | None:
    """spec.tokenizer.uri's or spec.tokenizer.fromModel's tokenizer; None when one is to be trained."""
    if spec.from_model:
        return load_tokenizer(
            storage.join(spec.from_model, "tokenizer.json"), spec, "spec.tokenizer.fromModel"
        )
    if spec.uri:
        return load_tokenizer(spec.uri, spec)
    return None


def tokenizer_config(tok: Tokenizer, spec: TokenizerSpec) -> str:
    """tokenizer_config.json as transformers reads it: special tokens and the chat template."""
    st = spec.special_tokens
    cfg = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": st.bos if tok.token_to_id(st.bos) is not None else None,
        "eos_token": st.eos,
        "pad_token": st.pad if tok.token_to_id(st.pad) is not None else None,
        "chat_template": spec.chat_template,
        "model_max_length": 1_000_000_000,
        "clean_up_tokenization_spaces": False,
    }
    return json.dumps(cfg, indent=2, sort_keys=True) + "\n"


def token_stream(
    tok: Tokenizer, texts: list[str], eos: int, dtype: str
) -> Iterator[tuple[np.ndarray, list[int]]]:
    """Per batch: (tokens of every document each followed by eos, tokens per document)."""
    for i in range(0, len(texts), ENCODE_BATCH):
        encs = tok.encode_batch_fast(texts[i : i + ENCODE_BATCH], add_special_tokens=False)
        ids = [e.ids for e in encs]
        lengths = [len(x) + 1 for x in ids]
        flat = np.fromiter(
            chain.from_iterable(chain(x, (eos,)) for x in ids), dtype=np.dtype(dtype), count=sum(lengths)
        )
        yield flat, lengths
