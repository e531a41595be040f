"""The hook through which the transport reports each HTTP exchange (metrics live above)."""

from __future__ import annotations

from typing import Protocol


class RequestObserver(Protocol):
    """Receives one call per HTTP exchange (metrics live above this layer)."""

    def request_done(self, registry: str, method: str, status: str, seconds: float) -> None: ...

    def ratelimit_seen(self, registry: str, remaining: int, limit: int | None) -> None: ...

    def request_retried(self, registry: str, reason: str) -> None: ...

    def registry_paused(self, registry: str, until: float | None) -> None:
        """Requests to `registry` wait until unix time `until` (rate limit); None: resumed."""


class NullObserver:
    def request_done(self, registry: str, method: str, status: str, seconds: float) -> None:
        pass

    def ratelimit_seen(self, registry: str, remaining: int, limit: int | None) -> None:
        pass

    def request_retried(self, registry: str, reason: str) -> None:
        pass

    def registry_paused(self, registry: str, until: float | None) -> None:
        pass
