"""Level-based reconcile of an Evaluation: finished -> stop; references not there yet (a run to
finish, a Dataset to be Ready, a baseline Evaluation to succeed) -> Waiting (naming them); a dependency failed -> Failed with its reason; Job failed -> Failed with the pod's
exit code, reason and log tail; Job complete -> Succeeded with status.json's metrics and gates;
otherwise create what is missing and report Running."""

from __future__ import annotations

from datetime import UTC, datetime

import yaml

from capstan_api import files
from capstan_api import status as st
from capstan_api.common import now_rfc3339
from capstan_api.evaluation import EvaluationSpec
from capstan_api.status import Phase
from capstan_operator import children, identity, kube, objectstore, refs
from capstan_operator.config import OperatorConfig
from capstan_operator.evaluation import build, resolve, schedule
from capstan_operator.jobs import blocked, job_condition, job_failure, start_overdue
from capstan_operator.status import Outcome, StatusDraft, read_spec

POLL_SECONDS = 5.0
WAIT_SECONDS = 10.0


def _fail(draft: StatusDraft, reason: str, msg: str) -> Outcome:
    return draft.clear(st.WAITING).fail(reason, msg, st.READY).outcome()


def _gate_summary(status: dict) -> str:
    failed = [g for g in status["gates"] if not g["passed"]]
    if not failed:
        return f"all {len(status['gates'])} gate(s) passed"

    def bound(g: dict) -> str:
        parts = [f">= {g['min']}" if "min" in g else "", f"<= {g['max']}" if "max" in g else ""]
        return " and ".join(p for p in parts if p)

    return "failed gate(s): " + "; ".join(
        f"{g['metric']} = {g.get('value')} (needs {bound(g)})" for g in failed
    )


def reconcile(body: dict, cfg: OperatorConfig) -> Outcome:
    draft = StatusDraft(body)
    meta = body["metadata"]
    ns, name = meta["namespace"], meta["name"]
    # ---- finished: nothing more to do for this generation, until the schedule's next run
    if draft.finished(Phase.SUCCEEDED, Phase.FAILED):
        return _next_run(draft, body)
    spec, problem = read_spec(body, EvaluationSpec)
    if problem:
        return _fail(draft, "InvalidSpec", problem)
    # ---- dependencies
    job_name = build.job_name(name)
    job = kube.get("batch/v1", "Job", ns, job_name)
    if job is not None and job["metadata"].get("deletionTimestamp"):
        # Being deleted (a spec change or the previous scheduled run): applying now would patch
        # the old Job, and its old outcome would be read as the new run's.
        return draft.outcome(1.0)
    notes = (job or {}).get("metadata", {}).get("annotations") or {}
    built_for = notes.get(build.ANNOTATION_GENERATION)
    scheduled = draft.old.get("lastScheduleTime") or ""
    if (
        job is not None
        and built_for == str(draft.generation)
        and notes.get(build.ANNOTATION_SCHEDULED, "") != scheduled
    ):
        # The previous scheduled run's Job, still being deleted: never read it as this run's.
        kube.delete("batch/v1", "Job", ns, job_name)
        return draft.outcome(1.0)
    if job is not None and built_for != str(draft.generation):
        # The spec changed since this Job started: evaluate the new spec (never mix results).
        kube.delete("batch/v1", "Job", ns, job_name)
        msg = f"spec generation {draft.generation} differs from the Job's ({built_for}); evaluating again"
        draft.event("Normal", "SpecChanged", msg)
        draft.set(passed=None, completionTime=None)
        draft.clear(st.PASSED, st.FAILED)
        return draft.phase(Phase.PENDING, msg, "SpecChanged").outcome(1.0)
    if job is None:
        run_ref, ds_ref = spec.model.training_run_ref, spec.dataset_ref
        run = kube.get_custom("trainingruns", ns, run_ref.name) if run_ref else None
        dataset = kube.get_custom("datasets", ns, ds_ref.name) if ds_ref else None
        dep_ref = spec.model.deployment_ref
        served = kube.get_custom("deployments", ns, dep_ref.name) if dep_ref else None
        base_ref = spec.baseline_ref
        baseline = kube.get_custom("evaluations", ns, base_ref.name) if base_ref else None
        committed = _step_committed(spec, run, cfg)
        res = resolve.resolve(ns, name, spec, run, dataset, cfg, committed, served, baseline)
        if res.failure:
            return _fail(draft, "DependencyFailed", res.failure)
        if res.waiting:
            draft.condition(st.WAITING, "True", "DependencyNotReady", res.waiting)
            return draft.phase(Phase.WAITING, res.waiting, "Waiting").outcome(WAIT_SECONDS)
        # ---- create what is missing (create-or-patch: idempotent)
        identity.ensure_service_account(body, cfg)
        for child in build.build(body, res.spec, cfg, scheduled):
            kube.apply(child)
        draft.event("Normal", "Created", f"Job {job_name} evaluating {res.spec.model.uri}")
        draft.set(modelUri=res.spec.model.uri, startTime=now_rfc3339())
        job = {}
    draft.clear(st.WAITING)
    # ---- the Job's outcome
    if job_condition(job, "Failed"):
        msg = job_failure(job, ns, job_name)
        return _fail(draft, "EvaluationFailed", msg)
    if job_condition(job, "Complete"):
        return _complete(draft, job, cfg)
    stuck = blocked(ns, job_name)
    if stuck and start_overdue(job, spec.start_deadline_seconds):
        # Retrying would pull the same image or miss the same Secret: fail, and free the node.
        kube.delete("batch/v1", "Job", ns, job_name, propagation="Foreground")
        limit = spec.start_deadline_seconds
        msg = f"pod did not start within startDeadlineSeconds ({limit} s): {stuck[1]}"
        return _fail(draft, stuck[0], msg)
    if stuck:  # named in status: a pod that cannot start is not "Running"
        draft.condition(st.READY, "False", stuck[0], stuck[1])
        return draft.phase(Phase.PENDING, stuck[1], stuck[0]).outcome(POLL_SECONDS)
    draft.condition(st.READY, "False", "Evaluating", f"Job {job_name} is running")
    return draft.phase(Phase.RUNNING, f"Job {job_name} is evaluating the model", "Evaluating").outcome(
        POLL_SECONDS
    )


