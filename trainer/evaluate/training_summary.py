"""The training-data summary a regulator asks for, in the shape of the EU AI Act's "Template for the
Public Summary of Training Content for general-purpose AI models" (AI Office, July 2025; Article
53(1)(d)): 1. general information (model, modalities, training data size), 2. list of data
sources (public datasets, licensed private datasets, crawled and scraped data with its top
domains, user data, synthetic data, other), 3. data processing (licences and reservations of
rights, illegal and personal content, removals).

Filled only from what Capstan recorded: the checkpoint's capstan.json and each training Dataset's
manifest statistics (trainer/prepare/stats.py, trainer/prepare/content.py). A figure that was not
recorded is reported as not recorded, never guessed. Written as JSON and markdown next to the
model card.
"""

from __future__ import annotations

from collections import Counter

from capstan_trainer.shards import Manifest, read_manifest

TEMPLATE = (
    "EU AI Act Article 53(1)(d): Template for the Public Summary of Training Content for "
    "general-purpose AI models (AI Office, July 2025)"
)
SOURCE_TYPES = {
    "public": "2.1 Publicly available datasets",
    "licensed": "2.2 Private non-publicly available datasets obtained from third parties",
    "scraped": "2.3 Data crawled and scraped from online sources",
    "user": "2.4 User data",
    "synthetic": "2.5 Synthetic data",
    "other": "2.6 Other sources of data",
}
TOP_DOMAINS_SHOWN = 10


def size_range(tokens: int) -> str:
    """The template's size bins for text."""
    if tokens < 10**9:
        return "Less than 1 billion tokens"
    return "1 billion to 10 trillion tokens" if tokens <= 10**13 else "More than 10 trillion tokens"


def read_manifests(meta: dict) -> list[tuple[dict, Manifest | None]]:
    """(capstan.json's dataset entry, its manifest or None when unreadable) per training dataset."""
    out = []
    for ds in meta.get("dataset") or []:
        try:
            out.append((ds, read_manifest(ds.get("uri", ""))))
        except (OSError, ValueError):
            out.append((ds, None))
    return out


def build(meta: dict, datasets: list[tuple[dict, Manifest | None]]) -> dict:
    """The summary as a JSON-ready dict."""
    return {
        "template": TEMPLATE,
        "generalInformation": general(meta, datasets),
        "dataSources": sources(datasets),
        "dataProcessing": processing(datasets),
    }


def general(meta: dict, datasets: list[tuple[dict, Manifest | None]]) -> dict:
    train = sum(m.splits["train"].tokens for _, m in datasets if m and "train" in m.splits)
    collected = [
        s["collected"] for _, m in datasets if m for s in m.stats.get("sources", []) if s.get("collected")
    ]
    return {
        "model": {
            "trainingRun": meta.get("trainingRun"),
            "checkpoint": meta.get("checkpoint") or meta.get("uri"),
            "step": meta.get("step"),
            "basedOn": meta.get("init"),
        },
        "modalities": ["text"],
        "trainingDataSize": {"text": {"tokens": train, "range": size_range(train)}},
        "tokensSeenInTraining": (meta.get("compute") or {}).get("tokensSeen"),
        "latestDataCollection": max(collected) if collected else None,
        "unreadableDatasets": [d.get("uri") for d, m in datasets if m is None],
    }


def sources(datasets: list[tuple[dict, Manifest | None]]) -> dict:
    """Each category of the template with its sources (tokens in the output); scraped data with
    the top domains by share of tokens that had a URL."""
    out: dict = {t: {"section": title, "tokens": 0, "sources": []} for t, title in SOURCE_TYPES.items()}
    domains: Counter = Counter()
    with_url = 0
    for ds, m in datasets:
        if m is None:
            continue
        for s in m.stats.get("sources", []):
            entry = out[s.get("type", "other")]
            entry["tokens"] += s.get("tokens", 0)
            entry["sources"].append({"dataset": ds.get("uri"), **s})
        recorded = m.stats.get("domains") or {}
        domains.update(recorded.get("top", {}))
        with_url += recorded.get("tokensWithUrl", 0)
    out["scraped"]["topDomains"] = [
        {"domain": d, "tokens": n, "share": round(n / with_url, 4)}
        for d, n in domains.most_common(TOP_DOMAINS_SHOWN)
    ]
    out["scraped"]["tokensWithUrl"] = with_url
    return out


