"""status.stages: what each preparation stage's Job and its workers' progress files say.

A stage's documentsIn/Out are the sums over its workers' `progress-<index>.json` (a file not
written yet counts as 0). One reconcile reads at most READS_PER_POLL of them, the stage in flight
first: with more workers than that it reads the ones read longest ago (never read first) and sums
the others from earlier reads. Those are kept in this process only, so after an operator restart
a stage with more workers dips and catches up within workers / READS_PER_POLL polls. A file is
read again until it is final: its worker says done, or it was read after the Job completed."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pydantic import ValidationError

from capstan_api.common import describe_validation_error
from capstan_api.preparation import Stage, StageProgress, progress_uri
from capstan_operator import objectstore
from capstan_operator.config import OperatorConfig
from capstan_operator.jobs import job_condition

READS_PER_POLL = 64

# Stage phases in status (capstan_api.status.StageStatus).
PENDING, RUNNING, COMPLETE, FAILED = "Pending", "Running", "Complete", "Failed"

Key = tuple[str, str]  # (Dataset uid, progress file URI)


@dataclass(frozen=True)
class _Read:
    documents_in: int
    documents_out: int
    final: bool
    tick: int


class ProgressCache:
    """The progress files read before, so that a poll re-reads only the stalest ones."""

    def __init__(self) -> None:
        self._reads: dict[Key, _Read] = {}
        self._tick = 0
        self._lock = threading.Lock()  # the controller's workers reconcile different Datasets at once

    def refresh(
        self, keys: Sequence[Key], budget: int, read: Callable[[str], StageProgress | None], final: bool
    ) -> int:
        """Read up to `budget` of the files not final yet, stalest first; returns how many."""
        with self._lock:
            self._tick += 1
            tick = self._tick
            stale = [k for k in keys if not (k in self._reads and self._reads[k].final)]
            stale.sort(key=lambda k: self._reads[k].tick if k in self._reads else -1)  # stable: by index
        chosen = stale[: max(budget, 0)]
        for key in chosen:
            p = read(key[1])
            entry = (
                _Read(p.documents_in, p.documents_out, final or p.done, tick)
                if p
                else _Read(0, 0, final, tick)
            )
            with self._lock:
                self._reads[key] = entry
        return len(chosen)

    def totals(self, keys: Sequence[Key]) -> tuple[int, int]:
        with self._lock:
            reads = [self._reads[k] for k in keys if k in self._reads]
        return sum(r.documents_in for r in reads), sum(r.documents_out for r in reads)

    def known(self, keys: Sequence[Key]) -> bool:
        with self._lock:
            return any(k in self._reads for k in keys)

    def settled(self, keys: Sequence[Key]) -> bool:
        with self._lock:
            return all(k in self._reads and self._reads[k].final for k in keys)

    def forget(self, keys: Sequence[Key]) -> None:
        with self._lock:
            for k in keys:
                self._reads.pop(k, None)

    def clear(self) -> None:
        with self._lock:
            self._reads.clear()


CACHE = ProgressCache()


def read_progress(uri: str, cfg: OperatorConfig) -> StageProgress | None:
    """One worker's progress file, or None before its first write."""
    doc = objectstore.read_json(uri, cfg, "spec.output.uri")
    if doc is None:
        return None
    try:
        return StageProgress.model_validate(doc)
    except ValidationError as exc:  # looked at again slowly, like any unreadable status file
        raise objectstore.Unreadable(f"{uri}: {describe_validation_error(exc, 'progress')}") from exc


def stage_phase(job: dict | None) -> str:
    if job is None:
        return PENDING
    if job_condition(job, "Failed"):
        return FAILED
    if job_condition(job, "Complete"):
        return COMPLETE
    return RUNNING


def stage_status(
    uid: str,
    stages: Sequence[Stage],
    jobs: dict[str, dict | None],
    old: Sequence[dict],
    output_uri: str,
    read: Callable[[str], StageProgress | None],
    cache: ProgressCache = CACHE,
) -> list[dict]:
    """status.stages (wire names) in plan order, from each stage's Job (None: not created yet),
    the stored entries `old` and the workers' progress files."""
    previous = {s.get("name"): s for s in old}
    out: dict[str, dict] = {}
    budget = READS_PER_POLL
    # The stage in flight takes the read budget first; completed ones settle with what is left.
    order = sorted(stages, key=lambda s: stage_phase(jobs.get(s.name)) != RUNNING)
    over = all(stage_phase(jobs.get(s.name)) == COMPLETE for s in stages) or any(
        stage_phase(jobs.get(s.name)) == FAILED for s in stages
    )
    for stage in order:
        job = jobs.get(stage.name)
        phase = stage_phase(job)
        entry = {
            "name": stage.name,
            "workers": stage.workers,
            "workersDone": int(((job or {}).get("status") or {}).get("succeeded") or 0),
            "documentsIn": 0,
            "documentsOut": 0,
            "phase": phase,
        }
        keys = [(uid, progress_uri(output_uri, stage.name, i)) for i in range(stage.workers)]
        prev = previous.get(stage.name) or {}
        if phase == COMPLETE and prev.get("phase") == COMPLETE and not cache.known(keys):
            # Settled in an earlier poll (or before a restart): status already holds its counts.
            entry["documentsIn"] = prev.get("documentsIn", 0)
            entry["documentsOut"] = prev.get("documentsOut", 0)
        elif phase != PENDING:
            budget -= cache.refresh(keys, budget, read, final=phase == COMPLETE)
            entry["documentsIn"], entry["documentsOut"] = cache.totals(keys)
            if over or (phase == COMPLETE and cache.settled(keys)):
                cache.forget(keys)
        out[stage.name] = entry
    return [out[s.name] for s in stages]
