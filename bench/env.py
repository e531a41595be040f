"""Two real registries on loopback for the benchmark, with access logs and storage resets."""

from __future__ import annotations

import os
import shutil
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.measure import Measured, measure
from tests.support import Registry
from tests.support.accesslog import ACCESS_LOG, AccessLog

# Access logs count requests; the blob descriptor cache is what Debian's packaged config turns
# on (the test fixtures leave it off so deletes are never hidden by a stale cache).
REGISTRY_CONFIG = {**ACCESS_LOG, "storage": {"cache": {"blobdescriptor": "inmemory"}}}


@dataclass(frozen=True)
class Sample:
    """One measured run of one tool in one scenario."""

    scenario: str
    tool: str
    round: int
    run: Measured
    source_requests: Counter[str]
    dest_requests: Counter[str]
    bytes_read: int  # body bytes the source registry sent
    registry_cpu: float  # CPU seconds both registry processes spent meanwhile

    @property
    def ok(self) -> bool:
        return self.run.returncode == 0


class BenchEnv:
    """A source and a destination registry under ``workdir``; the destination can be reset."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.src = Registry(workdir / "source", extra_config=REGISTRY_CONFIG)
        self.dst = Registry(workdir / "dest", extra_config=REGISTRY_CONFIG)

    def __enter__(self) -> BenchEnv:
        self.src.start()
        self.dst.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.src.stop()
        self.dst.stop()

    def empty_dest(self) -> None:
        """Stop the destination, drop its storage, start it again (same port)."""
        self.dst.stop()
        shutil.rmtree(self.dst.storage, ignore_errors=True)
        self.dst.start()

    def save_dest(self, name: str) -> Path:
        """Copy the destination's storage aside, to restore it before later runs."""
        self.dst.stop()
        saved = self.workdir / f"saved-{name}"
        shutil.rmtree(saved, ignore_errors=True)
        shutil.copytree(self.dst.storage, saved)
        self.dst.start()
        return saved

    def restore_dest(self, saved: Path) -> None:
        self.dst.stop()
        shutil.rmtree(self.dst.storage, ignore_errors=True)
        shutil.copytree(saved, self.dst.storage)
        self.dst.start()

    def run(self, scenario: str, tool: str, rnd: int, argv: Callable[[Path], list[str]]) -> Sample:
        """Run ``argv(work_dir)`` measured, with the requests each registry served meanwhile."""
        work = self.workdir / "runs" / f"{scenario}-{tool}-{rnd}"
        work.mkdir(parents=True, exist_ok=True)
        command = argv(work)
        src_log, dst_log = AccessLog(self.src), AccessLog(self.dst)
        cpu_before = self.registry_cpu()
        measured = measure(command, workdir=work)
        cpu = self.registry_cpu() - cpu_before
        src_requests = src_log.requests()
        return Sample(
            scenario,
            tool,
            rnd,
            measured,
            Counter(r.key for r in src_requests),
            dst_log.counts(),
            sum(r.bytes_sent for r in src_requests),
            cpu,
        )

    def registry_cpu(self) -> float:
        """User + system CPU seconds the two registry processes have used so far."""
        total = 0
        for reg in (self.src, self.dst):
            with open(f"/proc/{reg.pid}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
        return total / os.sysconf("SC_CLK_TCK")
