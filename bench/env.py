"""Two real registries on loopback for the benchmark, with access logs and storage resets."""

from __future__ import annotations

import shutil
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.measure import Measured, measure
from tests.support import Registry
from tests.support.accesslog import ACCESS_LOG, AccessLog


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

    @property
    def ok(self) -> bool:
        return self.run.returncode == 0


class BenchEnv:
    """A source and a destination registry under ``workdir``; the destination can be reset."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.src = Registry(workdir / "source", extra_config=ACCESS_LOG)
        self.dst = Registry(workdir / "dest", extra_config=ACCESS_LOG)

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
        measured = measure(command, workdir=work)
        src_requests = src_log.requests()
        return Sample(
            scenario,
            tool,
            rnd,
            measured,
            Counter(r.key for r in src_requests),
            dst_log.counts(),
            sum(r.bytes_sent for r in src_requests),
        )
