"""Which model a Deployment should serve: a passing Evaluation's model, a TrainingRun's last
checkpoint, the newest passing Evaluation of a TrainingRun (followPassingEvaluations), or a URI.
Pure: the caller passes the referenced objects (None when missing)."""

from __future__ import annotations

from dataclasses import dataclass

from capstan_api import files
from capstan_api.deployment import DeploymentSpec
from capstan_api.status import Phase
from capstan_operator import refs


@dataclass
class ModelChoice:
    uri: str = ""
    """uri of the model to serve (empty unless chosen)."""
    source: str = ""
    """source says where the URI came from, for messages and the rollout history."""
    waiting: str = ""
    """waiting says what the Deployment waits for."""
    blocked: str = ""
    """blocked says why the named model must not be served (its Evaluation failed a gate)."""
    failure: str = ""
    """failure says which dependency failed."""


def _passing(ev: dict) -> bool:
    st = refs.status_of(ev)
    return st.get("phase") == Phase.SUCCEEDED and st.get("passed") is True and bool(st.get("modelUri"))


def _from_evaluation(name: str, ev: dict | None) -> ModelChoice:
    st, phase = refs.status_of(ev), refs.phase_of(ev)
    if ev is None:
        return ModelChoice(waiting=f"waiting for Evaluation {name} (not found)")
    if phase == Phase.FAILED:
        return ModelChoice(
            failure=f"spec.model.evaluationRef: Evaluation {name} failed: {st.get('message', '')}"
        )
    if phase != Phase.SUCCEEDED:
        return ModelChoice(waiting=f"waiting for Evaluation {name} to pass (now {phase})")
    if not _passing(ev):
        return ModelChoice(
            blocked=f"Evaluation {name} did not pass its gates ({st.get('message', '')}); its model is not served"
        )
    return ModelChoice(uri=st["modelUri"], source=f"Evaluation {name}")


def _from_run(name: str, run: dict | None) -> ModelChoice:
    ref = refs.last_checkpoint("spec.model.trainingRunRef", name, run)
    if ref.waiting:
        return ModelChoice(waiting=f"waiting for {ref.waiting}")
    if ref.failure:
        return ModelChoice(failure=ref.failure)
    return ModelChoice(uri=ref.uri, source=f"TrainingRun {name}")


def newest_passing(run_name: str, evaluations: list[dict]) -> dict | None:
    """The passing Evaluation of TrainingRun `run_name` with the newest model: the latest step,
    then the latest completion, then the name.

    Step before completion time: evaluating an older checkpoint again (other gates, a changed
    spec) must not roll the service back to older weights; to serve an older checkpoint on
    purpose, name its Evaluation (model.evaluationRef)."""

    def newest(ev: dict) -> tuple[int, str, str]:
        status = refs.status_of(ev)
        step = files.step_of(status["modelUri"])
        return (step or 0, status.get("completionTime") or "", ev["metadata"]["name"])

    ours = [
        ev
        for ev in evaluations
        if ((ev.get("spec") or {}).get("model") or {}).get("trainingRunRef", {}).get("name") == run_name
        and _passing(ev)
    ]
    return max(ours, key=newest, default=None)


def choose(
    spec: DeploymentSpec, evaluation: dict | None, run: dict | None, evaluations: list[dict]
) -> ModelChoice:
    """`evaluation` and `run` are the objects spec.model names; `evaluations` are the namespace's
    Evaluations (used with followPassingEvaluations)."""
    m = spec.model
    if m.uri:
        return ModelChoice(uri=m.uri, source="spec.model.uri")
    if m.evaluation_ref is not None:
        return _from_evaluation(m.evaluation_ref.name, evaluation)
    assert m.training_run_ref is not None  # the spec's own validation guarantees one of the three
    if not m.follow_passing_evaluations:
        return _from_run(m.training_run_ref.name, run)
    ev = newest_passing(m.training_run_ref.name, evaluations)
    if ev is None:
        return ModelChoice(
            waiting=f"waiting for a passing Evaluation of TrainingRun {m.training_run_ref.name}"
        )
    return ModelChoice(uri=refs.status_of(ev)["modelUri"], source=f"Evaluation {ev['metadata']['name']}")
