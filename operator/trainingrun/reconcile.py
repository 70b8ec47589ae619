"""Level-based reconcile of a TrainingRun, as a recipe:

finished -> stop; resolve dependencies (Waiting / fail with theirs); suspend -> delete the gang;
a gang being torn down -> wait; a gang made from another spec (or a failed run, edited) -> delete
it, to continue from the newest checkpoint; Job complete -> Succeeded; permanent error (exit 3) -> Failed;
a lost pod or failed Job -> recreate the gang (restarts += 1, up to failurePolicy.maxRestarts;
not counted when the pods stopped after checkpointing, exit 4, or were evicted);
a Job Kueue holds suspended (queued, preempted) -> wait, quoting Kueue's reason;
not all pods Running within gangTimeoutSeconds -> tear down, back off, retry (native scheduler
only: Kueue's waitForPodsReady evicts a gang that does not come up);
all Running -> progress from progress.json; nothing there -> create the children.
"""

from __future__ import annotations

from dataclasses import dataclass

from capstan_api import exitcodes, files
from capstan_api import status as st
from capstan_api.common import now_rfc3339
from capstan_api.status import Phase
from capstan_api.trainingrun import TrainingRunSpec
from capstan_operator import children, identity, kube, objectstore
from capstan_operator.config import OperatorConfig
from capstan_operator.jobs import blocked, job_condition, pod_failure, terminated_containers
from capstan_operator.status import Outcome, StatusDraft, read_spec, seconds_since
from capstan_operator.trainingrun import build, hfinit, plan, queue
from capstan_operator.trainingrun.resolve import checkpoint_taken, resolve

DONE = (Phase.SUCCEEDED, Phase.EARLY_STOPPED, Phase.FAILED)
SHORT_POLL = 1.0
WAIT_POLL = 5.0
MAX_PROGRESS_POLL = 30.0  # the issue asks for progress at least every 30 s
STOP_SLACK_S = 10.0  # after a deleted pod's grace period, before its exit code is given up on


@dataclass
class Gang:
    """What one reconcile saw of the run's children."""

    spec: TrainingRunSpec
    """spec with every reference resolved."""
    namespace: str
    job_name: str
    nodes: int
    """nodes: pods the gang needs (resources.maxNodes)."""
    job: dict | None
    pods: list[dict] | None
    """pods: the gang's pods; None when the Job's counters already say every pod is Ready."""

    @property
    def running(self) -> int:
        """Pods in phase Running (all of them when the Job's counters said so)."""
        return self.nodes if self.pods is None else _running_pods(self.pods)


def _deleting(obj: dict) -> bool:
    return bool(obj["metadata"].get("deletionTimestamp"))


def _fail(draft: StatusDraft, reason: str, msg: str) -> Outcome:
    return draft.fail(reason, msg, st.PROGRESSING).outcome()


def _short(x):
    """kubectl get shows the number as is: 4 significant decimals are enough."""
    return round(x, 4) if isinstance(x, float) else x


def progress_fields(doc: dict, running_pods: int | None) -> dict:
    """TrainingRunStatus fields (wire names) from the trainer's progress.json."""
    p = files.TrainingProgress.model_validate(doc)
    out = {
        "step": p.step,
        "totalSteps": p.total_steps,
        "progress": f"{p.step}/{p.total_steps}" if p.total_steps else str(p.step),
        "tokensSeen": p.tokens_seen,
        "loss": _short(p.loss),
        "evalLoss": _short(p.eval_loss),
        "overfitting": p.overfitting,
        "tokensPerSec": _short(p.tokens_per_sec),
        "mfu": _short(p.mfu),
        "lossTokens": p.loss_tokens,
        "trainableParams": p.trainable_params,
        "totalParams": p.total_params,
        "dpo": {k: _short(v) for k, v in p.dpo.to_wire().items()} if p.dpo else None,
        "worldSize": p.world_size,
        "lastCheckpoint": p.last_checkpoint.to_wire() if p.last_checkpoint else None,
        "replay": p.replay.to_wire() if p.replay else None,
    }
    if running_pods is not None:
        out["nodes"] = running_pods
    return {k: v for k, v in out.items() if v is not None}


