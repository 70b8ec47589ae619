"""What the node reports in a pod's status: each container's state and the pod's conditions.
Pure: the node's tracks in, the pods/status body out."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from hack.localcluster.nodeagent.container import Instance, rfc3339


@dataclass
class Track:
    """What the node knows about one container across its restarts."""

    spec: dict
    init: bool = False
    instance: Instance | None = None
    restart_count: int = 0
    last_state: dict = field(default_factory=dict)
    waiting: tuple[str, str] = ("ContainerCreating", "")
    next_start: float = 0.0
    done: bool = False  # terminated and will not restart
    pull_failures: int = 0
    image_id: str = ""  # ref@digest once pulled (from-image mode)


def container_id(pod_uid: str, t: Track) -> str:
    return f"capstan://{pod_uid}-{t.spec['name']}-{t.restart_count}"


def container_status(pod_uid: str, t: Track) -> dict:
    inst = t.instance
    s = {
        "name": t.spec["name"],
        "image": t.spec.get("image", ""),
        "imageID": t.image_id or f"capstan://{t.spec.get('image', '')}",
        "restartCount": t.restart_count,
        "ready": bool(inst and inst.ready),
        "started": bool(inst and inst.started),
    }
    if inst:
        s["state"] = {"running": {"startedAt": rfc3339(inst.started_at)}}
        s["containerID"] = container_id(pod_uid, t)
    elif t.done:
        s["state"] = t.last_state
        s["containerID"] = t.last_state["terminated"]["containerID"]
    else:
        reason, message = t.waiting
        s["state"] = {"waiting": {"reason": reason, **({"message": message} if message else {})}}
    if t.last_state and not t.done:
        s["lastState"] = t.last_state
    elif t.done and t.restart_count:
        s["lastState"] = {}
    return s


def _condition(type_: str, ok: bool, reason: str = "") -> dict:
    c = {"type": type_, "status": "True" if ok else "False"}
    if reason and not ok:
        c["reason"] = reason
    return c


def pod_status(
    *, pod_uid: str, phase: str, host_ip: str, pod_ip: str, start_time: str, tracks: Iterable[Track]
) -> dict:
    tracks = list(tracks)
    inits = [t for t in tracks if t.init]
    mains = [t for t in tracks if not t.init]
    initialized = all(t.done for t in inits)
    ready = phase == "Running" and all(t.instance and t.instance.ready for t in mains)
    not_ready_reason = "PodCompleted" if phase in ("Succeeded", "Failed") else "ContainersNotReady"
    conditions = [
        _condition("PodReadyToStartContainers", True),
        _condition("Initialized", initialized, "ContainersNotInitialized"),
        _condition("ContainersReady", ready, not_ready_reason),
        _condition("Ready", ready, not_ready_reason),
    ]
    st = {
        "phase": phase,
        "hostIP": host_ip,
        "hostIPs": [{"ip": host_ip}],
        "podIP": pod_ip,
        "podIPs": [{"ip": pod_ip}],
        "startTime": start_time,
        "conditions": conditions,
        "containerStatuses": [container_status(pod_uid, t) for t in mains],
    }
    if inits:
        st["initContainerStatuses"] = [container_status(pod_uid, t) for t in inits]
    return st


def stamp_transitions(conditions: list[dict], previous_status: dict, now: str) -> None:
    """Set each condition's lastTransitionTime: kept from `previous_status` while the condition's
    status is unchanged, else `now`."""
    previous = {c["type"]: c for c in previous_status.get("conditions") or []}
    for c in conditions:
        old = previous.get(c["type"])
        c["lastTransitionTime"] = (
            old["lastTransitionTime"]
            if old and old["status"] == c["status"] and old.get("lastTransitionTime")
            else now
        )
