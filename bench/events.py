"""S7: event-triggered sync. A source `docker-registry` notifies a running `regsync serve`.

The rule's interval is an hour, so every copy after the first cycle is the event's doing.
Pushes: 20 images (3 x 200 KB layers) one at a time, each waited for; then a burst of 50
pushed back to back. Lag = from the push's completion (the manifest PUT answered) to the
destination tag resolving to the pushed digest (polled with HEADs every 10 ms).

Targets on this machine: single pushes p50 <= 0.3 s, p95 <= 1.0 s; the burst mirrored within
10 s of its last push.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tests.support import Blob, Image, Manifest, Registry, free_port, push, write_config
from tests.support.observe import Served, wait_for
from tests.support.registry import notifications

TOKEN = "bench-events-token-0123456789"
LAYER = 200_000
SINGLE, BURST = 20, 50
TARGETS = {"p50": 0.3, "p95": 1.0, "burst": 10.0}
POLL = 0.01


@dataclass
class EventFigures:
    lags: list[float] = field(default_factory=list)  # seconds, single pushes
    burst_after_last: float = 0.0  # seconds from the burst's last push to all 50 in place
    burst_push: float = 0.0  # seconds the 50 pushes themselves took

    def percentile(self, q: float) -> float:
        ordered = sorted(self.lags)
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]

    def table(self) -> list[str]:
        p50, p95 = statistics.median(self.lags), self.percentile(0.95)
        rows = [
            ("single push lag p50", p50, TARGETS["p50"]),
            ("single push lag p95", p95, TARGETS["p95"]),
            ("burst of 50: last push to all mirrored", self.burst_after_last, TARGETS["burst"]),
        ]
        lines = ["| S7 | measured | target | |", "|---|---|---|---|"]
        for name, value, target in rows:
            lines.append(f"| {name} | {value:.3f} s | <= {target:g} s | {_ok(value, target)} |")
        lines.append(
            f"| (max single lag {max(self.lags):.3f} s; burst pushed in "
            f"{self.burst_push:.1f} s) | | | |"
        )
        return lines


def _ok(value: float, target: float) -> str:
    return "ok" if value <= target else "MISSED"


def image(seed: str) -> Manifest:
    return Image.docker([Blob.random(LAYER, seed=f"{seed}-{n}") for n in range(3)])


def run_s7(workdir: Path, log: Callable[[str], None]) -> EventFigures:
    serve_port, src_port = free_port(), free_port()
    src = Registry(
        workdir / "s7-source",
        port=src_port,
        extra_config=notifications(src_port, ("regsync", serve_port), token=TOKEN),
    )
    dst = Registry(workdir / "s7-dest")
    figures = EventFigures()
    with src, dst:
        push(src, "bench/app", "seed", image("seed"))
        config = write_config(
            workdir,
            "version: 1\nregistries:\n"
            f'  "{src.host}": {{tls: http, notifications: {{token: {TOKEN}}}}}\n'
            f'  "{dst.host}": {{tls: http}}\n'
            f'rules:\n  - {{name: s7, source: "{src.host}/bench/*", destination: "{dst.host}",'
            " interval: 1h}\n",
            name="s7.yaml",
        )
        with Served(config, workdir, "-q", port=serve_port) as served:
            wait_for(served.ready, "the first cycle")
            for n in range(SINGLE):
                pushed = push(src, "bench/app", f"single-{n}", image(f"single-{n}"))
                done = time.monotonic()
                _await(dst, "bench/app", f"single-{n}", pushed.digest)
                figures.lags.append(time.monotonic() - done)
            log(f"S7 single pushes: lags {', '.join(f'{x:.2f}' for x in figures.lags)}")
            started = time.monotonic()
            burst = [
                push(src, "bench/app", f"burst-{n}", image(f"burst-{n}")) for n in range(BURST)
            ]
            last = time.monotonic()
            figures.burst_push = last - started
            for n, pushed in enumerate(burst):
                _await(dst, "bench/app", f"burst-{n}", pushed.digest)
            figures.burst_after_last = time.monotonic() - last
            served.stop()
    return figures


def _await(dst: Registry, repo: str, tag: str, digest: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if dst.manifest_digest(repo, tag) == digest:  # None while it is not there
            return
        time.sleep(POLL)
    raise TimeoutError(f"{repo}:{tag} not mirrored within {timeout:g}s")