def _report_unreadable(draft: StatusDraft, progress: dict) -> None:
    """A Warning Event for each checkpoint the trainers newly found unreadable (kept in status)."""
    known = {c["uri"] for c in draft.get("unreadableCheckpoints") or []}
    found = files.TrainingProgress.model_validate(progress).unreadable_checkpoints
    new = [c for c in found if c.uri not in known]
    for c in new:
        draft.event(
            "Warning", "CheckpointUnreadable", f"{c.uri} (step {c.step}) could not be loaded: {c.reason}"
        )
    if new:
        draft.set(
            unreadableCheckpoints=[*(draft.get("unreadableCheckpoints") or []), *(c.to_wire() for c in new)]
        )


def _read_progress(spec: TrainingRunSpec, cfg: OperatorConfig) -> dict | None:
    return objectstore.read_json(
        files.join(spec.checkpoint.uri, files.PROGRESS_FILE), cfg, "spec.checkpoint.uri"
    )


def _read_dependencies(ns: str, spec: TrainingRunSpec) -> tuple[dict, dict]:
    datasets = {
        d.dataset_ref: kube.get_custom("datasets", ns, d.dataset_ref) for d in spec.datasets if d.dataset_ref
    }
    ref = spec.init.from_training_run or spec.init.replay_without
    runs = {ref: kube.get_custom("trainingruns", ns, ref)} if ref else {}
    return datasets, runs


def _pod_phase(pod: dict) -> str:
    """The pod's own phase (core/v1 Pod phases, not a TrainingRun's)."""
    return (pod.get("status") or {}).get("phase") or "Pending"


def _running_pods(pods: list[dict]) -> int:
    return sum(_pod_phase(p) == "Running" for p in pods)


def gang_ready(job: dict | None, nodes: int) -> bool:
    """The Job's own counters say every pod is Ready (so Running) and none failed, is being
    deleted or finished: nothing a pod listing would add."""
    if job is None or _deleting(job) or job_condition(job, "Failed") or job_condition(job, "Complete"):
        return False
    s = job.get("status") or {}
    return (s.get("ready") or 0) >= nodes and not s.get("failed") and not s.get("terminating")


def _pending_summary(pods: list[dict], nodes: int) -> str:
    parts = [f"{_running_pods(pods)} of {nodes} pods running"]
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
    spec, problem = read_spec(body, TrainingRunSpec)
    if problem:
        return _fail(draft, "InvalidSpec", problem)

    # ---- dependencies
    res = resolve(ns, name, spec, *_read_dependencies(ns, spec), cfg)
    if res.failure:
        return _fail(draft, "DependencyFailed", res.failure)
    if res.waiting:
        draft.condition(st.WAITING, "True", "DependencyNotReady", res.waiting)
        return draft.phase(Phase.WAITING, res.waiting, "Waiting").outcome(WAIT_POLL)
    if draft.find(st.WAITING):
        draft.condition(st.WAITING, "False", "DependenciesReady", "every dependency is ready")
    gang = _observe(body, draft, res.spec)
    draft.set(outputUri=gang.spec.checkpoint.uri, totalSteps=gang.spec.optimizer.total_steps)

    if gang.spec.suspend:
        return _suspend(draft, gang)
    if (draft.find(st.SUSPENDED) or {}).get("status") == "True":
        draft.condition(st.SUSPENDED, "False", "Resumed", "resumed")
    # ---- a gang being torn down: wait until it is gone before creating the next one
    if (gang.job is not None and _deleting(gang.job)) or (gang.job is None and gang.pods):
        return draft.outcome(SHORT_POLL)
    # ---- a gang made from another spec (or a failed run, since edited): continue from the newest checkpoint
    if gang.job is not None and (
        children.built_from(gang.job) != build.spec_hash(body) or draft.old.get("phase") == Phase.FAILED
    ):
        return _supersede(draft, gang)
    if gang.job is None:
        return _create(body, draft, gang, cfg)
    if job_condition(gang.job, "Complete"):
        return _complete(draft, gang, cfg)
    return (
        _held_by_kueue(draft, gang)
        or _failures(draft, gang)
        or _gang_guard(draft, gang, cfg)
        or _running(draft, gang, cfg)
    )


