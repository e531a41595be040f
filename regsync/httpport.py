"""The daemon's listening port holds against its clients: no HTTP client can stop syncing.

- Deadlines: a connection that has not sent a whole request head within ``idle`` seconds of
  connecting, or of its last response, is closed (aiohttp's keep-alive timer; it fires while
  the handler waits for a request, so an idle socket and a half-sent head are both closed).
- A client that stops reading its answers (what waits to be sent does not shrink for a
  whole deadline) is dropped: a handler blocked writing to it would hold its slot for ever.
- A cap on concurrent connections, well below the file limit: past it a new connection is
  reset at once (never served, never queued), so the descriptors syncing needs stay free.
- The soft file limit is raised to the hard one at start (systemd's default soft limit is
  1024).
- ``socket.accept() out of system resource`` (and the refusals) are logged at most once a
  minute, with the count since the last line: a flood cannot grow the log.

``REGSYNC_HTTP_IDLE_TIMEOUT`` (seconds, default 10) and ``REGSYNC_HTTP_MAX_CONNECTIONS``
(default 256, at most a quarter of the file limit) override the defaults.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from regsync.oci.ref import printable

if TYPE_CHECKING:
    from aiohttp import web

log = logging.getLogger(__name__)

IDLE_TIMEOUT = 10.0  # seconds for a request head, from connect or from the last response
MAX_CONNECTIONS = 256
LOG_EVERY = 60.0  # seconds between two lines about the same flood
BACKLOG = 128
_ACCEPT_ERROR = "socket.accept() out of system resource"


@dataclass(frozen=True)
class PortLimits:
    idle: float = IDLE_TIMEOUT
    max_connections: int = MAX_CONNECTIONS

    @classmethod
    def from_env(cls, env: Mapping[str, str], file_limit: int) -> PortLimits:
        from regsync.backends.registry.retry import env_number  # with the daemon, not the CLI

        cap = int(env_number(env, "REGSYNC_HTTP_MAX_CONNECTIONS", MAX_CONNECTIONS, minimum=1))
        return cls(
            idle=env_number(env, "REGSYNC_HTTP_IDLE_TIMEOUT", IDLE_TIMEOUT, minimum=0.01),
            max_connections=max(1, min(cap, file_limit // 4)),
        )


def raise_file_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit; returns the soft limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft == resource.RLIM_INFINITY or soft >= target:
        return soft if soft != resource.RLIM_INFINITY else target
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError) as exc:
        log.warning("cannot raise the open-file limit from %d to %d: %s", soft, target, exc)
        return soft
    log.debug("open-file limit raised from %d to %d", soft, target)
    return target


class Throttled:
    """One log line per ``every`` seconds for a repeated event, with the count in between."""

    def __init__(
        self, message: str, every: float = LOG_EVERY, logger: logging.Logger = log
    ) -> None:
        self.message = message
        self.every = every
        self.logger = logger
        self._last = -every
        self._count = 0

    def hit(self, detail: object = "") -> None:
        self._count += 1
        now = time.monotonic()
        if now - self._last >= self.every:
            self.logger.warning(
                "%s (%d times since the last report) %s", self.message, self._count, detail
            )
            self._last, self._count = now, 0


class _Refused(asyncio.Protocol):
    """A connection over the cap: reset at once, nothing read or sent."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.abort()  # type: ignore[attr-defined]


