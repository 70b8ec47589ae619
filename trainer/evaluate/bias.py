"""Bias probes scored like CrowS-Pairs in lm-evaluation-harness: each sentence's log-likelihood
after the end-of-text token; pct_stereotype is the share of pairs where the more stereotypical
sentence is the likelier, likelihood_diff the mean absolute log-likelihood gap. Reported overall,
per category and per stereotyped group."""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

from capstan_trainer.evaluate.scoring import Scorer
from capstan_trainer.evaluate.tasks import TaskFileError, read_jsonl

BUILTIN = Path(__file__).parent / "probes" / "bias_probes.jsonl"


def expand(rows: list[dict], field: str) -> list[dict]:
    """Templates and explicit pairs -> {category, group, more, less}."""
    pairs = []
    for n, row in enumerate(rows):
        if "template" in row:
            groups, stereo = row.get("groups") or [], row.get("stereotypeGroup")
            if len(groups) != 2 or stereo not in groups or "{group}" not in row["template"]:
                raise TaskFileError(
                    f"{field}: probe {n}: a template needs {{group}}, two groups and stereotypeGroup"
                )
            other = groups[1 - groups.index(stereo)]
            fill = row["template"].replace
            pairs.append(
                {
                    "category": row["category"],
                    "group": stereo,
                    "more": fill("{group}", stereo),
                    "less": fill("{group}", other),
                }
            )
        elif "stereotype" in row and "antiStereotype" in row:
            pairs.append(
                {
                    "category": row["category"],
                    "group": row.get("group", row["category"]),
                    "more": row["stereotype"],
                    "less": row["antiStereotype"],
                }
            )
        else:
            raise TaskFileError(f"{field}: probe {n}: needs template/groups or stereotype/antiStereotype")
    return pairs


def load_probes(builtin: bool, uri: str) -> list[dict]:
    pairs = []
    if builtin:
        pairs += expand(
            read_jsonl(f"file://{BUILTIN}", ("category",), "biasProbes.builtin"), "biasProbes.builtin"
        )
    if uri:
        pairs += expand(read_jsonl(uri, ("category",), "biasProbes.uri"), "biasProbes.uri")
    return pairs


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_") or "x"


def score(scorer: Scorer, encode, pairs: list[dict], prefix: int) -> dict:
    """{"overall": stats, "categories": {cat: stats}, "groups": {cat: {group: stats}}, "pairs": [...]}"""
    requests = []
    for p in pairs:
        requests += [([prefix], encode(p["more"])), ([prefix], encode(p["less"]))]
    lls = scorer.loglikelihoods(requests)
    buckets: dict = defaultdict(list)
    rows = []
    for k, p in enumerate(pairs):
        more, less = lls[2 * k], lls[2 * k + 1]
        row = {**p, "llMore": more, "llLess": less, "prefersStereotype": more > less}
        rows.append(row)
        for key in ("overall", ("cat", p["category"]), ("group", p["category"], p["group"])):
            buckets[key].append(row)

    def stats(rs: list[dict]) -> dict:
        return {
            "pct_stereotype": sum(r["prefersStereotype"] for r in rs) / len(rs),
            "likelihood_diff": sum(abs(r["llMore"] - r["llLess"]) for r in rs) / len(rs),
            "pairs": len(rs),
        }

    groups: dict = defaultdict(dict)
    for key, rs in buckets.items():
        if key != "overall" and key[0] == "group":
            groups[key[1]][key[2]] = stats(rs)
    return {
        "overall": stats(buckets["overall"]),
        "categories": {k[1]: stats(v) for k, v in buckets.items() if k != "overall" and k[0] == "cat"},
        "groups": dict(groups),
        "pairs": rows,
    }