def _observe(body: dict, draft: StatusDraft, spec: TrainingRunSpec) -> Gang:
    """Read the Job, and the pods only when the Job's counters cannot answer."""
    ns, name = body["metadata"]["namespace"], body["metadata"]["name"]
    job_name, nodes = build.job_name(name), spec.resources.max_nodes
    # No startTime: this run never had children, so create them without reading first (a 409
    # from a create whose status write was lost means "already there" and is patched instead).
    fresh = not draft.get("startTime") and not spec.suspend
    job = None if fresh else kube.get("batch/v1", "Job", ns, job_name)
    # A steady gang needs no pod listing (the most frequent reconcile): the Job counts its pods.
    if fresh:
        pods: list[dict] | None = []
    elif spec.suspend or not gang_ready(job, nodes):
        selector = children.selector(children.pod_labels(body, build.COMPONENT))
        pods = kube.list_("v1", "Pod", ns, selector)
    else:
        pods = None
    return Gang(spec, ns, job_name, nodes, job, pods)


def _supersede(draft: StatusDraft, gang: Gang) -> Outcome:
    """Remove the gang (its trainers checkpoint the step they reached on SIGTERM); the next
    reconcile creates one from the edited spec, which resumes from the newest checkpoint:
    checkpoints record the settings that shape training, not its length, schedule or evaluation."""
    kube.delete("batch/v1", "Job", gang.namespace, gang.job_name, propagation="Foreground")
    msg = f"spec changed (generation {draft.generation}): the gang is recreated and continues from the newest checkpoint"
    draft.event("Normal", "SpecChanged", msg)
    draft.set(completionTime=None)
    draft.clear(st.FAILED)
    draft.condition(st.PROGRESSING, "True", "SpecChanged", msg)
    return draft.phase(Phase.SCHEDULING, msg, "SpecChanged").outcome(SHORT_POLL)


def _suspend(draft: StatusDraft, gang: Gang) -> Outcome:
    """Stop the gang; its trainers checkpoint the step they reached, and resume from it later."""
    if gang.job is not None and not _deleting(gang.job):
        kube.delete("batch/v1", "Job", gang.namespace, gang.job_name, propagation="Foreground")
    msg = "suspended; resumes from the newest checkpoint when spec.suspend is false"
    draft.condition(st.SUSPENDED, "True", "Suspended", msg)
    draft.condition(st.PROGRESSING, "False", "Suspended", msg)
    return draft.phase(Phase.SUSPENDED, msg, "Suspended").outcome(WAIT_POLL if gang.pods else None)


def _complete(draft: StatusDraft, gang: Gang, cfg: OperatorConfig) -> Outcome:
    """The Job completed: Succeeded, or EarlyStopped when the trainer says so."""
    progress = _read_progress(gang.spec, cfg) or {}
    phase = progress.get("phase") if progress.get("phase") in st.RUN_DONE else Phase.SUCCEEDED
    draft.set(**progress_fields(progress, 0), completionTime=draft.get("completionTime") or now_rfc3339())
    msg = f"{phase.lower()} at step {draft.get('step')}"
    draft.condition(st.PROGRESSING, "False", phase, msg)
    return draft.phase(phase, msg, phase).outcome()


