"""Support for the observability tests: a `regsync serve` subprocess, a slow proxy, metric parsing.

with Served(config, tmp_path) as served:      # `regsync serve` on a free loopback port
    served.wait_for(lambda: served.ready(), "first run")
    served.metric("regsync_tags_total", rule="mirror", outcome="copied")

with HoldingProxy(source.url) as proxy:   # blob bodies stop after their first chunk
    proxy.streaming.wait(); ...; proxy.release()
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from .cli import REPO_ROOT
from .client import RegistryClient
from .registry import free_port

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse_metrics(text: str) -> Samples:
    """Every sample of a Prometheus text exposition: (name, labels) -> value."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def sample(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def wait_for(predicate: Callable[[], Any], what: str, timeout: float = 60) -> Any:
    """Poll until `predicate()` is truthy (returns it); a liveness guard, not a timing check."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.1)


class Served:
    """`regsync serve -c config --listen 127.0.0.1:<free port> *args` as a subprocess."""

    def __init__(
        self,
        config: Path,
        workdir: Path,
        *args: str,
        port: int | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        # regsync binds the port itself, so it is picked in advance: should another process
        # take it first (serve exits: address already in use), pick again. A given port (a
        # registry's notifications already point there) is used as it is.
        for attempt in range(3):
            self._start(config, workdir, args, port or free_port(), env)
            wait_for(
                lambda: self.get("/healthz")[0] == 200 or self.proc.poll() is not None, "healthz"
            )
            if self.proc.poll() is None:
                return
            self._log.close()
            if port is not None or "address already in use" not in self.log() or attempt == 2:
                raise AssertionError(f"regsync serve exited {self.proc.returncode}: {self.log()}")

    def _start(
        self,
        config: Path,
        workdir: Path,
        args: tuple[str, ...],
        port: int,
        env: dict[str, str] | None,
    ) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / f"serve-{self.port}.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "regsync",
                "serve",
                "-c",
                str(config),
                "--listen",
                f"127.0.0.1:{self.port}",
                *args,
            ],
            cwd=REPO_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )

    def __enter__(self) -> Served:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._log.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def post(
        self, path: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> tuple[int, bytes]:
        """POST ``body``; (status, body), status 0 when the connection failed."""
        request = urllib.request.Request(
            self.url + path, data=body, headers=headers or {}, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()
        except OSError:
            return 0, b""

    def get(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=10) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()
        except OSError:
            return 0, b""

    def status(self) -> dict[str, Any]:
        code, body = self.get("/status")
        assert code == 200, body
        return dict(json.loads(body))

    def rule(self, name: str) -> dict[str, Any]:
        rules = {r["name"]: r for r in self.status()["rules"]}
        return dict(rules[name])

    def metrics(self) -> Samples:
        code, body = self.get("/metrics")
        assert code == 200, body
        return parse_metrics(body.decode())

    def metric(self, name: str, **labels: str) -> float | None:
        return sample(self.metrics(), name, **labels)

    def ready(self) -> bool:
        return self.get("/readyz")[0] == 200

    def signal(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM and wait; the exit code."""
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)


class HoldingProxy:
    """An HTTP proxy in front of a registry that holds every blob GET body after its first
    chunk until ``release()``.

    ``streaming`` is set when the first held body starts flowing, so a test acts while a
    transfer is certainly in flight, with no timing involved.
    """

    def __init__(self, upstream: str, chunk_size: int = 1024) -> None:
        self.upstream = upstream.rstrip("/")
        self.chunk_size = chunk_size
        self.port = 0  # bound to port 0 on start; the kernel's pick is read back
        self.streaming = threading.Event()
        self.error: BaseException | None = None
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._released: asyncio.Event | None = None
        self._session: aiohttp.ClientSession | None = None
        self._thread = threading.Thread(target=self._main, daemon=True)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def client(self) -> RegistryClient:
        return RegistryClient(self.url)

    def release(self) -> None:
        """Let held bodies (and every later one) flow."""
        assert self._loop is not None and self._released is not None
        self._loop.call_soon_threadsafe(self._released.set)

    def __enter__(self) -> HoldingProxy:
        self._thread.start()
        if not self._ready.wait(10) or self.error is not None:
            raise RuntimeError(f"holding proxy did not start: {self.error!r}")
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._loop is not None and self._stop is not None:
            self.release()  # held handlers end, so the server shuts down at once
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # surface it in the test that started the proxy
            self.error = exc
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._released = asyncio.Event()
        async with aiohttp.ClientSession(auto_decompress=False) as session:
            self._session = session
            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", self._forward)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", 0).start()
            self.port = int(runner.addresses[0][1])
            self._ready.set()
            await self._stop.wait()
            await runner.cleanup()

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        session = self._session
        assert session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        body = await request.read()
        async with session.request(
            request.method,
            self.upstream + request.path_qs,
            headers=headers,
            data=body or None,
            allow_redirects=False,
        ) as upstream:
            resp = web.StreamResponse(status=upstream.status)
            for key, value in upstream.headers.items():
                if key.lower() not in _HOP:
                    resp.headers.add(key, value)
            hold = request.method == "GET" and "/blobs/" in request.path and upstream.status == 200
            await resp.prepare(request)
            try:
                async for chunk in upstream.content.iter_chunked(self.chunk_size):
                    await resp.write(chunk)
                    if hold:
                        self.streaming.set()
                        assert self._released is not None
                        await self._released.wait()
                await resp.write_eof()
            except (ConnectionError, aiohttp.ClientError):
                pass  # the client went away mid-body (it was cancelled): nothing to do
            return resp


_HOP = frozenset({"host", "connection", "transfer-encoding", "keep-alive", "content-encoding"})
