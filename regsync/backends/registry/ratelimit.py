"""Pull quotas: RateLimit headers, and pausing a registry's pulls while its quota is low.

Docker Hub announces its pull quota on manifest responses (``ratelimit-limit: 100;w=21600``,
``ratelimit-remaining: 76;w=21600``; ``w`` is the window in seconds). When the remaining count
falls below the configured floor, manifest GETs (the requests Hub counts as pulls) wait until the
window has passed; HEADs (free) and blob reads carry on. The pause is logged once and reported to
the observer, which shows it in ``/status``.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

log = logging.getLogger(__name__)

# Few digits: the registry writes these, and int() refuses over 4,300 digits (that was an
# internal error on every response of a registry sending a long one).
_COUNT = re.compile(r"\s*([0-9]{1,12})(?![0-9])")
_WINDOW = re.compile(r";\s*w\s*=\s*([0-9]{1,12})(?![0-9])")
DEFAULT_PAUSE = 60.0  # when a response says nothing about its window
MAX_PAUSE = 24 * 3600.0  # a longer window or reset is the registry's error: wait a day at most


@dataclass(frozen=True)
class Quota:
    """One response's view of the pull quota."""

    remaining: int
    limit: int | None = None
    window: float | None = None  # seconds, from `;w=`
    reset: float | None = None  # seconds until the window resets, from `ratelimit-reset`

    @property
    def pause(self) -> float:
        """How long to wait for the quota to come back."""
        wait = self.reset if self.reset is not None else (self.window or DEFAULT_PAUSE)
        return min(wait, MAX_PAUSE)


def parse_quota(headers: Mapping[str, str]) -> Quota | None:
    """The quota in a response's RateLimit headers (names are case-insensitive), if any."""
    remaining = headers.get("RateLimit-Remaining")
    if remaining is None or not (match := _COUNT.match(remaining)):
        return None
    limit_match = _COUNT.match(headers.get("RateLimit-Limit", ""))
    window = _WINDOW.search(remaining) or _WINDOW.search(headers.get("RateLimit-Limit", ""))
    reset = _COUNT.match(headers.get("RateLimit-Reset", ""))
    return Quota(
        remaining=int(match.group(1)),
        limit=int(limit_match.group(1)) if limit_match else None,
        window=float(window.group(1)) if window else None,
        reset=float(reset.group(1)) if reset else None,
    )


class PauseObserver(Protocol):
    def registry_paused(self, registry: str, until: float | None) -> None: ...


class PullGate:
    """Holds back one registry's pulls while its remaining quota is under ``floor``."""

    def __init__(
        self,
        registry: str,
        floor: int | None,
        observer: PauseObserver,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.registry = registry
        self.floor = floor
        self._observer = observer
        self._clock = clock
        self._wall = wall
        self._sleep = sleep
        self._until: float | None = None  # monotonic time the current pause ends
        self.pauses = 0

    @property
    def paused(self) -> bool:
        return self._until is not None

    def seen(self, quota: Quota) -> None:
        """Note a response's quota; start a pause when it is under the floor."""
        if self.floor is None or quota.remaining >= self.floor or self._until is not None:
            return
        seconds = quota.pause
        self._until = self._clock() + seconds
        self.pauses += 1
        log.warning(
            "registry %s: pull quota low (%d remaining, min_remaining %d): pausing source "
            "pulls for %s until the window resets",
            self.registry,
            quota.remaining,
            self.floor,
            _duration(seconds),
        )
        self._observer.registry_paused(self.registry, self._wall() + seconds)

    async def wait(self) -> None:
        """Return when a pull may be sent (at once unless a pause is running)."""
        while self._until is not None:
            left = self._until - self._clock()
            if left <= 0:
                self._until = None
                log.info("registry %s: pull pause over, resuming", self.registry)
                self._observer.registry_paused(self.registry, None)
                return
            await self._sleep(min(left, 60.0))


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"
