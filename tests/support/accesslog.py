"""Count the requests a registry served, from its access log (tests and the benchmark).

Start the registry with ``ACCESS_LOG`` as ``extra_config`` so it writes one Apache-style line per
request into its log file; ``AccessLog(reg).mark()`` remembers where the log ends now, and
``counts()`` classifies every request logged since by method and kind:

    log = AccessLog(reg)
    ...run something...
    log.counts()  ->  Counter({"HEAD manifest": 200, "GET tags": 20, ...})

Kinds: ``ping`` (``/v2/``), ``catalog``, ``tags``, ``manifest``, ``blob``, ``upload`` (the
``blobs/uploads/`` session URLs, mounts included), ``other``.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

from .registry import Registry

ACCESS_LOG: dict[str, Any] = {"log": {"accesslog": {"disabled": False}}}

_LINE = re.compile(r'^\S+ \S+ \S+ \[[^\]]*\] "([A-Z]+) (\S+) HTTP/[\d.]+" (\d{3}) (\d+|-)')


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    status: int
    bytes_sent: int

    @property
    def kind(self) -> str:
        return request_kind(self.path)

    @property
    def key(self) -> str:
        return f"{self.method} {self.kind}"


def request_kind(path: str) -> str:
    """What a distribution API path addresses (query strings ignored)."""
    path = path.split("?", 1)[0]
    if path.rstrip("/") == "/v2":
        return "ping"
    if path == "/v2/_catalog":
        return "catalog"
    if path.endswith("/tags/list"):
        return "tags"
    if "/blobs/uploads" in path:
        return "upload"
    if "/manifests/" in path:
        return "manifest"
    if "/blobs/" in path:
        return "blob"
    return "other"


def parse_requests(text: str) -> list[Request]:
    """The access-log lines of ``text`` (other log lines are skipped)."""
    out = []
    for line in text.splitlines():
        match = _LINE.match(line)
        if match:
            method, path, status, size = match.groups()
            out.append(Request(method, path, int(status), 0 if size == "-" else int(size)))
    return out


class AccessLog:
    """The requests one registry logged since the last ``mark()`` (made at construction)."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self._offset = 0
        self.mark()

    def mark(self) -> None:
        try:
            self._offset = self.registry.log_path.stat().st_size
        except FileNotFoundError:
            self._offset = 0

    def requests(self) -> list[Request]:
        with self.registry.log_path.open("rb") as f:
            f.seek(self._offset)
            return parse_requests(f.read().decode(errors="replace"))

    def counts(self) -> Counter[str]:
        return Counter(r.key for r in self.requests())

    def bytes_sent(self) -> int:
        """Response body bytes the registry sent (blob GETs dominate)."""
        return sum(r.bytes_sent for r in self.requests())
