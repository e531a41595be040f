"""A large valid config is checked in near-linear time and leaves nothing behind: overlapping
rules are found by grouping destinations on their literal prefix, not by comparing every
pair, and no cache keyed by config data lives as long as the process (a daemon reloading for
months would keep every config it ever read)."""

from __future__ import annotations

import gc
import tracemalloc

import pytest

from regsync.config import overlap, parse_config
from regsync.errors import ConfigError


def many_rules(n: int, extra: str = "") -> str:
    rules = "".join(
        f"  - {{name: r{i}, source: src.example:5000/team{i}/*,"
        f" destination: dst.example:5000/mirror}}\n"
        for i in range(n)
    )
    return f"version: 1\nrules:\n{rules}{extra}"


def test_thousands_of_rules_compare_only_the_pairs_that_could_overlap(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    compared: list[tuple[str, str]] = []
    real = overlap.common_repository

    def counting(a: str, b: str) -> str | None:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(overlap, "common_repository", counting)
    config = parse_config(many_rules(3000))
    assert len(config.rules) == 3000
    assert len(compared) < 3 * 3000  # every pair would be 4.5 million


def test_the_one_overlapping_pair_among_thousands_is_still_found() -> None:
    clash = (
        "  - {name: late, source: src.example:5000/team7/*, destination: dst.example:5000/mirror}\n"
    )
    with pytest.raises(ConfigError, match=r"rules\[3000\].*r7|r7.*late|late.*r7"):
        parse_config(many_rules(3000, clash))


def test_no_cache_keyed_by_config_outlives_a_load() -> None:
    text = many_rules(
        300, "  - {name: x, source: 'src.example:5000/**', destination: dst.example:5000/mirror}\n"
    )
    with pytest.raises(ConfigError):
        parse_config(text)  # a ** source: compared with everything, memo used
    gc.collect()
    tracemalloc.start()
    try:
        for _ in range(3):
            with pytest.raises(ConfigError):
                parse_config(text)
        gc.collect()
        before = tracemalloc.take_snapshot()
        for _ in range(3):
            with pytest.raises(ConfigError):
                parse_config(text)
        gc.collect()
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    grown = sum(s.size_diff for s in after.compare_to(before, "filename"))
    assert grown < 200_000, grown
    assert not [name for name, value in vars(overlap).items() if hasattr(value, "cache_info")]