def processing(datasets: list[tuple[dict, Manifest | None]]) -> dict:
    kept: Counter = Counter()
    excluded: Counter = Counter()
    pii: Counter = Counter()
    removed: Counter = Counter()
    for _, m in datasets:
        if m is None:
            continue
        s = m.stats
        lic = s.get("licence") or {}
        kept.update(lic.get("keptByLicence", {}))
        excluded.update(lic.get("excludedByLicence", {}))
        pii.update(s.get("pii", {}))
        removed.update(
            {
                "malformed": s.get("malformed", 0),
                "qualityFilters": (s.get("filters") or {}).get("removed", 0),
                "exactDuplicates": s.get("exactDuplicates", 0),
                "nearDuplicates": s.get("nearDuplicates", 0),
            }
        )
    return {
        "licences": {"documentsKept": dict(kept), "documentsExcluded": dict(excluded)},
        "reservationOfRights": "Each source declares an SPDX licence (documents may override it); "
        "documents whose licence the operator's policy does not allow are excluded before any "
        "processing. Machine-readable opt-outs (robots.txt, TDMRep) are not checked by Capstan.",
        "personalData": {"redactions": dict(pii), "method": "typed placeholders replace detected PII"},
        "removedDocuments": dict(removed),
    }


# ---- markdown -------------------------------------------------------------------------------


def render(summary: dict) -> str:
    g, src, p = summary["generalInformation"], summary["dataSources"], summary["dataProcessing"]
    size = g["trainingDataSize"]["text"]
    lines = [
        "# Public summary of training content",
        f"In the shape of the {summary['template']}.",
        "",
        "## 1. General information",
        f"- Model: TrainingRun `{g['model']['trainingRun']}`, step {g['model']['step']}, "
        f"checkpoint `{g['model']['checkpoint']}`"
        + (f", based on `{g['model']['basedOn']}`." if g["model"]["basedOn"] else "."),
        "- Modalities: text.",
        f"- Training data size (text): {size['tokens']} tokens ({size['range']}).",
        f"- Tokens seen in training: {_or_unrecorded(g['tokensSeenInTraining'])}.",
        f"- Latest data collection: {_or_unrecorded(g['latestDataCollection'])}.",
    ]
    if g["unreadableDatasets"]:
        lines.append(f"- Unreadable dataset manifests: {', '.join(g['unreadableDatasets'])}.")
    lines += ["", "## 2. List of data sources"]
    for entry in src.values():
        lines += ["", f"### {entry['section']}"]
        if not entry["sources"]:
            lines.append("None.")
            continue
        lines.append(f"{entry['tokens']} tokens in the training data.")
        lines += [
            f"- `{s['uri']}` ({s['licence']}; {s['tokens']} tokens; {s.get('description') or 'no description'})"
            for s in entry["sources"]
        ]
    top = src["scraped"]["topDomains"]
    if top:
        lines += ["", f"Top domains by share of the {src['scraped']['tokensWithUrl']} tokens with a URL:", ""]
        lines.append(
            _table(["domain", "tokens", "share"], [[d["domain"], d["tokens"], d["share"]] for d in top])
        )
    lic = p["licences"]
    lines += [
        "",
        "## 3. Data processing aspects",
        "",
        "### 3.1 Respect of reservation of rights",
        p["reservationOfRights"],
        "",
        _table(["licence", "documents kept"], sorted(lic["documentsKept"].items())),
        "",
        _table(["licence", "documents excluded"], sorted(lic["documentsExcluded"].items()))
        if lic["documentsExcluded"]
        else "No document was excluded for its licence.",
        "",
        "### 3.2 Removal of illegal and personal content",
        f"PII: {p['personalData']['method']}.",
        "",
        _table(["PII type", "redactions"], sorted(p["personalData"]["redactions"].items()))
        if p["personalData"]["redactions"]
        else "No PII was found.",
        "",
        "### 3.3 Other information: documents removed in preparation",
        "",
        _table(["reason", "documents"], sorted(p["removedDocuments"].items())),
    ]
    return "\n".join(lines) + "\n"


def _or_unrecorded(v) -> str:
    return "not recorded" if v is None else str(v)


def _table(header: list[str], rows: list) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)
