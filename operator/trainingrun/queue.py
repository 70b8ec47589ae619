"""What Kueue says about a TrainingRun's Job while it holds the Job suspended: waiting for quota
in its LocalQueue, or evicted (preempted by a higher-priority workload, or its pods not Ready
within waitForPodsReady) and waiting to be readmitted. Kueue writes it on the Workload it makes
for the Job (labelled with the Job's uid), not on the Job."""

from __future__ import annotations

from capstan_operator import kube

KUEUE_GROUP, KUEUE_VERSION = "kueue.x-k8s.io", "v1beta2"
LABEL_JOB_UID = "kueue.x-k8s.io/job-uid"


def workload_of(namespace: str, job: dict) -> dict | None:
    """Kueue's Workload for `job` (the newest, should there be two); None when Kueue has not
    made one yet or is not installed."""
    try:
        found = kube.list_custom(
            "workloads",
            namespace,
            selector=f"{LABEL_JOB_UID}={job['metadata']['uid']}",
            group=KUEUE_GROUP,
            version=KUEUE_VERSION,
        )
    except kube.ApiException as exc:
        if exc.status in (403, 404):  # no Kueue CRDs, or a chart without the workloads rule
            return None
        raise
    return max(found, key=lambda w: w["metadata"]["creationTimestamp"], default=None)


def _true(workload: dict | None, type_: str, status: str) -> dict | None:
    for c in ((workload or {}).get("status") or {}).get("conditions") or []:
        if c["type"] == type_ and c["status"] == status:
            return c
    return None


def why_suspended(workload: dict | None, queue: str) -> tuple[str, str]:
    """(reason, message) for the run's status: `Preempted` or `Evicted` once Kueue took the
    gang's quota back (its pods stop after checkpointing), else `Queued`; the message quotes
    Kueue's own condition (type, reason, message)."""
    evicted = _true(workload, "Evicted", "True")
    pending = _true(workload, "QuotaReserved", "False")
    parts = [f"{c['type']} ({c.get('reason', '')}): {c.get('message', '')}" for c in (evicted, pending) if c]
    said = "; ".join(parts) or ("waiting for Kueue to admit the Job" if workload else "no Workload yet")
    if evicted:
        reason = "Preempted" if evicted.get("reason") == "Preempted" else "Evicted"
        return (
            reason,
            f"suspended by Kueue, resumes from its checkpoint when readmitted to LocalQueue {queue}: {said}",
        )
    return "Queued", f"queued in Kueue LocalQueue {queue}: {said}"
