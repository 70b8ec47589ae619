"""Level-based reconcile of a TrainingRun, as a recipe:

finished -> stop; resolve dependencies (Waiting / fail with theirs); suspend -> delete the gang;
a gang being torn down -> wait; Job complete -> Succeeded; permanent error (exit 3) -> Failed;
a lost pod or failed Job -> recreate the gang (restarts += 1, up to failurePolicy.maxRestarts);
not all pods Running within gangTimeoutSeconds -> tear down, back off, retry;
all Running -> progress from progress.json; nothing there -> create the children.
"""

from __future__ import annotations

from pydantic import ValidationError

from capstan_operator import build_common, build_trainingrun, kube, objectstore
from capstan_operator.api import status as st
from capstan_operator.api.common import describe_validation_error, now_rfc3339
from capstan_operator.api.trainingrun import TrainingRunSpec
from capstan_operator.config import OperatorConfig
from capstan_operator.reconcile_common import (
    Outcome,
    StatusDraft,
    job_condition,
    pod_failure,
    seconds_since,
    terminated_containers,
)
from capstan_operator.resolve_trainingrun import resolve

DONE = ("Succeeded", "EarlyStopped", "Failed")
SHORT_POLL = 1.0
WAIT_POLL = 5.0
MAX_PROGRESS_POLL = 30.0  # the issue asks for progress at least every 30 s


def _deleting(obj: dict) -> bool:
    return bool(obj["metadata"].get("deletionTimestamp"))


def _fail(draft: StatusDraft, reason: str, msg: str) -> Outcome:
    return draft.fail(reason, msg, st.PROGRESSING).outcome()


def progress_fields(progress: dict, running_pods: int | None) -> dict:
    """TrainingRunStatus fields (wire names) from the trainer's progress.json."""
    step, total = int(progress.get("step") or 0), progress.get("totalSteps")

    def short(x):  # kubectl get shows the number as is: 4 significant decimals are enough
        return round(x, 4) if isinstance(x, float) else x

    out = {
        "step": step,
        "totalSteps": total,
        "progress": f"{step}/{total}" if total else str(step),
        "tokensSeen": int(progress.get("tokensSeen") or 0),
        "loss": short(progress.get("loss")),
        "evalLoss": short(progress.get("evalLoss")),
        "tokensPerSec": short(progress.get("tokensPerSec")),
        "mfu": short(progress.get("mfu")),
        "worldSize": progress.get("worldSize"),
        "lastCheckpoint": progress.get("lastCheckpoint"),
    }
    if running_pods is not None:
        out["nodes"] = running_pods
    return {k: v for k, v in out.items() if v is not None}


def _read_dependencies(ns: str, spec: TrainingRunSpec) -> tuple[dict, dict]:
    datasets = {
        d.dataset_ref: kube.get_custom("datasets", ns, d.dataset_ref) for d in spec.datasets if d.dataset_ref
    }
    ref = spec.init.from_training_run
    runs = {ref: kube.get_custom("trainingruns", ns, ref)} if ref else {}
    return datasets, runs


def _phase(pod: dict) -> str:
    return (pod.get("status") or {}).get("phase") or "Pending"


def gang_ready(job: dict | None, nodes: int) -> bool:
    """The Job's own counters say every pod is Ready (so Running) and none failed, is being
    deleted or finished: nothing a pod listing would add."""
    if job is None or _deleting(job) or job_condition(job, "Failed") or job_condition(job, "Complete"):
        return False
    s = job.get("status") or {}
    return (s.get("ready") or 0) >= nodes and not s.get("failed") and not s.get("terminating")


def _pending_summary(pods: list[dict], nodes: int) -> str:
    running = sum(_phase(p) == "Running" for p in pods)
    parts = [f"{running} of {nodes} pods running"]
    for p in pods:
        for c in (p.get("status") or {}).get("conditions") or []:
            if c["type"] == "PodScheduled" and c["status"] == "False":
                parts.append(f"{p['metadata']['name']}: {c.get('reason', '')} {c.get('message', '')}".strip())
                break
    return "; ".join(parts)