def _failures(draft: StatusDraft, gang: Gang) -> Outcome | None:
    """A permanent error fails the run at once; a lost pod or a failed Job recreates the gang
    (up to failurePolicy.maxRestarts), for free when every pod that ended had stopped after
    checkpointing (exit 4: nothing was lost). None when nothing failed."""
    pods = gang.pods or []
    failed = [p for p in pods if _pod_phase(p) == "Failed" or terminated_containers(p)]
    exits = [(p, t.get("exitCode")) for p in failed for _, t in terminated_containers(p)]
    bad = next((p for p, code in exits if code == exitcodes.INVALID_CONFIG), None)
    if bad is not None:
        return _fail(draft, "InvalidSpec", pod_failure(bad)[1])
    lost = [p for p in pods if _deleting(p)]
    job_failed = job_condition(gang.job, "Failed")
    if not (job_failed or failed or lost):
        return None
    if build.elastic(gang.spec) and not job_failed and _rendezvous_host(pods) is not None:
        # Elastic: the Job controller replaces the pod while the others train on at a smaller
        # world size (torchrun re-rendezvous); the replacement joins when it starts.
        return None
    stopping = [p for p in lost if _stopping(p)]
    if stopping:
        # Its trainer is checkpointing on SIGTERM: its exit code says whether a restart is spent.
        msg = f"pod {stopping[0]['metadata']['name']} is stopping (checkpointing the step it reached)"
        return draft.phase(Phase.SCHEDULING, msg).outcome(SHORT_POLL)
    if failed:
        why = pod_failure(failed[0])[1]
    elif lost:
        why = f"pod {lost[0]['metadata']['name']} was deleted (node or pod lost)"
    else:
        why = f"Job {gang.job_name} failed: {job_failed.get('message', '')}"
    first_line = why.split("\n", 1)[0]
    restarts = int(draft.get("restarts") or 0)
    stopped = _stopped_after_checkpoint(failed, lost, job_failed)
    if not stopped and restarts >= gang.spec.failure_policy.max_restarts:
        return _fail(draft, "RestartsExhausted", f"{restarts} gang restarts used up; last failure: {why}")
    kube.delete("batch/v1", "Job", gang.namespace, gang.job_name, propagation="Foreground")
    if stopped:
        draft.event(
            "Normal", "GangRecreated", f"pods stopped after checkpointing, not counted as a restart: {why}"
        )
    else:
        # One budget: the pods an elastic Job replaced after crashes count too (its backoffLimit
        # was what was left of it).
        spent = (
            max(1, int((gang.job.get("status") or {}).get("failed") or 0)) if build.elastic(gang.spec) else 1
        )
        draft.set(restarts=restarts + spent)
        draft.event("Warning", "GangRestart", f"restart {restarts + spent}: {why}")
    draft.condition(st.GANG_SCHEDULED, "Unknown", "Restarting", first_line)
    return draft.phase(Phase.SCHEDULING, f"recreating the gang after: {first_line}").outcome(SHORT_POLL)


def _index(pod: dict) -> str | None:
    return pod["metadata"].get("labels", {}).get("batch.kubernetes.io/job-completion-index")


def _rendezvous_host(pods: list[dict]) -> dict | None:
    """Pod 0, which holds the c10d rendezvous store, unless it is lost or failed: without it the
    others cannot re-rendezvous, so its loss restarts the gang even in an elastic run."""
    for p in pods:
        healthy = not _deleting(p) and _pod_phase(p) != "Failed" and not terminated_containers(p)
        if _index(p) == "0" and healthy:
            return p
    return None


def _stopping(pod: dict) -> bool:
    """Deleted, still running and within its grace period (plus slack for the status update)."""
    ended = _pod_phase(pod) in ("Failed", "Succeeded") or terminated_containers(pod)
    return not ended and seconds_since(pod["metadata"]["deletionTimestamp"]) < STOP_SLACK_S


def _disrupted(pod: dict) -> bool:
    """Evicted or preempted (condition DisruptionTarget): not the trainer's failure."""
    conds = (pod.get("status") or {}).get("conditions") or []
    return any(c["type"] == "DisruptionTarget" and c["status"] == "True" for c in conds)


