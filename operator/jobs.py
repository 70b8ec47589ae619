"""What a workload Job and its pods say about how they ended: a Job's conditions, and a failed
pod's exit code, reason and last log lines for status messages."""

from __future__ import annotations

from capstan_operator import kube, redact
from capstan_operator.status import seconds_since

LOG_TAIL_LINES = 20


def job_condition(job: dict | None, type_: str) -> dict | None:
    for c in ((job or {}).get("status") or {}).get("conditions") or []:
        if c["type"] == type_ and c["status"] == "True":
            return c
    return None


def terminated_containers(pod: dict) -> list[tuple[str, dict]]:
    """(container name, terminated state) of every container that exited non-zero, init first."""
    status = pod.get("status") or {}
    out = []
    for cs in (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or []):
        term = (cs.get("state") or {}).get("terminated") or (cs.get("lastState") or {}).get("terminated")
        if term and term.get("exitCode", 0) != 0:
            out.append((cs["name"], term))
    return out


def pod_failure(pod: dict, with_logs: bool = True) -> tuple[int | None, str]:
    """(exit code, one message with the pod, container, reason and last log lines) of a failed pod."""
    name = pod["metadata"]["name"]
    failed = terminated_containers(pod)
    if not failed:
        reason = (pod.get("status") or {}).get("reason") or "Failed"
        return None, f"pod {name}: {reason}"
    container, term = failed[0]
    code = term.get("exitCode")
    msg = f"pod {name} container {container} exited with code {code} ({term.get('reason', 'Error')})"
    if with_logs:
        tail = kube.pod_log(pod["metadata"]["namespace"], name, container, LOG_TAIL_LINES).strip()
        if tail:
            msg += ": ...\n" + redact.scrub(tail)
    return code, msg


# Waiting reasons the kubelet gives a container it cannot start. It keeps retrying, but nothing
# changes until someone fixes the image, the pod or the policy: status must say so.
CANNOT_START = frozenset(
    {
        "ErrImagePull",
        "ImagePullBackOff",
        "ErrImageNeverPull",
        "InvalidImageName",
        "CreateContainerConfigError",
        "CreateContainerError",
    }
)


def cannot_start(pods: list[dict]) -> tuple[str, str] | None:
    """(reason, message naming the pod, container and image) of the first container that cannot
    start: a waiting reason in CANNOT_START, or a command the image cannot exec (StartError)."""
    for pod in pods:
        status = pod.get("status") or {}
        for cs in (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or []):
            state = cs.get("state") or {}
            waiting, term = (
                state.get("waiting") or {},
                state.get("terminated") or cs.get("lastState", {}).get("terminated") or {},
            )
            reason = waiting.get("reason") if waiting.get("reason") in CANNOT_START else None
            message = waiting.get("message", "")
            if reason is None and term.get("reason") == "StartError":
                reason, message = "StartError", term.get("message", "")
            if reason:
                where = f"pod {pod['metadata']['name']} container {cs['name']} (image {cs.get('image', '?')})"
                return reason, f"{where} cannot start: {reason}: {message}".rstrip(": ")
    return None


def refused_pods(namespace: str, job_name: str) -> str | None:
    """Why the Job controller could not create the Job's pods (its FailedCreate Event: an
    admission refusal such as Pod Security, or a quota), or None."""
    events = kube.list_("v1", "Event", namespace, field_selector=f"involvedObject.name={job_name}")
    refused = [
        e for e in events if e.get("reason") == "FailedCreate" and e["involvedObject"].get("kind") == "Job"
    ]
    return refused[-1].get("message") if refused else None


def blocked(namespace: str, job_name: str, pods: list[dict] | None = None) -> tuple[str, str] | None:
    """(reason, message) when the Job's pods cannot be created or started; None while they can."""
    if pods is None:
        pods = kube.list_("v1", "Pod", namespace, f"job-name={job_name}")
    stuck = cannot_start(pods)
    if stuck:
        return stuck
    if not pods:
        refused = refused_pods(namespace, job_name)
        if refused:
            return "FailedCreate", f"Job {job_name} cannot create its pods: {refused}"
    return None


def start_overdue(job: dict | None, deadline_s: int) -> bool:
    """Whether the Job has existed for longer than `deadline_s`, the start deadline of its pods."""
    created = ((job or {}).get("metadata") or {}).get("creationTimestamp")
    return bool(created) and seconds_since(created) > deadline_s


def job_failure(job: dict, namespace: str, job_name: str) -> str:
    """Why a failed Job failed: its last failed pod's exit code, reason and log tail, else the
    Job's own condition message (e.g. a deadline or a pod failure policy)."""
    pods = kube.list_("v1", "Pod", namespace, f"job-name={job_name}")
    failed = [p for p in pods if (p.get("status") or {}).get("phase") == "Failed"]  # the pod phase
    if failed:
        return pod_failure(failed[-1])[1]
    return f"Job {job_name} failed: {(job_condition(job, 'Failed') or {}).get('message', '')}"


def _pod_wait(pod: dict) -> str:
    """Why one pod is not Ready, in a few words: unscheduled, an init container at work, a
    container waiting, or its phase."""
    status = pod.get("status") or {}
    conds = {c["type"]: c for c in status.get("conditions") or []}
    sched = conds.get("PodScheduled") or {}
    if sched.get("status") == "False":
        return f"{sched.get('reason', 'Unschedulable')}: {sched.get('message', '')}".rstrip(": ")
    for cs in status.get("initContainerStatuses") or []:
        if not cs.get("ready"):
            state = cs.get("state") or {}
            doing = "running" if "running" in state else (state.get("waiting") or {}).get("reason", "waiting")
            return f"init container {cs['name']} {doing}"
    for cs in status.get("containerStatuses") or []:
        waiting = (cs.get("state") or {}).get("waiting")
        if waiting:
            return f"container {cs['name']} {waiting.get('reason', 'waiting')}"
    if conds.get("Ready", {}).get("status") != "True" and status.get("phase") == "Running":
        return "not passing its readiness probe yet"
    return status.get("phase") or "Pending"


def not_ready(pods: list[dict], limit: int = 3) -> str:
    """The pods that are not Ready, each with why (at most `limit` named), or "" when all are."""
    waiting = [
        p
        for p in pods
        if not p["metadata"].get("deletionTimestamp")
        and not any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in (p.get("status") or {}).get("conditions") or []
        )
    ]
    named = [f"{p['metadata']['name']} ({_pod_wait(p)})" for p in waiting[:limit]]
    more = f" and {len(waiting) - limit} more" if len(waiting) > limit else ""
    return ", ".join(named) + more
