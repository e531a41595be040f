"""The daemon's HTTP port holds against its clients: idle and half-sent connections are closed
by a deadline, connections past the cap are refused at once, accept errors are logged at most
once a minute, the file limit is raised, and syncing never fails because of HTTP clients.
Also: a SIGHUP right at start is never fatal, and `--listen` always names its host."""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from regsync.httpport import PortLimits, listen, quiet_accept_errors, raise_file_limit
from tests.support import REPO_ROOT, Blob, Image, Registry, push, run_regsync, write_config
from tests.support.observe import HoldingProxy, Served, wait_for
from tests.test_serve import rule_yaml, serve_config

CAP = 8
IDLE = 1.0  # seconds (the default is 10): the test waits for the reaping


def closed_by_server(sock: socket.socket, within: float) -> bool:
    """Whether the server closed (or reset) ``sock`` within ``within`` seconds."""
    sock.settimeout(within)
    try:
        return sock.recv(1024) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_idle_and_half_sent_connections_past_the_cap_never_stop_a_sync(
    tmp_path: Path,
    source_registry: Registry,
    dest_registry: Registry,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Three times the cap in idle and half-sent connections while a blob is in flight: the
    ones past the cap are refused at once, the rest closed by the deadline, /healthz answers
    after, the copy lands, and the log holds one line about it all."""
    monkeypatch.setenv("REGSYNC_HTTP_MAX_CONNECTIONS", str(CAP))
    monkeypatch.setenv("REGSYNC_HTTP_IDLE_TIMEOUT", str(IDLE))
    pushed = push(source_registry, "team/app", "1", Image.docker([Blob.random(50_000, seed=2)]))
    with HoldingProxy(source_registry.url) as proxy:
        client = proxy.client()
        config = serve_config(
            tmp_path,
            client,
            dest_registry,
            rule_yaml("app", client, "team/app", dest_registry, "1h"),
        )
        with Served(config, tmp_path) as served:
            assert proxy.streaming.wait(60), served.log()  # the rule is copying now
            flood = [socket.create_connection(("127.0.0.1", served.port)) for _ in range(3 * CAP)]
            for half in flood[:CAP]:
                half.sendall(b"GET /status HTTP/1.1\r\nHost: x\r\n")  # never finished
            # Every one of them is closed by the server: refused, or reaped by the deadline
            # (generous bound: a loaded machine; the deadline itself is one second).
            assert all(closed_by_server(s, within=30) for s in flood)
            for s in flood:
                s.close()
            assert served.get("/healthz") == (200, b"ok\n")
            proxy.release()
            wait_for(lambda: served.rule("app")["runs"] >= 1, "the run to finish")
            assert served.rule("app")["last_run"]["result"] == "success", served.log()
            assert dest_registry.manifest_digest("team/app", "1") == pushed.digest
            log = served.log()
            assert served.stop() == 0, log
    assert log.count(f"over {CAP} connections, refusing") == 1, log
    assert len(log) < 20_000 and "Too many open files" not in log, log


def test_a_connection_past_the_cap_is_reset_without_being_served(
    tmp_path: Path,
    source_registry: Registry,
    dest_registry: Registry,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("REGSYNC_HTTP_MAX_CONNECTIONS", str(CAP))
    monkeypatch.setenv("REGSYNC_HTTP_IDLE_TIMEOUT", "60")  # nothing reaped during the test
    config = one_rule(tmp_path, source_registry, dest_registry)
    with Served(config, tmp_path) as served:
        held = [socket.create_connection(("127.0.0.1", served.port)) for _ in range(CAP)]
        # The server counts a connection once it handles it: one request on the last one
        # proves all before it were counted too (accepted in order).
        held[-1].sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        held[-1].settimeout(30)
        assert held[-1].recv(1024).startswith(b"HTTP/1.1 200")
        extra = socket.create_connection(("127.0.0.1", served.port))
        extra.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert closed_by_server(extra, within=30)  # reset: no answer at all
        assert not closed_by_server(held[0], within=0.2)  # the ones inside are kept
        for s in [*held, extra]:
            s.close()
        assert served.stop() == 0, served.log()


def test_the_deadlines_and_the_cap_default_sanely() -> None:
    limits = PortLimits.from_env({}, file_limit=1024)
    assert (limits.idle, limits.max_connections) == (10.0, 256)
    assert PortLimits.from_env({}, file_limit=200).max_connections == 50  # a quarter


def test_the_soft_file_limit_is_raised_to_the_hard_one() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard <= 64:
        pytest.skip("hard limit too low to lower the soft one below it")
    code = (
        "import resource\n"
        "from regsync.httpport import raise_file_limit\n"
        "_, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))\n"
        "got = raise_file_limit()\n"
        "now = resource.getrlimit(resource.RLIMIT_NOFILE)[0]\n"
        "print(got == now and now > 64 and (now == hard or hard == resource.RLIM_INFINITY))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "True", out.stderr
    assert raise_file_limit() >= soft


async def test_accept_errors_are_logged_at_most_once_a_minute(
    caplog: pytest.LogCaptureFixture,
) -> None:
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    quiet_accept_errors(loop)
    try:
        with caplog.at_level(logging.WARNING):
            for _ in range(10_000):
                loop.call_exception_handler(
                    {
                        "message": "socket.accept() out of system resource",
                        "exception": OSError(24, "Too many open files"),
                    }
                )
    finally:
        loop.set_exception_handler(previous)
    lines = [r for r in caplog.records if "accept" in r.getMessage()]
    assert len(lines) == 1, [r.getMessage() for r in lines]


MALFORMED = (
    b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
    b"GET /" + b"a" * 9_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    b"\x16\x03\x01 not http at all\r\n\r\n",
)


async def test_malformed_requests_are_one_line_a_minute_not_a_traceback_each(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """aiohttp logs each malformed request with a traceback: 60 of them would be hundreds of
    log lines. They are one warning with the count, and the port still answers."""
    from aiohttp import web

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    listener = await listen(app, "127.0.0.1", 0, PortLimits(max_connections=64, idle=5.0))
    port = listener.server.sockets[0].getsockname()[1]
    try:
        with caplog.at_level(logging.DEBUG):
            for request in MALFORMED * 20:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(request)
                await reader.read()  # answered 400 (or closed), then closed
                writer.close()
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            answer = await reader.read()
            writer.close()
    finally:
        await listener.cleanup()
    assert answer.startswith(b"HTTP/1.1 200"), answer[:100]
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(lines) == 1 and "malformed requests" in lines[0], lines


def test_listen_without_a_host_is_a_usage_error(tmp_path: Path) -> None:
    rule = f'{{name: a, source: "oci:{tmp_path}/in", destination: "oci:{tmp_path}/out"}}'
    config = write_config(tmp_path, f"version: 1\nrules:\n  - {rule}\n")
    proc = run_regsync("serve", "-c", config, "--listen", ":9469")
    assert proc.returncode == 2
    assert "name the host" in proc.stderr and "0.0.0.0:9469" in proc.stderr


def test_sighup_while_serve_starts_is_a_reload_not_a_death(
    tmp_path: Path, source_registry: Registry, dest_registry: Registry
) -> None:
    """The signal lands while the config is still being read (a FIFO holds `serve` there):
    the daemon lives, serves, and reloads once running."""
    text = one_rule(tmp_path, source_registry, dest_registry).read_text()
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    served_log = tmp_path / "serve.log"
    port = _free_port()
    with served_log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "regsync",
                "serve",
                "-c",
                str(fifo),
                "--listen",
                f"127.0.0.1:{port}",
            ],
            cwd=REPO_ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            with fifo.open("w") as writer:  # opens once serve opened the config to read it
                proc.send_signal(signal.SIGHUP)
                writer.write(text)
            wait_for(lambda: _healthz(port) or proc.poll() is not None, "serve to answer")
            assert proc.poll() is None, served_log.read_text()  # 129 before the fix
            with fifo.open("w") as writer:  # the reload reads it again
                writer.write(text)
            wait_for(
                lambda: "reloaded" in served_log.read_text() or proc.poll() is not None, "reload"
            )
            assert proc.poll() is None, served_log.read_text()
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(60) == 0, served_log.read_text()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)


def one_rule(tmp_path: Path, src: Registry, dst: Registry) -> Path:
    push(src, "team/app", "1", Image.docker([Blob.random(1000, seed="port")]))
    return serve_config(tmp_path, src, dst, rule_yaml("app", src, "team/app", dst, "1h"))


def _healthz(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as resp:
            return resp.status == 200
    except OSError:
        return False


def _free_port() -> int:
    from tests.support.registry import free_port

    return free_port()


def test_clients_that_never_read_their_answers_do_not_hold_the_port(
    tmp_path: Path,
    source_registry: Registry,
    dest_registry: Registry,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The cap's worth of connections pipeline requests for /metrics and never read: their
    answers stop draining, they are dropped after a deadline, and /healthz answers again."""
    monkeypatch.setenv("REGSYNC_HTTP_MAX_CONNECTIONS", "4")
    monkeypatch.setenv("REGSYNC_HTTP_IDLE_TIMEOUT", str(IDLE))
    with Served(one_rule(tmp_path, source_registry, dest_registry), tmp_path) as served:
        hogs = []
        for _ in range(4):
            hog = socket.socket()
            hog.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            hog.connect(("127.0.0.1", served.port))
            hog.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n" * 2000)
            hogs.append(hog)
        wait_for(lambda: served.get("/healthz") == (200, b"ok\n"), "the port back", timeout=60)
        assert "stopped reading its answers" in served.log()
        for hog in hogs:
            hog.close()
        assert served.stop() == 0, served.log()
