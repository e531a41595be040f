"""Whether a registry is reachable this run, and how a failed connection is described.

A registry that stayed unreachable through a request's whole retry budget is marked down for the
rest of the run: its other requests fail at once with the same one line instead of each waiting
out its own retries, so the rules that need it fail fast and the other rules carry on. A new run
(the next `once`, or the daemon's next cycle) tries it again.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import ssl

import aiohttp

from regsync.errors import TlsError, TransportError, UnreachableError

log = logging.getLogger(__name__)


class Health:
    """One registry's reachability during one run."""

    def __init__(self, registry: str) -> None:
        self.registry = registry
        self._down: UnreachableError | None = None

    @property
    def down(self) -> bool:
        return self._down is not None

    def check(self) -> None:
        """Raise at once when the registry was found down earlier in this run."""
        if self._down is not None:
            raise UnreachableError(str(self._down), registry=self.registry, down=True)

    def mark_down(self, exc: UnreachableError) -> UnreachableError:
        """Mark the registry down (once); the error to raise: it says the registry is down.

        Logged as a warning: each rule that needed the registry reports it as its error."""
        if self._down is None:
            self._down = UnreachableError(
                f"registry {self.registry} is down: {_reason(str(exc), self.registry)}",
                registry=self.registry,
                down=True,
            )
            log.warning("%s (not tried again this run)", self._down)
        return UnreachableError(str(self._down), registry=self.registry, down=True)


def connect_error(registry: str, exc: BaseException) -> TransportError | None:
    """The typed error for a failure to connect at all, or None for other failures."""
    if (tls := _tls_cause(exc)) is not None:
        text = str(getattr(tls, "certificate_error", None) or tls).splitlines()[0][:200]
        upper = text.upper()
        if "WRONG_VERSION_NUMBER" in upper:
            hint = "is it plain HTTP? then set tls: http for it"
        elif "ALERT_BAD_CERTIFICATE" in upper or "CERTIFICATE_REQUIRED" in upper:
            hint = (
                f"it wants a client certificate: set registries.{registry}.client_cert/client_key"
            )
        else:
            hint = f"set registries.{registry}.ca_file to the CA that signed it"
        return TlsError(f"{registry}: TLS handshake failed ({text}): {hint}", registry=registry)
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        # A name that does not resolve will not resolve on the next try either: down at once.
        host = getattr(exc, "host", registry)
        return UnreachableError(
            f"{registry}: cannot resolve {host} ({_why(exc)}): check the host name",
            registry=registry,
            down=True,
        )
    if isinstance(exc, aiohttp.ClientConnectorError | aiohttp.ConnectionTimeoutError):
        return UnreachableError(f"{registry}: cannot connect ({_why(exc)})", registry=registry)
    return None


def _tls_cause(exc: BaseException) -> BaseException | None:
    """The TLS failure behind ``exc`` (aiohttp wraps late handshake alerts in OSErrors)."""
    seen: BaseException | None = exc
    for _ in range(4):
        if seen is None:
            return None
        if isinstance(seen, aiohttp.ClientSSLError | ssl.SSLError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _why(exc: BaseException) -> str:
    os_error = getattr(exc, "os_error", None)
    if isinstance(os_error, socket.gaierror):
        return str(os_error.strerror or os_error)
    if isinstance(os_error, OSError) and os_error.errno == errno.ECONNREFUSED:
        where = f"{getattr(exc, 'host', '')}:{getattr(exc, 'port', '')}"
        return f"connection refused by {where}: nothing listens there"
    if isinstance(os_error, OSError) and os_error.errno:
        return os.strerror(os_error.errno)  # asyncio's strerror is "Connect call failed (...)"
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return "connect timed out"
    return str(exc).splitlines()[0][:200] or type(exc).__name__


def _reason(text: str, registry: str) -> str:
    prefix = f"{registry}: "
    return text[len(prefix) :] if text.startswith(prefix) else text
