"""Real CNCF distribution registry processes on loopback ports, for tests and the demo.

    with Registry(workdir) as reg:          # or reg.start() / reg.stop()
        reg.url, reg.host, reg.storage
        reg.tags("diamol/app")

Each registry gets its own config, storage dir and log file under ``workdir``. ``restart()``
keeps the port and storage; ``kill()`` SIGKILLs it for fault tests.

Ports: a registry's first start binds port 0 (the kernel picks a free one) and the port it got
is read back from the process's listening socket, so parallel workers never race for a port
picked in advance; restarts keep that port. ``dead_port()`` is a port nothing can listen on
while the test process lives (held bound, never listening): connections to it are refused.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, TypeAlias

import bcrypt
import yaml

from .client import RegistryClient

REGISTRY_BINARY = os.environ.get("REGSYNC_TEST_REGISTRY", "/usr/bin/docker-registry")
START_TIMEOUT = 15.0

_running: weakref.WeakSet[Registry] = weakref.WeakSet()


class RegistryStartError(RuntimeError):
    """The registry process died or did not answer ``GET /v2/`` in time."""


_held: list[socket.socket] = []  # dead_port()'s sockets, closed when the process ends


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now, for a process that binds it
    itself (``regsync serve --listen``). Another process may take it before that process does:
    prefer binding port 0 and reading the port back, or ``dead_port()`` for a refused port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def notifications(registry_port: int, *listeners: tuple[str, int], token: str) -> dict[str, Any]:
    """A source registry's ``notifications`` config (its ``extra_config``) sending its events to
    each ``(name, port)`` `regsync serve` listener, as an operator would configure it: Bearer
    token, and blob and pull events dropped at the source."""
    endpoints = [
        {
            "name": name,
            "url": f"http://127.0.0.1:{port}/v1/notifications/127.0.0.1:{registry_port}",
            "headers": {"Authorization": [f"Bearer {token}"]},
            "timeout": "2s",
            "threshold": 3,
            "backoff": "1s",
            "ignore": {"mediatypes": ["application/octet-stream"], "actions": ["pull"]},
        }
        for name, port in listeners
    ]
    return {"notifications": {"endpoints": endpoints}}


def dead_port() -> int:
    """A port on 127.0.0.1 where connections are refused for as long as this process lives:
    it stays bound (never listening), so no other process or worker can take it."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    _held.append(sock)
    return int(sock.getsockname()[1])


def listening_port(pid: int) -> int | None:
    """The TCP port process ``pid`` listens on (IPv4 loopback), from /proc; None if none yet."""
    inodes = set()
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
    if not inodes:
        return None
    with open(f"/proc/{pid}/net/tcp") as table:
        for line in table.readlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                return int(fields[1].rsplit(":", 1)[1], 16)
    return None


def htpasswd_line(user: str, password: str) -> str:
    """One htpasswd line with a bcrypt hash (the only scheme distribution accepts)."""
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()
    return f"{user}:{hashed}"


