"""What the reconcilers share: the Outcome they return, a status draft that writes only what
changed (conditions through `conditions.py`: only when they change, with observedGeneration),
and the summary of a failed workload pod (exit code, reason, last log lines)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from capstan_operator import conditions, kube
from capstan_operator.api import status as st
from capstan_operator.api.common import now_rfc3339

LOG_TAIL_LINES = 20
FINISHED = ("Succeeded", "EarlyStopped", "Failed", "Ready")


@dataclass
class Outcome:
    status: dict[str, Any] = field(default_factory=dict)
    """status is a merge patch for the status subresource (wire names); empty: nothing changed."""
    events: list[tuple[str, str, str]] = field(default_factory=list)
    """events are (type Normal|Warning, reason, message) to record on the resource."""
    requeue_after: float | None = None
    """requeue_after is when to look again (seconds); None: only on the next change."""


class StatusDraft:
    """The status a reconcile computes, compared against the stored one at the end."""

    def __init__(self, body: dict):
        self.old: dict[str, Any] = dict(body.get("status") or {})
        self.generation = int(body["metadata"].get("generation") or 0)
        self.fields: dict[str, Any] = {}
        self.conditions = [dict(c) for c in self.old.get("conditions") or []]
        self._conditions_changed = False
        self.events: list[tuple[str, str, str]] = []

    def get(self, key: str, default: Any = None) -> Any:
        return self.fields.get(key, self.old.get(key, default))

    def set(self, **fields: Any) -> StatusDraft:
        self.fields.update(fields)
        return self

    def condition(self, type_: str, status: str, reason: str, message: str) -> StatusDraft:
        """Set a condition; lastTransitionTime moves only when its status flips."""
        self.conditions, changed = conditions.set_condition(
            self.conditions, type_, status, reason, message, self.generation
        )
        self._conditions_changed |= changed
        return self

    def find(self, type_: str) -> dict | None:
        return conditions.find(self.conditions, type_)

    def clear(self, *types: str) -> StatusDraft:
        for type_ in types:
            self.conditions, changed = conditions.remove_condition(self.conditions, type_)
            self._conditions_changed |= changed
        return self

    def event(self, type_: str, reason: str, message: str) -> StatusDraft:
        self.events.append((type_, reason, message))
        return self

    def phase(self, phase: str, message: str, reason: str = "") -> StatusDraft:
        """Set the phase and summary; a change of phase is recorded as an Event."""
        if phase != self.old.get("phase") and phase != self.fields.get("phase"):
            warn = phase in ("Failed",)
            self.event("Warning" if warn else "Normal", reason or phase, message)
        return self.set(phase=phase, message=message)

    def fail(self, reason: str, message: str, companion: str = "", finished: bool = True) -> StatusDraft:
        """Phase Failed with a Failed condition; `companion` (the condition a user waits on, e.g.
        Ready) turns False; `finished` stamps completionTime once (a Deployment can recover)."""
        self.condition(st.FAILED, "True", reason, message)
        if companion:
            self.condition(companion, "False", reason, message.split("\n", 1)[0])
        if finished:
            self.set(completionTime=self.get("completionTime") or now_rfc3339())
        return self.phase("Failed", message, reason)

    def finished(self, *phases: str) -> bool:
        """True when the stored status already reached one of `phases` for this generation."""
        return self.old.get("phase") in phases and self.old.get("observedGeneration") == self.generation

    def outcome(self, requeue_after: float | None = None) -> Outcome:
        patch = {k: v for k, v in self.fields.items() if self.old.get(k) != v}
        if self._conditions_changed:
            patch["conditions"] = self.conditions
        if self.old.get("observedGeneration") != self.generation:
            patch["observedGeneration"] = self.generation
        return Outcome(status=patch, events=self.events, requeue_after=requeue_after)


def seconds_since(rfc3339: str | None) -> float:
    if not rfc3339:
        return 0.0
    t = datetime.strptime(rfc3339, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    return (datetime.now(UTC) - t).total_seconds()


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
            msg += ": ...\n" + tail
    return code, msg


def job_failure(job: dict, namespace: str, job_name: str) -> str:
    """Why a failed Job failed: its last failed pod's exit code, reason and log tail, else the
    Job's own condition message (e.g. a deadline or a pod failure policy)."""
    pods = kube.list_("v1", "Pod", namespace, f"job-name={job_name}")
    failed = [p for p in pods if (p.get("status") or {}).get("phase") == "Failed"]
    if failed:
        return pod_failure(failed[-1])[1]
    return f"Job {job_name} failed: {(job_condition(job, 'Failed') or {}).get('message', '')}"
