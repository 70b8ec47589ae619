"""Dataset.spec.exclusions: documents a data subject (or anyone with the right) asked to remove.

Each rule removes every document it matches before any other step, so a removed document leaves
no token, no dedup key and no tokenizer sample behind. A change of the rules is a change of what
is prepared: the operator prepares a new revision (the old one stays in its folder until it is
deleted), writes the removed ids to `excluded.jsonl` beside the new manifest, and marks every
TrainingRun trained on a revision that held them (condition DataRemoved).
"""

from __future__ import annotations

import fnmatch
import re
from typing import Annotated

from pydantic import Field, field_validator

from capstan_api.common import OPTIONAL_URI_PATTERN, ApiModel

UrlRule = Annotated[str, Field(min_length=1, max_length=2000)]
PatternRule = Annotated[str, Field(min_length=1, max_length=2000)]


class ExclusionRules(ApiModel):
    """The rules themselves: what a list file at `uri` holds too (JSON or YAML, these keys)."""

    document_ids: list[Annotated[int, Field(ge=0)]] = Field(
        default_factory=list,
        max_length=100_000,
        description="documentIds are Capstan document ids as documents.jsonl lists them (file index << 32 | "
        "record index), stable while the sources' files stay the same.",
    )
    urls: list[UrlRule] = Field(
        default_factory=list,
        max_length=10_000,
        description="urls are source URLs (the urlField of each document), exact or a glob (*, ?, [...]).",
    )
    patterns: list[PatternRule] = Field(
        default_factory=list,
        max_length=1_000,
        description="patterns are regular expressions (Python syntax) searched in each document's raw text.",
    )

    @field_validator("patterns")
    @classmethod
    def _compiles(cls, patterns: list[str]) -> list[str]:
        for i, p in enumerate(patterns):
            try:
                re.compile(p)
            except re.error as exc:
                raise ValueError(f"patterns[{i}] {p!r} is not a regular expression: {exc}") from exc
        return patterns

    def labels(self, prefix: str = "spec.exclusions.") -> list[str]:
        """One label per rule, in match order: its field path, so status and the datasheet count
        each rule without repeating the personal data it names."""
        return (
            [f"{prefix}documentIds[{i}]" for i in range(len(self.document_ids))]
            + [f"{prefix}urls[{i}]" for i in range(len(self.urls))]
            + [f"{prefix}patterns[{i}]" for i in range(len(self.patterns))]
        )


def merged(
    inline: ExclusionRules, listed: ExclusionRules, listed_prefix: str
) -> tuple[ExclusionRules, list[str]]:
    """Both sets of rules in match order (ids, URLs, patterns; inline first) and their labels."""
    rules = ExclusionRules(
        document_ids=inline.document_ids + listed.document_ids,
        urls=inline.urls + listed.urls,
        patterns=inline.patterns + listed.patterns,
    )
    a, b = inline.labels(), listed.labels(listed_prefix)
    na, nb = (len(inline.document_ids), len(inline.urls)), (len(listed.document_ids), len(listed.urls))
    labels = (
        a[: na[0]] + b[: nb[0]]
        + a[na[0] : na[0] + na[1]] + b[nb[0] : nb[0] + nb[1]]
        + a[na[0] + na[1] :] + b[nb[0] + nb[1] :]
    )  # fmt: skip
    return rules, labels


class Exclusions(ExclusionRules):
    """Rules written inline, plus optionally the URI of a list of more."""

    uri: str = Field(
        default="",
        max_length=2000,
        pattern=OPTIONAL_URI_PATTERN,
        description="uri is a JSON or YAML file (fsspec URI) with documentIds, urls and patterns, added to "
        "the inline ones. Its content is read when a revision is prepared: to remove more documents, "
        "write a new file and point uri at it (an edit of the same file makes no new revision).",
    )

    def is_empty(self) -> bool:
        return not (self.document_ids or self.urls or self.patterns or self.uri)


class Matcher:
    """First matching rule of a document, by index into `rules.labels()` (ids, then URLs, then
    patterns); exact ids and URLs are set look-ups, globs and regexes are tried in order."""

    def __init__(self, rules: ExclusionRules) -> None:
        self.rules = rules
        self.ids = {d: i for i, d in reversed(list(enumerate(rules.document_ids)))}
        base = len(rules.document_ids)
        self.exact_urls: dict[str, int] = {}
        self.globs: list[tuple[int, re.Pattern]] = []
        for k, u in enumerate(rules.urls):
            if any(c in u for c in "*?["):
                self.globs.append((base + k, re.compile(fnmatch.translate(u))))
            else:
                self.exact_urls.setdefault(u, base + k)
        base += len(rules.urls)
        self.patterns = [(base + k, re.compile(p)) for k, p in enumerate(rules.patterns)]

    def __bool__(self) -> bool:
        return bool(self.ids or self.exact_urls or self.globs or self.patterns)

    def match(self, doc_id: int, url: str, text: str) -> int | None:
        hits = [self.ids.get(doc_id), self.exact_urls.get(url) if url else None]
        if url:
            hits.append(next((i for i, g in self.globs if g.fullmatch(url)), None))
        found = [h for h in hits if h is not None]
        if found:
            return min(found)
        return next((i for i, p in self.patterns if p.search(text)), None)
