"""Where the output's tokens came from: tokens per spec source and per web domain (documents with a
URL), the figures the EU AI Act's public summary of training content asks for (sizes by source
type; for scraped data, the top domains by share of content).

Each tokenize part counts its own documents; finish sums the parts into the manifest's
`stats.sources` and `stats.domains`. A part keeps its PART_DOMAINS largest domains and finish the
TOP_DOMAINS largest of the sum, so a long tail of tiny domains costs no memory; `domainTokens`
keeps the exact total of tokens with a URL, so shares stay true.
"""

from __future__ import annotations

import re
from collections import Counter
from urllib.parse import urlsplit

from capstan_api.dataset import DatasetSpec
from capstan_api.drift import PromptStats

PART_DOMAINS = 10_000
TOP_DOMAINS = 100
HOST = re.compile(r"[a-z0-9.-]+")


def domain(url: str) -> str:
    """The host of `url` without a leading "www." ("" when it has none that looks like a domain)."""
    try:
        host = (urlsplit(url if "//" in url else "//" + url).hostname or "").lower()
    except ValueError:  # e.g. an unbalanced "[" in the netloc
        return ""
    if "." not in host or not HOST.fullmatch(host):
        return ""
    return host.removeprefix("www.")


class ContentSizes:
    """One tokenize part's tokens per source index and per domain."""

    def __init__(self) -> None:
        self.sources: Counter = Counter()
        self.domains: Counter = Counter()
        self.with_url = 0

    def add(self, doc: dict, tokens: int) -> None:
        # Map parts written before sources were recorded carry no "source": counted as -1.
        self.sources[str(doc.get("source", -1))] += tokens
        host = domain(doc["url"]) if doc.get("url") else ""
        if host:
            self.domains[host] += tokens
            self.with_url += tokens

    def to_marker(self) -> dict:
        return {
            "sourceTokens": dict(self.sources),
            "domainTokens": dict(self.domains.most_common(PART_DOMAINS)),
            "urlTokens": self.with_url,
        }


def manifest_content(spec: DatasetSpec, parts: list[dict]) -> dict:
    """stats.sources (one entry per spec source, with its type and output tokens),
    stats.domains ({"tokensWithUrl", "top": {domain: tokens}}) and stats.promptStats (the
    validation split's drift statistics) from the tokenize markers."""
    tokens: Counter = sum((Counter(p.get("sourceTokens", {})) for p in parts), Counter())
    domains: Counter = sum((Counter(p.get("domainTokens", {})) for p in parts), Counter())
    sources = [
        {
            "uri": s.uri,
            "type": s.provenance.type,
            "licence": s.licence,
            "url": s.provenance.url,
            "collected": s.provenance.collected,
            "description": s.provenance.description,
            "tokens": tokens.get(str(i), 0),
        }
        for i, s in enumerate(spec.sources)
    ]
    validation = PromptStats()
    for p in parts:
        validation = validation.merged(PromptStats.model_validate(p.get("promptStats") or {}))
    return {
        "promptStats": validation.to_wire(),
        "sources": sources,
        "domains": {
            "tokensWithUrl": sum(p.get("urlTokens", 0) for p in parts),
            "top": dict(domains.most_common(TOP_DOMAINS)),
        },
    }
