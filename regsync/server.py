"""The daemon's HTTP endpoints (aiohttp): /metrics, /healthz, /readyz, /status.

/metrics  Prometheus text format
/healthz  200 while the process runs
/readyz   200 once the config is loaded and every rule's first run finished, else 503
/status   JSON: per rule last run, result, counts, next run, last error; per registry
          up / rate limit / pause. No credentials ever appear there.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any, Protocol

from regsync.secrets import redact_data

if TYPE_CHECKING:  # aiohttp.web is imported by the daemon only: `once` starts faster
    from aiohttp import web

    from regsync.httpport import Listener

DEFAULT_LISTEN = "127.0.0.1:9469"
STATUS_EVERY = 0.5  # seconds a built /status page is served again
LISTEN_ENV = "REGSYNC_LISTEN"  # `serve` without --listen, and the image's HEALTHCHECK
INDEX = """regsync
  /metrics  Prometheus metrics
  /healthz  liveness
  /readyz   readiness (every rule's first run done)
  /status   JSON status
"""


class StatusSource(Protocol):
    def ready(self) -> bool: ...

    def status(self) -> dict[str, Any]: ...


class MetricsSource(Protocol):
    def render(self) -> bytes: ...


def parse_listen(text: str) -> tuple[str, int]:
    """HOST:PORT (IPv6 as [::1]:PORT) -> (host, port); ValueError with a fit message."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(
            f"--listen (or ${LISTEN_ENV}) {text!r}: expected HOST:PORT, e.g. {DEFAULT_LISTEN}"
        )
    host = host.strip("[]")
    if not host:  # never all interfaces by omission: the endpoints are unauthenticated
        raise ValueError(
            f"--listen (or ${LISTEN_ENV}) {text!r}: name the host, e.g. 127.0.0.1:{port}"
            f" (this machine only) or 0.0.0.0:{port} (every interface)"
        )
    return host, int(port)


def _status_text(data: dict[str, Any]) -> str:
    return json.dumps(redact_data(data), indent=2) + "\n"  # errors may quote a registry


class _StatusPage:
    """/status, built at most once per ``STATUS_EVERY`` seconds however often it is asked:
    the snapshot is taken on the loop (its lists are bounded: ``result.Lines``), masking and
    encoding run in a thread, and requests arriving meanwhile share that one build, so a
    client asking in a loop cannot keep the loop (and /healthz) busy."""

    def __init__(self, daemon: StatusSource) -> None:
        self._daemon = daemon
        self._built = -STATUS_EVERY
        self._text = ""
        self._building: Any = None  # the asyncio.Task of the build in progress

    async def text(self) -> str:
        import asyncio  # loads with the daemon, not the CLI
        import time

        if time.monotonic() - self._built < STATUS_EVERY:
            return self._text
        if self._building is None:
            snapshot = self._daemon.status()
            self._building = asyncio.ensure_future(asyncio.to_thread(_status_text, snapshot))
        building = self._building
        try:
            text: str = await asyncio.shield(building)
        finally:
            if building.done() and self._building is building:
                self._building = None
        self._text, self._built = text, time.monotonic()
        return text


def make_app(daemon: StatusSource, metrics: MetricsSource) -> web.Application:
    from aiohttp import web

    async def metrics_view(request: web.Request) -> web.Response:
        from prometheus_client import CONTENT_TYPE_LATEST  # loads with the daemon, not the CLI

        return web.Response(body=metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(request: web.Request) -> web.Response:
        if daemon.ready():
            return web.Response(text="ready\n")
        return web.Response(status=503, text="not ready\n")

    status_page = _StatusPage(daemon)

    async def status(request: web.Request) -> web.Response:
        text = await status_page.text()
        return web.Response(text=text, content_type="application/json")

    async def index(request: web.Request) -> web.Response:
        return web.Response(text=INDEX)

    app = web.Application()
    app.router.add_get("/", index)
    app.router.add_get("/metrics", metrics_view)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/status", status)
    return app


async def start(app: web.Application, host: str, port: int) -> Listener:
    """Serve `app` on host:port behind the port's deadlines and connection cap
    (``regsync.httpport``); OSError when the address cannot be bound."""
    from regsync.httpport import PortLimits, listen, raise_file_limit

    limits = PortLimits.from_env(os.environ, raise_file_limit())
    return await listen(app, host, port, limits)