def _stopped_after_checkpoint(failed: list[dict], lost: list[dict], job_failed: dict | None) -> bool:
    """Every pod seen failed or lost exited STOPPED or was disrupted (evicted, preempted), and
    one was, or the Job itself failed by a pod failure policy rule (build.STOPPED_RULE,
    build.DISRUPTED_RULE): its pods may be gone before a reconcile lists them."""
    ended = {p["metadata"]["name"]: p for p in failed + lost}.values()
    free = [
        _disrupted(p) or [t.get("exitCode") for _, t in terminated_containers(p)] == [exitcodes.STOPPED]
        for p in ended
    ]
    by_rule = (job_failed or {}).get("reason") == "PodFailurePolicy"
    return all(free) and (bool(free) or by_rule)


def _held_by_kueue(draft: StatusDraft, gang: Gang) -> Outcome | None:
    """The Job is suspended: Kueue has not admitted it yet, or evicted it (preempted, or pods not
    Ready within its waitForPodsReady) and the Job controller is stopping its pods, which
    checkpoint the step they reached: not failures. Status quotes Kueue's reason. None when the
    Job runs."""
    if not gang.job["spec"].get("suspend"):
        return None
    reason, msg = queue.why_suspended(
        queue.workload_of(gang.namespace, gang.job), gang.spec.scheduling.queue_name
    )
    draft.condition(st.GANG_SCHEDULED, "False", reason, msg)
    return draft.phase(Phase.SCHEDULING, msg, reason).outcome(WAIT_POLL)


def _gang_guard(draft: StatusDraft, gang: Gang, cfg: OperatorConfig) -> Outcome | None:
    """Not every pod Running: wait, and with the native scheduler tear the gang down after
    gangTimeoutSeconds and back off. None when the whole gang runs."""
    spec, job, nodes = gang.spec, gang.job, gang.nodes
    need = spec.resources.min_nodes if build.elastic(spec) else nodes
    if gang.running >= need:
        return None
    if gang.pods and any(_pod_phase(p) == "Succeeded" for p in gang.pods):
        # Training ended on some pods; the Job completes once the rest exit (a replacement that
        # arrived late finds the run finished and exits 0): not a gang to time out.
        msg = "training finished; waiting for the Job to complete"
        return draft.phase(Phase.RUNNING, msg, "Finishing").outcome(WAIT_POLL)
    started = (job.get("status") or {}).get("startTime") or job["metadata"]["creationTimestamp"]
    age, limit = seconds_since(started), spec.scheduling.gang_timeout_seconds
    summary = _pending_summary(gang.pods, nodes)
    stuck = blocked(gang.namespace, gang.job_name, gang.pods)
    if stuck:  # named in status, and given the gang timeout to be fixed (e.g. an image pushed)
        draft.condition(st.GANG_SCHEDULED, "False", stuck[0], stuck[1])
        if age <= limit:
            return draft.phase(Phase.PENDING, stuck[1], stuck[0]).outcome(WAIT_POLL)
        # Retrying would pull the same image or miss the same Secret: fail, and free the nodes.
        kube.delete("batch/v1", "Job", gang.namespace, gang.job_name, propagation="Foreground")
        return _fail(draft, stuck[0], f"pods did not start within gangTimeoutSeconds ({limit} s): {stuck[1]}")
    if spec.scheduling.scheduler == "native" and age > limit:
        kube.delete("batch/v1", "Job", gang.namespace, gang.job_name, propagation="Foreground")
        msg = f"not all pods running within {limit} s ({summary}); retrying in {cfg.gang_backoff_seconds} s"
        draft.condition(st.GANG_SCHEDULED, "False", "GangTimeout", msg)
        return draft.phase(Phase.SCHEDULING, msg, "GangTimeout").outcome(cfg.gang_backoff_seconds)
    draft.condition(st.GANG_SCHEDULED, "Unknown", "Scheduling", summary)
    return draft.phase(Phase.SCHEDULING, summary, "Scheduling").outcome(min(WAIT_POLL, max(1.0, limit - age)))


