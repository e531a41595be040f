"""A fault-injection proxy: an aiohttp server on 127.0.0.1 in front of a real registry.

    with FaultProxy(registry.url) as proxy:                 # runs in its own thread
        proxy.add(Fault("reset", method="GET", path=r"/blobs/", times=2))
        proxy.randomly(0.02, seed=7)                        # or faults at random
        ... regsync talks to proxy.host ...
        proxy.fired                                         # [(fault kind, method, path), ...]

Faults: ``reset`` (connection dropped halfway through the body: the response's for a GET,
the request's for an upload), ``truncate`` (a chunked response that ends early, cleanly; an
upload forwarded with half its bytes),
``stall`` (half the body, then silence for ``stall`` seconds), ``status`` (answer ``status``
without forwarding; ``retry_after`` adds the header), ``corrupt`` (the body, response or
upload, with bytes flipped, same length). ``times`` fires the fault on the first N matching
requests; ``every`` on each Nth.

The Host header is forwarded as the proxy's own, so the registry's Location headers point back
at the proxy and upload sessions run through it too.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import aiohttp
from aiohttp import web

from .client import RegistryClient

KINDS = ("reset", "truncate", "stall", "status", "corrupt")
_HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "content-length", "te", "upgrade"}
)


@dataclass
class Fault:
    kind: str
    method: str = ""  # empty: any method
    path: str = ""  # regex searched in the path; empty: any path
    status: int = 503
    retry_after: str | None = None
    times: int | None = None  # fire on the first N matches (None: every match)
    every: int = 1  # fire on each Nth match
    stall: float = 30.0
    seen: int = field(default=0, init=False)
    fired: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}")

    def matches(self, method: str, path: str) -> bool:
        if self.method and method != self.method:
            return False
        return not self.path or re.search(self.path, path) is not None

    def take(self) -> bool:
        """Count one matching request; True when the fault fires on it."""
        self.seen += 1
        if self.times is not None and self.fired >= self.times:
            return False
        if self.seen % self.every:
            return False
        self.fired += 1
        return True


@dataclass
class RandomFaults:
    """Each request gets a fault with ``probability``; kinds drawn from ``kinds``, seeded."""

    probability: float
    seed: int
    kinds: tuple[str, ...] = ("reset", "truncate", "stall", "status", "corrupt")
    statuses: tuple[int, ...] = (500, 502, 503, 429)
    stall: float = 30.0
    _rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def draw(self) -> Fault | None:
        if self._rng.random() >= self.probability:
            return None
        kind = self._rng.choice(self.kinds)
        status = self._rng.choice(self.statuses)
        return Fault(
            kind, status=status, retry_after="0" if status == 429 else None, stall=self.stall
        )


class FaultProxy:
    """Forwards to ``upstream``, injecting the configured faults. Thread-safe enough to drive
    from the test thread (lists and counters are only appended/incremented)."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.faults: list[Fault] = []
        self.random: RandomFaults | None = None
        self.fired: list[tuple[str, str, str]] = []
        self.requests: list[tuple[str, str, int]] = []
        self.before_forward: Callable[[str, str], None] | None = None
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def add(self, fault: Fault) -> Fault:
        self.faults.append(fault)
        return fault

    def randomly(self, probability: float, seed: int, **options: Any) -> None:
        self.random = RandomFaults(probability, seed, **options)

    def clear(self) -> None:
        self.faults.clear()
        self.random = None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> FaultProxy:
        self._thread = threading.Thread(target=self._run, name="fault-proxy", daemon=True)
        self._thread.start()
        if not self._ready.wait(10) or self._error is not None:
            raise RuntimeError(f"fault proxy did not start: {self._error!r}")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # reported by start()
            self._error = exc
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        app = web.Application(client_max_size=1024**3)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.port = runner.addresses[0][1]
        async with aiohttp.ClientSession(auto_decompress=False) as session:
            self._session = session
            self._ready.set()
            await self._stop.wait()
        await runner.cleanup()

    async def _sleep(self, seconds: float) -> None:
        """A stall that ends early when the proxy stops."""
        assert self._stop is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)

    # -- requests --------------------------------------------------------------------------

    def _pick(self, method: str, path: str) -> Fault | None:
        for fault in self.faults:
            if fault.matches(method, path) and fault.take():
                return fault
        return self.random.draw() if self.random is not None else None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        method, path = request.method, request.path
        fault = self._pick(method, path)
        if fault is not None:
            self.fired.append((fault.kind, method, path))
        if fault is not None and fault.kind == "status":
            await request.read()
            self.requests.append((method, path, fault.status))
            headers = {"Retry-After": fault.retry_after} if fault.retry_after else {}
            body = b'{"errors":[{"code":"UNAVAILABLE","message":"injected fault"}]}'
            return web.Response(status=fault.status, body=body, headers=headers)
        body = await request.read()
        if fault is not None and body and fault.kind in ("reset", "stall"):
            # An upload broken off: the registry sees half the bytes, the client a dead socket.
            if fault.kind == "stall":
                await self._sleep(fault.stall)
            self.requests.append((method, path, 0))
            _abort(request)
            return web.Response(status=500)
        if fault is not None and body and fault.kind == "truncate":
            body = body[: len(body) // 2]  # the registry gets a short upload
        elif fault is not None and body and fault.kind == "corrupt":
            body = _flip(body)
        if fault is not None and body:
            fault = None  # spent on the request
        if self.before_forward is not None:
            await asyncio.to_thread(self.before_forward, method, path)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        try:
            upstream = await self._session.request(
                method,
                self.upstream + str(request.rel_url),
                headers=headers,
                data=body if body else None,
                allow_redirects=False,
            )
        except aiohttp.ClientError:
            self.requests.append((method, path, 502))
            return web.Response(status=502, text="upstream unreachable")
        async with upstream:
            content = await upstream.read()
            self.requests.append((method, path, upstream.status))
            return await self._respond(request, upstream, content, fault)

    async def _respond(
        self,
        request: web.Request,
        upstream: aiohttp.ClientResponse,
        content: bytes,
        fault: Fault | None,
    ) -> web.StreamResponse:
        resp = web.StreamResponse(status=upstream.status)
        for key, value in upstream.headers.items():
            if key.lower() not in _HOP_BY_HOP:
                resp.headers.add(key, value)
        length = upstream.headers.get("Content-Length")
        if fault is None or not content:
            if length is not None:
                resp.content_length = int(length)
            await resp.prepare(request)
            if content:
                await resp.write(content)
            await resp.write_eof()
            return resp
        half = content[: len(content) // 2]
        if fault.kind == "corrupt":
            resp.content_length = len(content)
            await resp.prepare(request)
            await resp.write(_flip(content))
            await resp.write_eof()
            return resp
        if fault.kind == "truncate":
            resp.enable_chunked_encoding()
            await resp.prepare(request)
            await resp.write(half)
            await resp.write_eof()
            return resp
        resp.content_length = len(content)
        await resp.prepare(request)
        await resp.write(half)
        if fault.kind == "stall":
            await self._sleep(fault.stall)
        _abort(request)
        return resp


def _abort(request: web.Request) -> None:
    transport = request.transport
    if transport is not None:
        transport.abort()


def _flip(data: bytes) -> bytes:
    """The same length, the first 64 bytes changed."""
    return bytes(b ^ 0x5A for b in data[:64]) + data[64:]


def incomplete_tags(registry: RegistryClient) -> list[str]:
    """Tags of ``registry`` (read directly, not through a proxy) that reference a missing
    manifest or blob: what a mirror must never have, whatever failed while it was written."""
    broken = []
    for repo in registry.catalog():
        for tag in registry.tags(repo):
            if not _complete(registry, repo, tag):
                broken.append(f"{repo}:{tag}")
    return broken


def _complete(registry: RegistryClient, repo: str, ref: str) -> bool:
    if registry.manifest_digest(repo, ref) is None:
        return False
    _, raw = registry.manifest(repo, ref)
    body = json.loads(raw)
    for child in body.get("manifests", []):
        if not _complete(registry, repo, child["digest"]):
            return False
    blobs = [body.get("config"), *body.get("layers", [])]
    return all(registry.blob_exists(repo, b["digest"]) for b in blobs if b)
