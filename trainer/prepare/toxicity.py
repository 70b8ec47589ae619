"""Toxicity filter: a lexicon scorer with a threshold per category. A document's score in a
category is the share of its words (whitespace-separated, as the quality filters count them) that
the category's terms and phrases cover; above the category's threshold the document is dropped as
`toxicity.<category>`."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

from capstan_api.mitigation import ToxicityFilter
from capstan_trainer.prepare.read import InputError
from capstan_trainer.prepare.wordlists import rows

FIELD = "spec.filters.toxicity"


@dataclass
class Scorer:
    terms: dict[str, str]  # term or phrase (lower case, single spaces) -> category
    thresholds: dict[str, float]  # category -> share of words above which a document is dropped

    def __post_init__(self) -> None:
        alts = sorted(self.terms, key=len, reverse=True)  # longest first: a phrase before its words
        self._re = re.compile(
            r"(?<![\w'])(?:" + "|".join(r"\s+".join(map(re.escape, t.split())) for t in alts) + r")(?![\w'])"
        )

    def scores(self, text: str) -> dict[str, float]:
        """Share of words per category that has a match (categories without one are absent)."""
        words = len(text.split())
        if not words:
            return {}
        hits: Counter = Counter()
        for m in self._re.finditer(text.lower().replace("’", "'")):
            phrase = " ".join(m.group(0).split())
            hits[self.terms[phrase]] += phrase.count(" ") + 1
        return {c: n / words for c, n in hits.items()}

    def reason(self, text: str) -> str | None:
        """`toxicity.<category>` of the first category (by name) over its threshold, or None."""
        for category, share in sorted(self.scores(text).items()):
            if share > self.thresholds[category]:
                return f"toxicity.{category}"
        return None


def load(cfg: ToxicityFilter) -> Scorer:
    """The scorer of the lexicon (the built-in one when lexiconUri is empty) with cfg's thresholds;
    a threshold naming a category the lexicon lacks is an error naming it."""
    terms: dict[str, str] = {}
    for n, category, term in rows(cfg.lexicon_uri, "toxicity.tsv", f"{FIELD}.lexiconUri"):
        if terms.setdefault(term, category) != category:
            raise InputError(
                f"{FIELD}.lexiconUri: line {n}: {term!r} is in both {terms[term]!r} and {category!r}"
            )
    categories = sorted(set(terms.values()))
    for name in cfg.thresholds:
        if name not in categories:
            raise InputError(
                f"{FIELD}.thresholds.{name}: the lexicon has no such category (it has {', '.join(categories)})"
            )
    return Scorer(terms, {c: cfg.thresholds.get(c, cfg.threshold) for c in categories})
