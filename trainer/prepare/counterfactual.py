"""Counterfactual data augmentation: a copy of a document with paired terms swapped (he <-> she,
father <-> mother, ...), whole words, case kept. Which documents get a copy is a hash of their id
and the seed, so a re-run (and any worker count) draws the same ones."""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from dataclasses import dataclass

from capstan_api.dataset import DatasetSpec
from capstan_api.mitigation import Counterfactual
from capstan_trainer.prepare.read import InputError
from capstan_trainer.prepare.wordlists import rows

FIELD = "spec.augmentation.counterfactual.pairsUri"
# Terms that map to two words: the first when a noun phrase follows (her book -> his book), the
# second otherwise (gave her the key -> gave him the key; it is his -> it is hers).
AMBIGUOUS = {"her": ("his", "him"), "his": ("her", "hers")}
# Words after her/his that do not start the noun phrase it would determine.
NOT_A_NOUN = frozenset(
    [
        "a",
        "an",
        "the",
        "and",
        "or",
        "but",
        "nor",
        "to",
        "of",
        "in",
        "on",
        "at",
        "for",
        "with",
        "from",
        "by",
        "into",
        "onto",
        "over",
        "under",
        "after",
        "before",
        "that",
        "this",
        "these",
        "those",
        "as",
        "is",
        "was",
        "be",
        "been",
        "are",
        "were",
        "so",
        "if",
        "when",
        "because",
        "about",
        "up",
        "down",
        "out",
        "off",
        "back",
        "again",
        "too",
        "then",
        "now",
        "here",
        "there",
        "home",
        "away",
        "all",
        "what",
        "how",
        "why",
        "who",
        "it",
        "me",
        "us",
        "them",
        "you",
        "not",
        "very",
        "well",
        "yesterday",
        "today",
        "tomorrow",
        "tonight",
    ]
)
_NEXT_WORD = re.compile(r"[ \t]+([A-Za-z]+)")


def draw(doc_id: int, seed: int) -> float:
    """A uniform number in [0, 1) fixed by the document id and the seed."""
    h = hashlib.blake2b(f"cda:{seed}:{doc_id}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "big") / 2**64


def _cased(like: str, word: str) -> str:
    if len(like) > 1 and like.isupper():
        return word.upper()
    if like[0].isupper():
        return word[0].upper() + word[1:]
    return word


@dataclass
class Swapper:
    mapping: dict[str, str | tuple[str, str]]

    def __post_init__(self) -> None:
        terms = sorted(self.mapping, key=len, reverse=True)  # longest first: 'mrs' before 'mr'
        self._re = re.compile(r"\b(?:" + "|".join(map(re.escape, terms)) + r")\b", re.IGNORECASE)

    def swap(self, text: str) -> tuple[str, int]:
        """(text with every paired term replaced by its partner, number of replacements)."""
        n = 0

        def one(m: re.Match) -> str:
            nonlocal n
            n += 1
            word = m.group(0)
            to = self.mapping[word.lower()]
            if isinstance(to, tuple):
                nxt = _NEXT_WORD.match(text, m.end())
                to = to[0] if nxt and nxt.group(1).lower() not in NOT_A_NOUN else to[1]
            return _cased(word, to)

        return self._re.sub(one, text), n


def load(cfg: Counterfactual) -> Swapper:
    """The swapper of the pairs file (built-in gender pairs when pairsUri is empty). A term paired
    twice is an error, unless it is one of AMBIGUOUS paired with its two partners, which the next
    word then decides."""
    mapping: dict[str, str | tuple[str, str]] = {}
    for n, a, b in rows(cfg.pairs_uri, "gender_pairs.tsv", FIELD):
        a = a.lower()
        if " " in b or a == b:
            raise InputError(f"{FIELD}: line {n}: a pair is two different single words, got {a!r} {b!r}")
        for x, y in ((a, b), (b, a)):
            prev = mapping.setdefault(x, y)
            if prev == y or (isinstance(prev, tuple) and y in prev):
                continue
            if x in AMBIGUOUS and {prev, y} == set(AMBIGUOUS[x]):
                mapping[x] = AMBIGUOUS[x]
            else:
                raise InputError(f"{FIELD}: line {n}: {x!r} is paired with both {prev!r} and {y!r}")
    return Swapper(mapping)


class Augmenter:
    """The tokenize stage's side of augmentation: the copy of a kept document, if drawn, and counts."""

    def __init__(self, spec: DatasetSpec) -> None:
        cfg = spec.augmentation.counterfactual
        self.fraction, self.seed = cfg.fraction, spec.seed
        self.swapper = load(cfg) if cfg.fraction > 0 else None
        self.counts: Counter = Counter(drawn=0, copies=0, swaps=0)

    def copy(self, doc: dict) -> dict | None:
        """`doc` with its terms swapped and marked counterfactual, or None (not drawn, no term)."""
        if self.swapper is None or draw(doc["id"], self.seed) >= self.fraction:
            return None
        self.counts["drawn"] += 1
        copy, n = {**doc, "counterfactual": True}, 0
        if isinstance(doc.get("text"), str):
            copy["text"], n = self.swapper.swap(doc["text"])
        if isinstance(doc.get("messages"), list):  # a conversation: every message's content
            copy["messages"] = []
            for m in doc["messages"]:
                content, k = self.swapper.swap(m.get("content") or "")
                copy["messages"].append({**m, "content": content})
                n += k
        if not n:
            return None
        self.counts["copies"] += 1
        self.counts["swaps"] += n
        return copy
