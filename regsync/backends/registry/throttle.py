"""A registry's request-rate cap (``registries.HOST.requests_per_second``).

A token bucket holding one token: request starts are spaced at least ``1 / rate`` seconds apart,
whoever sends them. The transport owns one per registry, and the run's pool one transport per
host, so every rule using the registry shares the cap. It sits beside the other limits, which
it does not replace: ``max_concurrency`` (requests in flight) and the rate-limit-header pauses
of source pulls (``ratelimit.PullGate``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable


class Throttle:
    """Spaces request starts ``1 / rate`` seconds apart; a None rate never waits."""

    def __init__(
        self,
        rate: float | None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.interval = 1.0 / rate if rate else 0.0
        self._clock, self._sleep = clock, sleep
        self._next = 0.0  # the earliest start of the next request

    async def wait(self) -> None:
        """Wait for this request's turn. Turns are handed out in call order, without a lock:
        each caller reserves the next free start before it sleeps (a cancelled wait leaves
        its turn unused, which only ever spaces requests further)."""
        if not self.interval:
            return
        now = self._clock()
        start = max(now, self._next)
        self._next = start + self.interval
        if start > now:
            await self._sleep(start - now)
