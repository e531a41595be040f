"""When a rule runs next: a fixed interval or a cron schedule, plus a small random jitter.

Pure functions of the rule's timing and the clock (no I/O), so they are unit-tested directly.
Intervals run from the start of the previous run (a run longer than its interval is followed
at once by the next, never overlapped); cron times are in the local time zone.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta

from croniter import croniter

JITTER_FRACTION = 0.1  # of the interval ...
MAX_JITTER = 30.0  # ... but never more than this many seconds


@dataclass(frozen=True)
class Timing:
    interval: timedelta | None = None
    schedule: str | None = None

    def period(self, now: float) -> float:
        """Seconds between two runs (for cron: between the next two firings after `now`)."""
        if self.interval is not None:
            return self.interval.total_seconds()
        first = self._cron_next(now)
        return self._cron_next(first) - first

    def next_run(self, last_start: float, now: float) -> float:
        """Unix time of the next run, without jitter."""
        if self.interval is not None:
            return max(now, last_start + self.interval.total_seconds())
        return self._cron_next(now)

    def _cron_next(self, after: float) -> float:
        assert self.schedule is not None
        base = datetime.fromtimestamp(after).astimezone()
        return float(croniter(self.schedule, base).get_next(float))

    def describe(self) -> str:
        if self.interval is not None:
            return f"every {_seconds(self.interval.total_seconds())}"
        return f"cron {self.schedule!r}"


def jitter(period: float, rng: random.Random | None = None) -> float:
    """A random delay spreading runs of many rules (and many instances) apart."""
    return (rng or random).uniform(0, min(period * JITTER_FRACTION, MAX_JITTER))


def _seconds(value: float) -> str:
    """90 -> 1m30s, 5400 -> 1h30m: the way sync.yaml writes durations."""
    if value < 60:
        return f"{value:g}s"
    rest, text = int(value), ""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if rest >= size:
            text += f"{rest // size}{unit}"
            rest %= size
    return text
