"""Run one tool as a subprocess and measure it: wall time, peak RSS, exit code, output.

Peak RSS is the child's own: ``VmHWM`` of ``/proc/<pid>/status``, sampled while it runs.
``ru_maxrss`` from ``wait4`` is not: Linux carries the high-water mark of the memory the child
was forked from (this Python process) across ``exec``, so every tool read ~47 MiB.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Measured:
    seconds: float
    max_rss_kib: int  # the child's own peak RSS (VmHWM), KiB
    cpu_seconds: float  # user + system time of the child
    returncode: int
    stdout: str
    stderr: str


def measure(
    argv: Sequence[str],
    *,
    workdir: Path,
    env: Mapping[str, str] | None = None,
    timeout: float = 1800,
) -> Measured:
    """Start ``argv``, wait for it with ``wait4`` so its own rusage is known, time it."""
    out_path, err_path = workdir / "stdout.txt", workdir / "stderr.txt"
    with out_path.open("wb") as out, err_path.open("wb") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            env={**os.environ, **(env or {})},
            cwd=workdir,
        )
        deadline = started + timeout
        peak = 0
        while True:
            peak = max(peak, _hwm_kib(proc.pid))
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.002)
        seconds = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    return Measured(
        seconds=seconds,
        max_rss_kib=peak or int(usage.ru_maxrss),  # no /proc: the inflated figure, at least
        cpu_seconds=usage.ru_utime + usage.ru_stime,
        returncode=proc.returncode,
        stdout=out_path.read_text(errors="replace"),
        stderr=err_path.read_text(errors="replace"),
    )


def _hwm_kib(pid: int) -> int:
    """The peak resident set of process ``pid`` so far (0 once it has exited, or no /proc)."""
    try:
        with open(f"/proc/{pid}/status", "rb") as status:
            for line in status:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0