def _running(draft: StatusDraft, gang: Gang, cfg: OperatorConfig) -> Outcome:
    """The gang runs (at least minNodes of an elastic one): progress from progress.json."""
    nodes, total, running = gang.nodes, gang.spec.optimizer.total_steps, gang.running
    if running >= nodes:
        draft.condition(st.GANG_SCHEDULED, "True", "AllPodsRunning", f"{nodes} of {nodes} pods running")
    else:
        msg = f"{running} of {nodes} pods running (elastic, at least {gang.spec.resources.min_nodes}); the others are being replaced"
        draft.condition(st.GANG_SCHEDULED, "True", "ElasticShrunk", msg)
    progress = _read_progress(gang.spec, cfg)
    if progress:
        before = draft.get("worldSize")
        draft.set(**progress_fields(progress, running))
        after = draft.get("worldSize")
        if before and after and before != after:
            # One Event per membership change the trainers went through (torchrun re-rendezvous).
            draft.event(
                "Normal", "WorldSizeChanged", f"world size {before} -> {after} at step {draft.get('step')}"
            )
    _report_unreadable(draft, progress or {})
    msg = f"training, step {draft.get('step', 0)}/{total}"
    draft.condition(st.PROGRESSING, "True", "Training", msg)
    return draft.phase(Phase.RUNNING, msg, "Running").outcome(
        min(MAX_PROGRESS_POLL, cfg.progress_interval_seconds)
    )


def _create(body: dict, draft: StatusDraft, gang: Gang, cfg: OperatorConfig) -> Outcome:
    """No Job: back off after a gang timeout, else create the children."""
    timeout = draft.find(st.GANG_SCHEDULED) or {}
    if timeout.get("reason") == "GangTimeout":
        left = cfg.gang_backoff_seconds - seconds_since(timeout.get("lastTransitionTime"))
        if left > 0:
            return draft.outcome(left)
    spec, job_name, nodes = gang.spec, gang.job_name, gang.nodes
    # ---- a model imported from Hugging Face: its config.json, checked before any pod
    shape = None
    if spec.init.hugging_face:
        shape, problem = hfinit.read_shape(spec, cfg)
        if problem:
            return _fail(draft, "UnsupportedModel", problem)
    # ---- capacity plan: refuse a run that cannot fit before any pod
    try:
        capacity_plan, refusal = plan.compute(spec, shape)
    except ValueError as exc:  # a model shape the trainer would refuse too
        return _fail(draft, "InvalidSpec", f"spec.model: {exc}")
    draft.set(plan=capacity_plan.to_wire())
    if refusal:
        return _fail(draft, "InsufficientGPUMemory", refusal)
    # Only here, before pods exist: one listing per gang, not per progress poll.
    taken = checkpoint_taken(body, spec.checkpoint.uri, kube.list_custom("trainingruns", gang.namespace))
    if taken:
        return _fail(draft, "CheckpointUriInUse", taken)
    identity.ensure_service_account(body, cfg)
    for child in build.build(body, spec, cfg, capacity_plan.gpu_hours):
        if child["kind"] == "PodGroup":
            kube.apply_custom(child)
        else:
            kube.apply(child)
    if not draft.get("trainedOn"):  # the first gang's data: checkpoints refuse any other later
        draft.set(trainedOn=[d.uri for d in spec.datasets])
    draft.event(
        "Normal", "Created", f"Job {job_name}: {nodes} pod(s) x {spec.resources.nproc_per_node} process(es)"
    )
    draft.condition(st.GANG_SCHEDULED, "Unknown", "Scheduling", f"0 of {nodes} pods running")
    draft.condition(st.PROGRESSING, "True", "Scheduling", f"Job {job_name} created")
    draft.clear(st.FAILED)  # a failed run whose spec was edited is tried again
    draft.set(completionTime=None)
    if not draft.get("startTime"):
        draft.set(startTime=now_rfc3339())
    # The Job's and pods' events wake this run as the gang comes up; the poll is a safety net.
    return draft.phase(
        Phase.SCHEDULING, f"Job {job_name} created, waiting for {nodes} pod(s)", "Scheduling"
    ).outcome(WAIT_POLL)
