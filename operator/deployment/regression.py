"""A served model that keeps being checked: Evaluations with model.deploymentRef naming this
Deployment re-evaluate its stable model on their schedule. When the newest run of one failed its
gates on the model served now, the Deployment is Degraded; with the Evaluation's
onRegression: rollback it returns to the last revision that served another model and was
promoted. Pure: the caller lists the Evaluations."""

from __future__ import annotations

from dataclasses import dataclass

from capstan_operator import refs


@dataclass(frozen=True)
class Regression:
    evaluation: str
    failed_gates: list[str]
    time: str
    rollback: bool

    def message(self, uri: str) -> str:
        gates = ", ".join(self.failed_gates) or "its gates"
        return f"Evaluation {self.evaluation} of {uri} at {self.time} failed {gates}"


def find(deployment: str, served_uri: str | None, evaluations: list[dict]) -> Regression | None:
    """The newest failed run, on `served_uri`, of an Evaluation whose deploymentRef names
    `deployment`; None when every such Evaluation's newest run passed or was of another model."""
    found = []
    for ev in evaluations:
        spec = ev.get("spec") or {}
        if ((spec.get("model") or {}).get("deploymentRef") or {}).get("name") != deployment:
            continue
        history = refs.status_of(ev).get("history") or []
        last = history[-1] if history else None
        if last and last.get("passed") is False and last.get("modelUri") == served_uri:
            rollback = spec.get("onRegression") == "rollback"
            found.append(
                Regression(ev["metadata"]["name"], last.get("failedGates") or [], last["time"], rollback)
            )
    return max(found, key=lambda r: (r.time, r.evaluation), default=None)


def fallback(history: list[dict], bad_uri: str) -> str | None:
    """The model of the newest Promoted revision that served something other than `bad_uri`
    and whose model was not rolled back since."""
    for rec in reversed(history):
        uri = rec["modelUri"]
        if rec["outcome"] != "Promoted" or uri == bad_uri:
            continue
        latest = next(r for r in reversed(history) if r["modelUri"] == uri)
        if latest["outcome"] != "RolledBack":
            return uri
    return None
