"""Dependency resolution the kinds share: what a reference to a Dataset, a TrainingRun or an
Evaluation resolves to (the Dataset's manifest, the run's last checkpoint or its checkpoint of a
step, the Evaluation's results.json), what the
referring resource waits for, or why it cannot be resolved; and where an empty output URI goes.
Pure: the caller passes the referenced objects (None when missing) and what it read of them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from capstan_api import files
from capstan_api import status as st
from capstan_operator.config import OperatorConfig


@dataclass
class Resolution:
    """A spec with its references to other resources resolved, or why it cannot be (yet)."""

    spec: Any = None
    """spec with every reference replaced by a URI (None unless resolved)."""
    waiting: str = ""
    """waiting says what the resource waits for (empty when nothing)."""
    failure: str = ""
    """failure says which dependency failed or which field cannot be resolved."""


@dataclass(frozen=True)
class Ref:
    """One reference resolved: a URI, or what to wait for, or why it fails."""

    uri: str = ""
    """uri the reference resolves to (empty unless resolved)."""
    waiting: str = ""
    """waiting names the dependency and its state, e.g. `Dataset web to be Ready (now Running)`."""
    failure: str = ""
    """failure names the field and the dependency's failure."""


def status_of(obj: dict | None) -> dict:
    return (obj or {}).get("status") or {}


def phase_of(obj: dict | None) -> str:
    return status_of(obj).get("phase") or st.Phase.PENDING


def _why(status: dict) -> str:
    return f": {status['message']}" if status.get("message") else ""


def last_checkpoint(field: str, name: str, run: dict | None) -> Ref:
    """A TrainingRun reference (`field` names it in messages) -> the run's last checkpoint."""
    status, phase = status_of(run), phase_of(run)
    uri = (status.get("lastCheckpoint") or {}).get("uri")
    if run is None:
        return Ref(waiting=f"TrainingRun {name} (not found)")
    if phase == st.Phase.FAILED:
        return Ref(failure=f"{field}: TrainingRun {name} failed{_why(status)}")
    if phase not in st.RUN_DONE:
        return Ref(waiting=f"TrainingRun {name} to succeed (now {phase})")
    if not uri:
        return Ref(failure=f"{field}: TrainingRun {name} has no checkpoint")
    return Ref(uri=uri)


def checkpoint_root(field: str, name: str, run: dict | None) -> Ref:
    """A TrainingRun reference to replay (`field` names it) -> its checkpoint root, once it has
    ended with a checkpoint (a replay reads every checkpoint it kept, not only the last)."""
    base = last_checkpoint(field, name, run)
    if not base.uri:
        return base
    root = status_of(run).get("outputUri") or base.uri.rstrip("/").rsplit("/", 1)[0]
    return Ref(uri=root)


def step_folder(run: dict | None, step: int) -> str:
    """The run's step folder of `step` when the run reports a checkpoint at or past `step`, so
    that its commit marker tells whether `step` is there; else "" (too early: nothing to read)."""
    status = status_of(run)
    root, last = status.get("outputUri"), (status.get("lastCheckpoint") or {}).get("step") or 0
    return files.step_folder(root, step) if root and last >= step else ""


def checkpoint_at_step(field: str, name: str, run: dict | None, step: int, committed: bool) -> Ref:
    """A TrainingRun reference with a step (`field` names the step in messages) -> the run's
    checkpoint of that step. `committed`: whether the caller found the commit marker of
    `step_folder(run, step)`. Waits while the run may still commit it; fails once it cannot."""
    status, phase = status_of(run), phase_of(run)
    total = status.get("totalSteps") or ((run or {}).get("spec") or {}).get("optimizer", {}).get("totalSteps")
    last = (status.get("lastCheckpoint") or {}).get("step") or 0
    if run is None:
        return Ref(waiting=f"TrainingRun {name} (not found)")
    if total and step > total:
        return Ref(failure=f"{field}: step {step} is past TrainingRun {name}'s last step ({total})")
    if committed:
        return Ref(uri=step_folder(run, step))
    never = f"{field}: TrainingRun {name} has no checkpoint of step {step}"
    if last >= step:  # the run is past it and never goes back
        return Ref(
            failure=f"{never} (its last is step {last}): not a checkpoint step (checkpoint.intervalSteps) "
            "or removed since (checkpoint.keepLast)"
        )
    if phase == st.Phase.FAILED:
        return Ref(failure=f"{never}: it failed at step {status.get('step') or 0}{_why(status)}")
    if phase in st.RUN_DONE:
        return Ref(failure=f"{never}: it ended ({phase}) with its last checkpoint at step {last}")
    now = f"now {phase} at step {status.get('step') or 0}"
    return Ref(waiting=f"TrainingRun {name} to commit its checkpoint of step {step} ({now})")


def manifest(field: str, name: str, dataset: dict | None) -> Ref:
    """A Dataset reference (`field` names it in messages) -> the Dataset's manifest URI."""
    status, phase = status_of(dataset), phase_of(dataset)
    if dataset is None:
        return Ref(waiting=f"Dataset {name} (not found)")
    if phase == st.Phase.FAILED:
        return Ref(failure=f"{field}: Dataset {name} failed{_why(status)}")
    if phase != st.Phase.READY or not status.get("manifestUri"):
        return Ref(waiting=f"Dataset {name} to be Ready (now {phase})")
    return Ref(uri=status["manifestUri"])


def results(field: str, name: str, evaluation: dict | None) -> Ref:
    """An Evaluation reference (`field` names it in messages) -> its results.json, once it has
    succeeded (gates passed or not: its figures are there either way)."""
    status, phase = status_of(evaluation), phase_of(evaluation)
    if evaluation is None:
        return Ref(waiting=f"Evaluation {name} (not found)")
    if phase == st.Phase.FAILED:
        return Ref(failure=f"{field}: Evaluation {name} failed{_why(status)}")
    if phase != st.Phase.SUCCEEDED:
        return Ref(waiting=f"Evaluation {name} to succeed (now {phase})")
    # status.resultsUri is always written on success; an older status may lack it.
    out = (evaluation.get("spec") or {}).get("outputUri") or ""
    uri = status.get("resultsUri") or (files.join(out, files.RESULTS_FILE) if out else "")
    return Ref(uri=uri) if uri else Ref(failure=f"{field}: Evaluation {name} names no results.json")


def unresolved(*refs: Ref | None) -> Resolution | None:
    """The first failure among `refs`, else what they wait for, else None (all resolved)."""
    given = [r for r in refs if r is not None]
    failure = next((r.failure for r in given if r.failure), "")
    if failure:
        return Resolution(failure=failure)
    waits = [r.waiting for r in given if r.waiting]
    return Resolution(waiting="waiting for " + ", ".join(waits)) if waits else None


def artifact_uri(cfg: OperatorConfig, field: str, what: str, namespace: str, name: str, leaf: str) -> Ref:
    """Where an empty output URI (`field`) goes: `<artifact root>/<namespace>/<name>/<leaf>`, or a
    failure naming the field when the operator has no artifact location."""
    if not cfg.artifact_uri:
        return Ref(
            failure=f"{field}: empty, and the operator has no artifact location "
            f"(CAPSTAN_ARTIFACT_URI) to put {what} under"
        )
    return Ref(uri=f"{cfg.artifact_uri.rstrip('/')}/{namespace}/{name}/{leaf}")
