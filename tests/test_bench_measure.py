"""bench/measure.py reports each child's own peak RSS, not the measuring process's."""

from __future__ import annotations

import sys
from pathlib import Path

from bench.measure import measure

MIB = 1024


def test_a_small_child_of_a_big_parent_reads_small(tmp_path: Path) -> None:
    """ru_maxrss carries the parent's high-water mark across exec; VmHWM does not."""
    ballast = bytearray(150 * 1024 * 1024)
    ballast[::4096] = b"x" * len(ballast[::4096])  # make it resident
    measured = measure(["/bin/sleep", "0.1"], workdir=tmp_path)
    assert measured.returncode == 0
    assert 0 < measured.max_rss_kib < 20 * MIB
    del ballast


def test_a_big_child_reads_its_own_peak(tmp_path: Path) -> None:
    code = (
        "x = bytearray(120 << 20); x[::4096] = b'1' * len(x[::4096]); import time; time.sleep(0.1)"
    )
    measured = measure([sys.executable, "-c", code], workdir=tmp_path)
    assert measured.returncode == 0
    assert 120 * MIB <= measured.max_rss_kib < 200 * MIB
