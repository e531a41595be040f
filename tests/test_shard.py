"""Scale-out with --shard i/N: every (rule, repository) goes to exactly one of N agents."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from regsync.shard import Shard, owner, resolve
from tests.support import Registry, registries_yaml, run_regsync, seed_catalogue, write_config

# -- unit: parsing and the hash ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0/1", Shard(0, 1)),
        ("2/3", Shard(2, 3)),
        (" 1/2 ", Shard(1, 2)),
        ("regsync-2/3", Shard(2, 3)),
    ],
)
def test_parse_accepts_index_or_pod_name(text: str, expected: Shard) -> None:
    """A StatefulSet pod name's trailing ordinal works as the index (REGSYNC_SHARD=$(POD)/N)."""
    assert Shard.parse(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [("3/3", "INDEX must be below COUNT"), ("1/0", "COUNT must be"), ("a/b", "INDEX/COUNT")],
)
def test_parse_rejects_nonsense_with_a_clear_message(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Shard.parse(text)


def test_resolve_prefers_the_option_then_the_environment() -> None:
    env = {"REGSYNC_SHARD": "1/4"}
    assert resolve("0/2", env) == Shard(0, 2)
    assert resolve(None, env) == Shard(1, 4)
    assert resolve(None, {}) == Shard() and Shard().is_whole
    with pytest.raises(ValueError, match="REGSYNC_SHARD"):
        resolve(None, {"REGSYNC_SHARD": "9/4"})


def test_hash_is_pinned() -> None:
    """The assignment is part of the deployed contract: changing it reshuffles every fleet."""
    assert [owner("hub", f"diamol/app{i:02d}", 3) for i in range(8)] == PINNED


PINNED = [1, 0, 2, 2, 1, 2, 1, 1]


def test_every_pair_has_exactly_one_owner_and_the_split_is_even() -> None:
    repos = [f"team/app{i}" for i in range(2000)]
    shards = [Shard(i, 4) for i in range(4)]
    counts = Counter(sum(s.owns("r", repo) for s in shards) for repo in repos)
    assert counts == {1: 2000}
    per_shard = Counter(owner("r", repo, 4) for repo in repos)
    assert all(400 <= n <= 600 for n in per_shard.values()), per_shard


def test_adding_a_shard_moves_repositories_only_to_the_new_shard() -> None:
    """Rendezvous hashing: from N to N+1, a repository either stays or moves to shard N."""
    repos = [f"team/app{i}" for i in range(2000)]
    moved = [r for r in repos if owner("r", r, 4) != owner("r", r, 5)]
    assert all(owner("r", r, 5) == 4 for r in moved)
    assert 300 <= len(moved) <= 500  # about 1/5


def test_the_rule_name_is_part_of_the_key() -> None:
    repos = [f"team/app{i}" for i in range(200)]
    assert [owner("a", r, 3) for r in repos] != [owner("b", r, 3) for r in repos]


# -- N agents over one catalogue ------------------------------------------------------------------


def test_n_agents_cover_every_repository_exactly_once(
    tmp_path: Path, source_registry: Registry, dest_registry: Registry
) -> None:
    """Three agents run at once with --shard i/3 (one via $REGSYNC_SHARD): together they copy
    every repository, and their plans never overlap."""
    catalogue = seed_catalogue(source_registry, repos=12, tags=1, layers=1, layer_size=2_000)
    config = write_config(
        tmp_path,
        registries_yaml(source_registry, dest_registry)
        + f"""
version: 1
rules:
  - name: fleet
    source: {source_registry.host}/diamol/*
    destination: {dest_registry.host}
""",
    )
    plans = [_planned_repos(config, i) for i in range(3)]
    assert sorted(r for plan in plans for r in plan) == catalogue.repos
    assert all(plan for plan in plans)  # 12 repositories do land on every shard

    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "regsync", "once", "-c", str(config), "--json"]
            + ["--metrics-file", str(tmp_path / f"shard{i}.prom")]
            + ([] if i == 0 else ["--shard", f"{i}/3"]),
            env={**os.environ, "REGSYNC_SHARD": "0/3"},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(3)
    ]
    outputs = [p.communicate(timeout=120) for p in procs]

    assert [p.returncode for p in procs] == [0, 0, 0], [err for _, err in outputs]
    summaries = [json.loads(out)["rules"][0] for out, _ in outputs]
    assert [s["repos"] for s in summaries] == [len(plan) for plan in plans]
    assert sum(s["tags"]["copied"] for s in summaries) == 12
    assert sorted(dest_registry.catalog()) == catalogue.repos
    for i in range(3):  # the metrics say which shard each agent was
        metrics = (tmp_path / f"shard{i}.prom").read_text()
        assert f'regsync_shard_info{{count="3",index="{i}"}} 1.0' in metrics
    for repo in catalogue.repos:
        assert dest_registry.manifest_digest(repo, "1.0.0") == catalogue.digest(repo, "1.0.0")


def _planned_repos(config: Path, index: int) -> list[str]:
    proc = run_regsync("check", "-c", config, "--json", "--shard", f"{index}/3")
    assert proc.returncode == 1, proc.stderr  # drift: nothing copied yet
    (plan,) = json.loads(proc.stdout)["plan"]
    return [repo["source"] for repo in plan["repos"]]
