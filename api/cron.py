"""The 5-field cron syntax of Kubernetes CronJobs, in UTC: `minute hour day-of-month month
day-of-week`, each `*`, a number, a range `a-b`, a list `a,b` and a step `*/n` or `a-b/n`;
day-of-week 0-7 (0 and 7 are Sunday); three-letter month and day names; and the macros @hourly,
@daily (@midnight), @weekly, @monthly, @yearly (@annually). As in cron, when both day fields are
restricted a day matching either runs.

No cron library is installed beside the operator (croniter is unmaintained since 2024), and this
is all a schedule needs: `parse` to validate a spec, `next_after` to requeue.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

MACROS = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}
MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
DAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
# (name, low, high, names mapped to numbers)
FIELDS = (
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day of month", 1, 31, {}),
    ("month", 1, 12, {n: i + 1 for i, n in enumerate(MONTHS)}),
    ("day of week", 0, 7, {n: i for i, n in enumerate(DAYS)}),
)
FIVE_FIELDS = "5 fields (minute hour day-of-month month day-of-week)"
SEARCH_DAYS = 366 * 5  # "30 0 31 2 *" (31 February) never runs: say so instead of looping


@dataclass(frozen=True)
class Schedule:
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]
    """weekdays: 0 = Sunday (7 folded into 0)."""
    any_day: bool
    any_weekday: bool

    def day_matches(self, t: datetime) -> bool:
        dom, dow = t.day in self.days, (t.isoweekday() % 7) in self.weekdays
        if self.any_day or self.any_weekday:
            return dom and dow
        return dom or dow


def _value(text: str, low: int, high: int, names: dict[str, int], field: str) -> int:
    v = names.get(text.lower())
    if v is None:
        if not text.isdigit():
            raise ValueError(f"{field}: {text!r} is not a number")
        v = int(text)
    if not low <= v <= high:
        raise ValueError(f"{field}: {v} is outside {low}-{high}")
    return v


def _field(text: str, field: str, low: int, high: int, names: dict[str, int]) -> frozenset[int]:
    out: set[int] = set()
    for part in text.split(","):
        rng, _, step_text = part.partition("/")
        step = 1
        if step_text:
            if not step_text.isdigit() or int(step_text) < 1:
                raise ValueError(f"{field}: step {step_text!r} must be a positive number")
            step = int(step_text)
        if rng == "*":
            a, b = low, high
        elif "-" in rng:
            lo, hi = rng.split("-", 1)
            a, b = _value(lo, low, high, names, field), _value(hi, low, high, names, field)
            if a > b:
                raise ValueError(f"{field}: range {rng!r} runs backwards")
        else:
            a = _value(rng, low, high, names, field)
            b = high if step_text else a
        out.update(range(a, b + 1, step))
    return frozenset(out)


def parse(expr: str) -> Schedule:
    """ValueError naming the field for anything but the syntax above."""
    text = MACROS.get(expr.strip().lower(), expr.strip())
    parts = text.split()
    if len(parts) != 5:
        raise ValueError(f"{expr!r}: expected {FIVE_FIELDS}, got {len(parts)}")
    sets = [_field(p, name, lo, hi, names) for p, (name, lo, hi, names) in zip(parts, FIELDS, strict=True)]
    weekdays = frozenset(d % 7 for d in sets[4])
    # As Vixie cron: a day field starting with "*" (also "*/2") does not restrict for the OR rule.
    return Schedule(
        sets[0], sets[1], sets[2], sets[3], weekdays, parts[2].startswith("*"), parts[4].startswith("*")
    )


def next_after(expr: str | Schedule, after: datetime) -> datetime:
    """The first minute strictly after `after` (timezone-aware, compared in its zone) the
    schedule fires at."""
    s = parse(expr) if isinstance(expr, str) else expr
    t = after.replace(second=0, microsecond=0) + timedelta(minutes=1)
    end = t + timedelta(days=SEARCH_DAYS)
    while t < end:
        if t.month not in s.months or not s.day_matches(t):
            t = (t + timedelta(days=1)).replace(hour=0, minute=0)
            continue
        if t.hour not in s.hours:
            t = (t + timedelta(hours=1)).replace(minute=0)
            continue
        if t.minute in s.minutes:
            return t
        t += timedelta(minutes=1)
    raise ValueError(f"schedule never fires within {SEARCH_DAYS // 366} years")
