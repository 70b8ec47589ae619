"""The run's statistics, kept in the manifest and shown in the datasheet: counts per cleaning
step, per licence, per filter rule and per PII type, summed over the stages' markers."""

from __future__ import annotations

from collections import Counter

from capstan_trainer import shards


def manifest_stats(
    counts: Counter,
    n: int,
    exact: int,
    near: int,
    pii: Counter,
    licences: Counter,
    splits: dict[str, shards.SplitInfo],
    augmentation: Counter | None = None,
    exclusion_labels: list[str] | None = None,
    copies: int = 0,
) -> dict:
    """`counts` are the map workers' summed counters; `n` documents reached deduplication, `exact`
    and `near` of them were removed there; `pii` and `licences` count the output's documents;
    `augmentation` the counterfactual copies the tokenize workers added (drawn, copies, swaps);
    `exclusion_labels` name the exclusion rules (`exclusion:<i>` counters), which run first;
    `copies` were dropped at dedup as duplicates of a removed document."""
    c = counts
    records, parsed = c["records"], c["records"] - c["malformed"]
    labels = exclusion_labels or []
    by_exclusion = {label: c[f"exclusion:{i}"] for i, label in enumerate(labels)}
    after_exclusions = parsed - sum(by_exclusion.values())
    excluded = {k.split(":", 1)[1]: v for k, v in sorted(c.items()) if k.startswith("licence:") and v}
    after_licence = after_exclusions - sum(excluded.values())
    by_rule = {k.split(":", 1)[1]: v for k, v in sorted(c.items()) if k.startswith("rule:") and v}
    by_filter: Counter = Counter()
    for rule, v in by_rule.items():
        by_filter[rule.split(".", 1)[0]] += v
    kept = n - exact - near - copies
    toxic = {k.split(".", 1)[1]: v for k, v in by_rule.items() if k.startswith("toxicity.")}
    aug = {k: (augmentation or Counter())[k] for k in ("drawn", "copies", "swaps")}
    stages = [
        {"stage": "read", "in": records, "out": parsed},
        {"stage": "licence", "in": after_exclusions, "out": after_licence},
        {"stage": "filters", "in": after_licence, "out": n + sum(toxic.values())},
        {"stage": "toxicity", "in": n + sum(toxic.values()), "out": n},
        {"stage": "exactDedup", "in": n, "out": n - exact},
        {"stage": "nearDedup", "in": n - exact, "out": kept + copies},
    ]
    if labels:  # only then: a Dataset without rules keeps the steps it always showed
        stages.insert(1, {"stage": "exclusions", "in": parsed, "out": after_exclusions})
        stages.append({"stage": "copiesOfRemoved", "in": kept + copies, "out": kept})
    stages.append({"stage": "augment", "in": kept, "out": kept + aug["copies"]})
    return {
        "files": c["files"],
        "bytes": c["bytes"],
        "records": records,
        "malformed": c["malformed"],
        "normalised": c["normalised"],
        "licence": {"excludedByLicence": excluded, "keptByLicence": dict(sorted(licences.items()))},
        "filters": {
            "removed": after_licence - n,
            "byFilter": dict(sorted(by_filter.items())),
            "byRule": by_rule,
        },
        "exactDuplicates": exact,
        "nearDuplicates": near,
        "pii": dict(sorted(pii.items())),
        "toxicity": {"removed": sum(toxic.values()), "byCategory": toxic},
        "augmentation": aug,
        "exclusions": {"removed": parsed - after_exclusions, "byRule": by_exclusion, "copies": copies},
        "stages": stages,
        "documents": {"train": splits["train"].documents, "validation": splits["validation"].documents},
        "tokens": {name: sp.tokens for name, sp in splits.items()},
        "shards": sum(len(sp.shards) for sp in splits.values()),
    }
