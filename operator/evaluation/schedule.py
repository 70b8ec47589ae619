"""An Evaluation with spec.schedule: when its next run is due, and the bounded run history.

Pure: times are passed in. Like a CronJob, runs missed while the operator was down are not
made up one by one: the newest missed time runs once."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from capstan_api import cron
from capstan_api.evaluation import HISTORY_LIMIT

FORMAT = "%Y-%m-%dT%H:%M:%SZ"
MAX_CATCH_UP = 10_000  # fire times walked to find the newest missed one


def parse_time(text: str) -> datetime:
    return datetime.strptime(text, FORMAT).replace(tzinfo=UTC)


def fmt(t: datetime) -> str:
    return t.astimezone(UTC).strftime(FORMAT)


@dataclass(frozen=True)
class Due:
    run_at: datetime | None
    """run_at: the schedule time to run now (the newest one not after `now`); None when not due."""
    next_at: datetime
    """next_at: the first schedule time after `now`."""


def due(schedule: str, base: datetime, now: datetime) -> Due:
    """`base`: the schedule time of the last run (or when the first, unscheduled run started)."""
    s = cron.parse(schedule)
    t = cron.next_after(s, base)
    if t > now:
        return Due(None, t)
    for _ in range(MAX_CATCH_UP):
        after = cron.next_after(s, t)
        if after > now:
            return Due(t, after)
        t = after
    now_minute = now.replace(second=0, microsecond=0)
    return Due(now_minute, cron.next_after(s, now_minute))


def add_run(
    history: list[dict], status: dict, model_uri: str | None, scheduled: str, time: str
) -> list[dict]:
    """`history` with this run appended (from the EvaluationStatus fields `status`), the oldest
    dropped past HISTORY_LIMIT."""
    run = {
        "time": time,
        "modelUri": model_uri,
        "passed": status.get("passed"),
        "failedGates": [g["metric"] for g in status.get("gates", []) if not g["passed"]],
        "scheduled": scheduled,
    }
    return [*history, run][-HISTORY_LIMIT:]
