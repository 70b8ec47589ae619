"""Drift of a Deployment's live prompts from its model's training data (capstan_api.drift has
the statistics and the score): the live side from the stable revision's pods' capstan_drift_*
metrics (cumulative since each pod started: the score covers the revision's traffic so far),
the reference from the model's capstan.json (its datasets' manifests' stats.promptStats and its
validation loss)."""

from __future__ import annotations

import urllib.error
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from capstan_api import files
from capstan_api.deployment import Drift
from capstan_api.drift import LENGTH_BUCKETS, DriftScore, PromptStats
from capstan_operator import objectstore
from capstan_operator.config import OperatorConfig

PREFIX = "capstan_drift_"
SCRAPE_TIMEOUT_S = 3.0


def parse(text: str) -> tuple[PromptStats, float, float]:
    """(the live statistics without surprisal, summed surprisal in nats, tokens it covers) of
    one pod's /metrics; `combine` turns the sums into the mean."""
    out = PromptStats()
    cumulative: dict[float, float] = {}
    sums = {"surprisal_nats": 0.0, "surprisal_tokens": 0.0}
    for fam in text_string_to_metric_families(text):
        if not fam.name.startswith(PREFIX):
            continue
        key = fam.name.removeprefix(PREFIX)
        for s in fam.samples:
            if key == "prompt_length_tokens" and s.name.endswith("_bucket"):
                cumulative[float(s.labels["le"])] = s.value
            elif key == "prompt_length_tokens" and s.name.endswith("_count"):
                out.texts = int(s.value)
            elif s.name.endswith("_total"):
                if key == "prompt_tokens":
                    out.tokens = int(s.value)
                elif key == "byte_fallback_tokens":
                    out.byte_fallback_tokens = int(s.value)
                elif key in sums:
                    sums[key] = s.value
    below = 0.0
    for i, bound in enumerate(LENGTH_BUCKETS):  # cumulative "le" counts -> per bucket
        c = cumulative.get(bound, below)
        out.length_counts[i] = int(c - below)
        below = c
    return out, sums["surprisal_nats"], sums["surprisal_tokens"]


def combine(pods: list[tuple[PromptStats, float, float]]) -> PromptStats:
    """The pods' statistics added up; surprisal is the mean over every scored token."""
    total = PromptStats()
    nats = scored = 0.0
    for stats, n, t in pods:
        total = total.merged(stats)
        nats, scored = nats + n, scored + t
    total.surprisal = nats / scored if scored else None
    return total


def scrape(pod_ips: list[str], port: int) -> tuple[PromptStats, list[str]]:
    found, unreadable = [], []
    for ip in pod_ips:
        try:
            with urllib.request.urlopen(f"http://{ip}:{port}/metrics", timeout=SCRAPE_TIMEOUT_S) as resp:
                found.append(parse(resp.read().decode()))
        except (urllib.error.URLError, OSError, ValueError) as exc:
            unreadable.append(f"{ip}: {exc}")
    return combine(found), unreadable


def reference(model_uri: str, cfg: OperatorConfig) -> tuple[PromptStats | None, str]:
    """The training data's statistics for the model at `model_uri` (a checkpoint or an export,
    both carry capstan.json), or None and why not."""
    meta = objectstore.read_json(files.join(model_uri, "capstan.json"), cfg, "spec.model")
    if meta is None:
        return None, f"{model_uri}/capstan.json is missing"
    total = PromptStats()
    for ds in meta.get("dataset") or []:
        uri = ds.get("uri", "")
        uri = uri if uri.endswith(".json") else files.join(uri, files.MANIFEST_FILE)
        manifest = objectstore.read_json(uri, cfg, "spec.model")
        found = ((manifest or {}).get("stats") or {}).get("promptStats")
        if not found:
            return None, f"{ds.get('uri')} records no promptStats (prepared before drift statistics)"
        total = total.merged(PromptStats.model_validate(found))
    if not total.texts:
        return None, f"{model_uri}/capstan.json names no dataset with validation statistics"
    total.surprisal = (meta.get("validation") or {}).get("evalLoss")
    return total, ""


def judge(result: DriftScore, spec: Drift) -> tuple[str, str, str]:
    """The Drift condition (status, reason, message) for a score."""
    parts = f"psi {result.psi}, surprisal change {result.surprisal_change}, byte-fallback change {result.byte_fallback_change}"
    figures = f"drift score {result.score} ({parts}) over {result.prompts} prompt(s)"
    if result.prompts < spec.min_prompts:
        return "Unknown", "TooFewPrompts", f"{figures}; waiting for at least {spec.min_prompts}"
    if result.score > spec.threshold:
        return "True", "PromptsDrifted", f"{figures}: above the threshold {spec.threshold}"
    return "False", "WithinThreshold", f"{figures}: within the threshold {spec.threshold}"