def _next_run(draft: StatusDraft, body: dict) -> Outcome:
    """A finished Evaluation with spec.schedule: requeue at the next schedule time; when due,
    start the run (the Job of the last one goes; the next reconcile creates the new one)."""
    spec, problem = read_spec(body, EvaluationSpec)
    if problem or not spec.schedule:
        return draft.outcome()
    base = draft.old.get("lastScheduleTime") or draft.old.get("startTime") or now_rfc3339()
    now = datetime.now(UTC)
    when = schedule.due(spec.schedule, schedule.parse_time(base), now)
    draft.set(nextScheduleTime=schedule.fmt(when.next_at))
    if when.run_at is None:
        return draft.outcome(max(1.0, (when.next_at - now).total_seconds()))
    at = schedule.fmt(when.run_at)
    meta = body["metadata"]
    kube.delete("batch/v1", "Job", meta["namespace"], build.job_name(meta["name"]))
    draft.set(lastScheduleTime=at, passed=None, completionTime=None)
    draft.clear(st.PASSED, st.FAILED)
    return draft.phase(Phase.PENDING, f"scheduled run of {at} ({spec.schedule})", "Scheduled").outcome(1.0)


def _step_committed(spec: EvaluationSpec, run: dict | None, cfg: OperatorConfig) -> bool:
    """Whether the run's checkpoint of spec.model.step is committed: one small read, and only once
    the run reports a checkpoint at or past that step."""
    folder = refs.step_folder(run, spec.model.step) if spec.model.step and run else ""
    marker = files.join(folder, files.COMMIT_MARKER)
    return bool(folder) and objectstore.marker_exists(marker, cfg, "spec.model.step")


def _complete(draft: StatusDraft, job: dict, cfg: OperatorConfig) -> Outcome:
    """Read the workload's status.json (the output URI is in the ConfigMap the Job ran with)."""
    spec = _workload_spec(job["metadata"]["namespace"], job["metadata"]["name"])
    output_uri = spec.get("outputUri", "")
    doc = objectstore.read_json(files.join(output_uri, files.EVALUATION_STATUS_FILE), cfg, "spec.outputUri")
    if doc is None:
        return _fail(
            draft,
            "ResultsMissing",
            f"Job {job['metadata']['name']} completed but {output_uri}/status.json is missing",
        )
    status = status_from_file(doc, output_uri)
    summary = _gate_summary(status)
    # A merge patch keeps keys it does not name: drop metrics a re-run no longer reports.
    gone = {k: None for k in draft.old.get("metrics") or {} if k not in status["metrics"]}
    status["metrics"] = {**gone, **status["metrics"]}
    model_uri, done = (spec.get("model") or {}).get("uri"), now_rfc3339()
    history = schedule.add_run(
        draft.old.get("history") or [], status, model_uri, draft.old.get("lastScheduleTime") or "", done
    )
    draft.set(**status, modelUri=model_uri, completionTime=done, history=history)
    draft.clear(st.FAILED)
    draft.condition(
        st.READY,
        "True",
        "Evaluated",
        f"{len(status['metrics'])} metrics; model card at {status['modelCardUri']}",
    )
    if status["passed"]:
        draft.condition(st.PASSED, "True", "GatesPassed", summary)
    else:
        draft.condition(st.PASSED, "False", "GatesFailed", summary)
        draft.event("Warning", "GatesFailed", summary)
    return draft.phase(Phase.SUCCEEDED, summary, "Evaluated").outcome()


def _workload_spec(ns: str, job_name: str) -> dict:
    """The resolved spec the Job runs with, from its ConfigMap (the source of truth after an
    operator restart: references are resolved once, when the Job is created)."""
    cm = kube.get("v1", "ConfigMap", ns, job_name) or {}
    doc = yaml.safe_load((cm.get("data") or {}).get(children.CONFIG_KEY) or "{}") or {}
    return doc.get("spec") or {}


def status_from_file(doc: dict, output_uri: str) -> dict:
    """EvaluationStatus fields (wire names) from the workload's status.json."""
    outcome = files.EvaluationOutcome.model_validate(doc)
    gates = [
        g.model_dump(by_alias=True, exclude_none=True, include={"metric", "value", "min", "max"})
        | {"passed": g.passed}
        for g in outcome.gates
    ]
    summary = {"trainingSummaryUri": outcome.training_summary_uri} if outcome.training_summary_uri else {}
    return summary | {
        "metrics": outcome.metrics,
        "gates": gates,
        "passed": outcome.passed,
        "resultsUri": outcome.results_uri or files.join(output_uri, files.RESULTS_FILE),
        "modelCardUri": outcome.model_card_uri or files.join(output_uri, files.MODEL_CARD_FILE),
    }