def reconcile(body: dict, cfg: OperatorConfig) -> Outcome:
    draft = StatusDraft(body)
    ns, name = body["metadata"]["namespace"], body["metadata"]["name"]
    # ---- finished: nothing more to do for this generation
    if draft.finished(*DONE):
        return draft.outcome()
    try:
        spec = TrainingRunSpec.model_validate(body.get("spec") or {})
    except ValidationError as exc:
        return _fail(draft, "InvalidSpec", describe_validation_error(exc, "spec"))

    # ---- dependencies
    res = resolve(ns, name, spec, *_read_dependencies(ns, spec), cfg)
    if res.failure:
        return _fail(draft, "DependencyFailed", res.failure)
    if res.waiting:
        draft.condition(st.WAITING, "True", "DependencyNotReady", res.waiting)
        return draft.phase("Waiting", res.waiting, "Waiting").outcome(WAIT_POLL)
    if draft.find(st.WAITING):
        draft.condition(st.WAITING, "False", "DependenciesReady", "every dependency is ready")
    spec = res.spec
    draft.set(outputUri=spec.checkpoint.uri, totalSteps=spec.optimizer.total_steps)

    job_name = build_trainingrun.job_name(name)
    nodes = spec.resources.max_nodes
    # No startTime: this run never had children, so create them without reading first (a 409
    # from a create whose status write was lost means "already there" and is patched instead).
    fresh = not draft.get("startTime") and not spec.suspend
    job = None if fresh else kube.get("batch/v1", "Job", ns, job_name)
    # A steady gang needs no pod listing (the most frequent reconcile): the Job counts its pods.
    if fresh:
        pods = []
    elif spec.suspend or not gang_ready(job, nodes):
        selector = build_common.selector(build_common.pod_labels(body, build_trainingrun.COMPONENT))
        pods = kube.list_("v1", "Pod", ns, selector)
    else:
        pods = None

    # ---- suspend: stop the gang; the trainer resumes from the newest checkpoint later
    if spec.suspend:
        if job is not None and not _deleting(job):
            kube.delete("batch/v1", "Job", ns, job_name, propagation="Foreground")
        msg = "suspended; resumes from the newest checkpoint when spec.suspend is false"
        draft.condition(st.SUSPENDED, "True", "Suspended", msg)
        draft.condition(st.PROGRESSING, "False", "Suspended", msg)
        return draft.phase("Suspended", msg, "Suspended").outcome(WAIT_POLL if pods else None)
    if (draft.find(st.SUSPENDED) or {}).get("status") == "True":
        draft.condition(st.SUSPENDED, "False", "Resumed", "resumed")

    # ---- a gang being torn down: wait until it is gone before creating the next one
    if job is not None and _deleting(job):
        return draft.outcome(SHORT_POLL)
    if job is None and pods:
        return draft.outcome(SHORT_POLL)

    if job is not None:
        # ---- success
        if job_condition(job, "Complete"):
            progress = (
                objectstore.read_json(objectstore.join(spec.checkpoint.uri, "progress.json"), cfg) or {}
            )
            phase = (
                progress.get("phase")
                if progress.get("phase") in ("Succeeded", "EarlyStopped")
                else "Succeeded"
            )
            draft.set(
                **progress_fields(progress, 0), completionTime=draft.get("completionTime") or now_rfc3339()
            )
            msg = f"{phase.lower()} at step {draft.get('step')}"
            draft.condition(st.PROGRESSING, "False", phase, msg)
            return draft.phase(phase, msg, phase).outcome()
        # ---- failures: permanent at once, otherwise recreate the gang
        failed = [
            p
            for p in pods or []
            if (p.get("status") or {}).get("phase") == "Failed" or terminated_containers(p)
        ]
        exits = [(p, t.get("exitCode")) for p in failed for _, t in terminated_containers(p)]
        bad = next((p for p, code in exits if code == build_trainingrun.EXIT_INVALID), None)
        if bad is not None:
            return _fail(draft, "InvalidSpec", pod_failure(bad)[1])
        lost = [p for p in pods or [] if _deleting(p)]
        if job_condition(job, "Failed") or failed or lost:
            if failed:
                why = pod_failure(failed[0])[1]
            elif lost:
                why = f"pod {lost[0]['metadata']['name']} was deleted (node or pod lost)"
            else:
                why = f"Job {job_name} failed: {job_condition(job, 'Failed').get('message', '')}"
            restarts = int(draft.get("restarts") or 0)
            if restarts >= spec.failure_policy.max_restarts:
                return _fail(
                    draft, "RestartsExhausted", f"{restarts} gang restarts used up; last failure: {why}"
                )
            kube.delete("batch/v1", "Job", ns, job_name, propagation="Foreground")
            draft.set(restarts=restarts + 1)
            draft.event("Warning", "GangRestart", f"restart {restarts + 1}: {why}")
            draft.condition(st.GANG_SCHEDULED, "Unknown", "Restarting", why.split("\n", 1)[0])
            return draft.phase(
                "Scheduling", f"recreating the gang after: {why.split(chr(10), 1)[0]}"
            ).outcome(SHORT_POLL)
        # ---- gang guard
        running = nodes if pods is None else sum(_phase(p) == "Running" for p in pods)
        if job["spec"].get("suspend"):
            msg = f"queued in Kueue queue {spec.scheduling.queue_name}"
            draft.condition(st.GANG_SCHEDULED, "Unknown", "Queued", msg)
            return draft.phase("Scheduling", msg, "Queued").outcome(WAIT_POLL)
        if running < nodes:
            started = (job.get("status") or {}).get("startTime") or job["metadata"]["creationTimestamp"]
            age, limit = seconds_since(started), spec.scheduling.gang_timeout_seconds
            summary = _pending_summary(pods, nodes)
            if spec.scheduling.scheduler == "native" and age > limit:
                kube.delete("batch/v1", "Job", ns, job_name, propagation="Foreground")
                msg = f"not all pods running within {limit} s ({summary}); retrying in {cfg.gang_backoff_seconds} s"
                draft.condition(st.GANG_SCHEDULED, "False", "GangTimeout", msg)
                return draft.phase("Scheduling", msg, "GangTimeout").outcome(cfg.gang_backoff_seconds)
            draft.condition(st.GANG_SCHEDULED, "Unknown", "Scheduling", summary)
            return draft.phase("Scheduling", summary, "Scheduling").outcome(
                min(WAIT_POLL, max(1.0, limit - age))
            )
        # ---- running: progress
        draft.condition(st.GANG_SCHEDULED, "True", "AllPodsRunning", f"{nodes} of {nodes} pods running")
        progress = objectstore.read_json(objectstore.join(spec.checkpoint.uri, "progress.json"), cfg)
        if progress:
            draft.set(**progress_fields(progress, running))
        msg = f"training, step {draft.get('step', 0)}/{spec.optimizer.total_steps}"
        draft.condition(st.PROGRESSING, "True", "Training", msg)
        return draft.phase("Running", msg, "Running").outcome(
            min(MAX_PROGRESS_POLL, cfg.progress_interval_seconds)
        )

    # ---- no Job: back off after a gang timeout, else create the children
    gang = draft.find(st.GANG_SCHEDULED) or {}
    if gang.get("reason") == "GangTimeout":
        left = cfg.gang_backoff_seconds - seconds_since(gang.get("lastTransitionTime"))
        if left > 0:
            return draft.outcome(left)
    for child in build_trainingrun.build(body, spec, cfg):
        if child["kind"] == "PodGroup":
            kube.apply_custom(child)
        else:
            kube.apply(child)
    draft.event(
        "Normal", "Created", f"Job {job_name}: {nodes} pod(s) x {spec.resources.nproc_per_node} process(es)"
    )
    draft.condition(st.GANG_SCHEDULED, "Unknown", "Scheduling", f"0 of {nodes} pods running")
    draft.condition(st.PROGRESSING, "True", "Scheduling", f"Job {job_name} created")
    if not draft.get("startTime"):
        draft.set(startTime=now_rfc3339())
    # The Job's and pods' events wake this run as the gang comes up; the poll is a safety net.
    return draft.phase(
        "Scheduling", f"Job {job_name} created, waiting for {nodes} pod(s)", "Scheduling"
    ).outcome(WAIT_POLL)