class _Counted(asyncio.Protocol):
    """aiohttp's handler, counted from its accept until its connection is lost.

    Counted at once, not at ``connection_made``: one readiness event accepts a whole batch
    before any of them is made, and the cap must hold within the batch too. A connection
    whose transport never came up is uncounted a second later."""

    def __init__(self, gate: Gate, handler: asyncio.Protocol) -> None:
        self._gate = gate
        self._handler = handler
        self._made = self._lost = self._forwarded = False
        self._transport: asyncio.WriteTransport | None = None
        self._unsent = 0  # bytes waiting to be sent at the last look
        gate.live += 1
        asyncio.get_running_loop().call_later(1.0, self._never_made)

    def _watch(self) -> None:
        """A client that stops reading its answers: what waits to be sent has not shrunk
        in a whole deadline, so the connection is dropped (the handler would wait on it
        for ever, one of the capped connections gone)."""
        if self._lost or self._transport is None:
            return
        unsent = self._transport.get_write_buffer_size()
        if unsent and unsent >= self._unsent:
            self._gate.stalled.hit()
            self._transport.abort()
            return
        self._unsent = unsent
        asyncio.get_running_loop().call_later(self._gate.idle, self._watch)

    def _never_made(self) -> None:
        if not self._made and not self._lost:
            self._lost = True
            self._gate.live -= 1

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._made = True
        if self._lost:  # uncounted already (a loop a second late): close it
            transport.close()
            return
        self._forwarded = True
        self._transport = transport  # type: ignore[assignment]
        asyncio.get_running_loop().call_later(self._gate.idle, self._watch)
        self._handler.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._lost:
            self._lost = True
            self._gate.live -= 1
        if self._forwarded:
            self._handler.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self._handler.data_received(data)

    def eof_received(self) -> bool | None:
        return self._handler.eof_received()

    def pause_writing(self) -> None:
        self._handler.pause_writing()

    def resume_writing(self) -> None:
        self._handler.resume_writing()


class Gate:
    """The listening socket's protocol factory: aiohttp's handler under the cap, else reset."""

    def __init__(self, server: web.Server, cap: int, idle: float) -> None:
        self.server = server
        self.cap = cap
        self.idle = idle
        self.live = 0
        self.refused = Throttled(f"HTTP port: over {cap} connections, refusing new ones")
        self.stalled = Throttled("HTTP port: dropped a client that stopped reading its answers")

    def __call__(self) -> asyncio.Protocol:
        if self.live >= self.cap:
            self.refused.hit()
            return _Refused()
        return _Counted(self, self.server())


def quiet_accept_errors(loop: asyncio.AbstractEventLoop) -> None:
    """Log the loop's accept failures (out of descriptors) at most once a minute."""
    throttled = Throttled(f"HTTP port: {_ACCEPT_ERROR}")
    previous = loop.get_exception_handler()

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if str(context.get("message", "")).startswith(_ACCEPT_ERROR):
            throttled.hit(context.get("exception") or "")
        elif previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(handler)


class _MalformedRequests(logging.Filter):
    """aiohttp logs every malformed request (bad header, line too long, not HTTP at all) with
    a traceback: any client of the port could fill the disk with them. They become one line
    a minute with the count and the last reason; any other record goes on to our log."""

    def __init__(self) -> None:
        super().__init__()
        self.throttled = Throttled("HTTP port: refused malformed requests")

    def filter(self, record: logging.LogRecord) -> bool:
        from aiohttp.http_exceptions import HttpProcessingError

        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            reason = str(exc.message).strip() or type(exc).__name__
            self.throttled.hit(f"(last: {printable(reason.splitlines()[0][:200])})")
        else:
            log.handle(record)
        return False  # the logger has no handlers: everything goes through the lines above


def request_logger() -> logging.Logger:
    """The logger aiohttp's request handling writes to: never registered, so it reaches
    nothing but its filter."""
    logger = logging.Logger("regsync.httpport.requests")
    logger.addFilter(_MalformedRequests())
    return logger


class Listener:
    """The bound port and aiohttp's runner; ``cleanup`` closes both."""

    def __init__(self, runner: web.AppRunner, server: asyncio.Server) -> None:
        self.runner = runner
        self.server = server

    async def cleanup(self) -> None:
        self.server.close()
        await self.runner.cleanup()


async def listen(app: web.Application, host: str, port: int, limits: PortLimits) -> Listener:
    """Serve ``app`` on host:port behind the gate; OSError when the address cannot be bound."""
    from aiohttp import web

    runner = web.AppRunner(
        app,
        access_log=None,
        handle_signals=False,
        keepalive_timeout=limits.idle,
        logger=request_logger(),
    )
    await runner.setup()
    assert runner.server is not None
    gate = Gate(runner.server, limits.max_connections, limits.idle)
    loop = asyncio.get_running_loop()
    quiet_accept_errors(loop)
    try:
        server = await loop.create_server(gate, host, port, backlog=BACKLOG, reuse_address=True)
    except BaseException:
        await runner.cleanup()
        raise
    return Listener(runner, server)
