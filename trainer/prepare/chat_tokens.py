"""A conversation as tokens and a loss mask: rendered with the chat template (the server's
rendering, so training sees exactly the prompts it will be served), encoded in one piece (the
server encodes a prompt the same way), and each token marked by where its first character lies.

Mask bytes (trainer/shards.py): bit 0 (LOSS) the token is a target that carries loss, bit 1
(DOC_START) the token begins a document, which is where attention stops looking back.
"""

from __future__ import annotations

import numpy as np
from tokenizers import Tokenizer

from capstan_trainer import chat_template
from capstan_trainer.shards import DOC_START, LOSS


def plain_mask(n: int) -> np.ndarray:
    """A text document's mask: loss on every token (as in pretraining)."""
    mask = np.full(n, LOSS, dtype=np.uint8)
    mask[0] |= DOC_START
    return mask


def encode(
    tok: Tokenizer, template: str, messages: list[dict], eos: int, train_on: str, first: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(token ids followed by the end-of-text separator, mask bytes), both of the same length.
    Assistant turns before message `first` carry no loss (a preference pair's prompt)."""
    bos_text, eos_text = chat_template.template_tokens(tok, eos)
    text, spans = chat_template.assistant_spans(
        template, messages, bos_token=bos_text, eos_token=eos_text, first=first
    )
    enc = tok.encode(text, add_special_tokens=False)
    ids = np.array([*enc.ids, eos], dtype=np.int64)
    mask = np.zeros(len(ids), dtype=np.uint8)
    if train_on == "all":
        mask[:-1] = LOSS
    else:
        starts = np.array([a for a, _ in enc.offsets], dtype=np.int64)
        for a, b in spans:
            mask[:-1][(starts >= a) & (starts < b)] = LOSS
    mask[0] |= DOC_START
    return ids, mask


def encode_pair(tok: Tokenizer, template: str, pair: dict, eos: int) -> tuple[np.ndarray, np.ndarray]:
    """A preference pair as one document: prompt + chosen, then prompt + rejected, each rendered
    like a conversation, with loss only on the answer and a document start at each."""
    n = len(pair["prompt"])
    chosen = encode(tok, template, pair["prompt"] + pair["chosen"], eos, "assistant", first=n)
    rejected = encode(tok, template, pair["prompt"] + pair["rejected"], eos, "assistant", first=n)
    return np.concatenate([chosen[0], rejected[0]]), np.concatenate([chosen[1], rejected[1]])
