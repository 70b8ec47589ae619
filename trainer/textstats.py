"""Token statistics shared by the preparation (validation split) and the server (live prompts);
what they mean and how they are compared is in capstan_api.drift."""

from __future__ import annotations

import numpy as np
from tokenizers import Tokenizer


def byte_token_ids(tok: Tokenizer) -> np.ndarray:
    """Ids of the tokens that say "no learned piece covered this": a byte-level BPE's base
    symbols (one character, one byte, not special) and the model's unknown token if it has one.
    Sorted, for np.isin."""
    special = {t.content for t in tok.get_added_tokens_decoder().values()}
    ids = [i for s, i in tok.get_vocab(with_added_tokens=False).items() if len(s) == 1 and s not in special]
    unk = getattr(tok.model, "unk_token", None)
    if unk and tok.token_to_id(unk) is not None:
        ids.append(tok.token_to_id(unk))
    return np.array(sorted(set(ids)), dtype=np.int64)


def count_byte_tokens(ids, byte_ids: np.ndarray) -> int:
    return int(np.isin(np.asarray(ids, dtype=np.int64), byte_ids, assume_unique=False).sum())