def _die_with_parent() -> None:
    """Have the kernel SIGTERM the registry if the test process dies (Linux only).

    The signal follows the *thread* that forked, so this is only used from the main thread.
    """
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Registry(RegistryClient):
    """One ``docker-registry serve`` process plus a client for it.

    Options: ``delete_enabled`` (``storage.delete.enabled``), ``htpasswd`` ({user: password},
    Basic auth; the client then uses the first pair), ``tls`` ((cert, key) paths; pass
    ``ca_file`` so the client trusts it), ``token_auth`` (the ``auth.token`` mapping: realm,
    service, issuer, rootcertbundle), ``readonly`` (``storage.maintenance.readonly``), and
    ``extra_config`` (deep-merged into the generated config last).
    """

    def __init__(
        self,
        workdir: Path | str | None = None,
        *,
        delete_enabled: bool = True,
        htpasswd: dict[str, str] | None = None,
        tls: tuple[Path | str, Path | str] | None = None,
        ca_file: Path | str | None = None,
        token_auth: dict[str, Any] | None = None,
        readonly: bool = False,
        extra_config: dict[str, Any] | None = None,
        log_level: str = "warn",
        port: int | None = None,
    ) -> None:
        if htpasswd and token_auth:
            raise ValueError("htpasswd and token_auth are exclusive")
        self._own_tmp = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="regsync-registry-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.storage = self.workdir / "storage"
        self.config_path = self.workdir / "config.yml"
        self.log_path = self.workdir / "registry.log"
        self._pick_port = port is None  # until the first start succeeds: bind port 0
        self.port = port or 0
        self.host = f"127.0.0.1:{self.port}"
        self.scheme = "https" if tls else "http"
        self.delete_enabled = delete_enabled
        self.htpasswd = dict(htpasswd or {})
        self.tls = tls
        self.token_auth = token_auth
        self.readonly = readonly
        self.extra_config = extra_config or {}
        self.log_level = log_level
        self._proc: subprocess.Popen[bytes] | None = None
        creds = next(iter(self.htpasswd.items())) if self.htpasswd else None
        super().__init__(f"{self.scheme}://{self.host}", credentials=creds, ca_file=ca_file)

    def __repr__(self) -> str:
        return f"<Registry {self.url} {'running' if self.running else 'stopped'}>"

    # -- config ----------------------------------------------------------------------------

    def config(self) -> dict[str, Any]:
        """The distribution config this registry runs with."""
        storage: dict[str, Any] = {
            "filesystem": {"rootdirectory": str(self.storage)},
            "delete": {"enabled": self.delete_enabled},
            # No blob descriptor cache: a stale cache would hide deletes and restarts.
            "maintenance": {
                "uploadpurging": {"enabled": False},
                "readonly": {"enabled": self.readonly},
            },
        }
        http: dict[str, Any] = {
            "addr": self.host,
            "secret": "regsync-test-secret",
            "headers": {"X-Content-Type-Options": ["nosniff"]},
        }
        if self.tls:
            http["tls"] = {"certificate": str(self.tls[0]), "key": str(self.tls[1])}
        cfg: dict[str, Any] = {
            "version": 0.1,
            "log": {
                "level": self.log_level,
                "formatter": "text",
                "accesslog": {"disabled": True},
            },
            "storage": storage,
            "http": http,
        }
        if self.htpasswd:
            cfg["auth"] = {
                "htpasswd": {"realm": "regsync-test", "path": str(self.workdir / "htpasswd")}
            }
        elif self.token_auth:
            cfg["auth"] = {"token": dict(self.token_auth)}
        return _merge(cfg, self.extra_config)

    def _write_files(self) -> None:
        self.storage.mkdir(parents=True, exist_ok=True)
        if self.htpasswd:
            lines = [htpasswd_line(u, p) for u, p in self.htpasswd.items()]
            (self.workdir / "htpasswd").write_text("\n".join(lines) + "\n")
        self.config_path.write_text(yaml.safe_dump(self.config(), sort_keys=False))

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def start(self, timeout: float = START_TIMEOUT) -> Registry:
        """Start the process and wait until ``GET /v2/`` answers; returns self."""
        if self.running:
            return self
        if not Path(REGISTRY_BINARY).exists():
            raise RegistryStartError(f"{REGISTRY_BINARY} not found (make system-deps)")
        if self._pick_port:
            self._set_port(0)
        self._spawn(timeout)
        self._pick_port = False
        return self

    def _set_port(self, port: int) -> None:
        self.port = port
        self.host = f"127.0.0.1:{port}"
        self.url = f"{self.scheme}://{self.host}"

    def _spawn(self, timeout: float) -> None:
        self._write_files()
        main = threading.current_thread() is threading.main_thread()
        with self.log_path.open("ab") as log:
            log.write(f"--- start {time.strftime('%H:%M:%S')} on {self.host}\n".encode())
            log.flush()
            self._proc = subprocess.Popen(
                [REGISTRY_BINARY, "serve", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent if main else None,
            )
        _running.add(self)
        self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            assert self._proc is not None
            code = self._proc.poll()
            if code is not None:
                raise RegistryStartError(
                    f"registry on {self.host} exited with {code}:\n{self.log_tail()}"
                )
            if self.port == 0 and (port := listening_port(self._proc.pid)) is not None:
                self._set_port(port)  # bound to port 0: the kernel's pick, read back
            with contextlib.suppress(OSError):
                if self.port != 0 and self.ping() in (200, 401):
                    return
            if time.monotonic() > deadline:
                self.stop()
                raise RegistryStartError(
                    f"registry on {self.host} did not answer GET /v2/ within {timeout}s:\n"
                    f"{self.log_tail()}"
                )
            time.sleep(0.05)

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout``. Storage is kept (see ``cleanup``)."""
        proc, self._proc = self._proc, None
        _running.discard(self)
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def kill(self) -> None:
        """SIGKILL the process at once (a crash, for fault tests)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self._proc = None
        _running.discard(self)

    def restart(self) -> Registry:
        """Stop (if running) and start again on the same port and storage."""
        self.stop()
        return self.start()

    def cleanup(self) -> None:
        """Stop, and remove the work dir if this registry created it."""
        self.stop()
        if self._own_tmp:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` of the log, without 404s to HEAD (existence checks, not errors)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        kept = [ln for ln in text.splitlines() if not _is_head_404(ln)]
        return "\n".join(kept[-lines:])

    def __enter__(self) -> Registry:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cleanup()


def _is_head_404(line: str) -> bool:
    return "http.request.method=HEAD" in line and "http.response.status=404" in line


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


@atexit.register
def _stop_all() -> None:
    for reg in list(_running):
        reg.stop(timeout=2.0)


RegistryFactory: TypeAlias = Callable[..., Registry]
"""The ``registry_factory`` fixture's type: ``(**Registry options) -> started Registry``."""
