"""Repositories that vanish from the source are reported, and pruned only on request under the
prune rails (issue "tell the truth", item 10). Against real `docker-registry` processes: a
repository leaves the source's catalog when its storage directory is removed.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from regsync import orphans
from regsync.backends.memory import MemoryBackend
from regsync.config import parse_config
from regsync.discovery import Discovered, RepoPair
from regsync.oci.ref import Listed
from regsync.result import CHECKED_ORPHANS
from regsync.summary import orphans_json, orphans_note
from tests.support import Registry, mirror_config, regsync_json, run_regsync, seed_catalogue
from tests.support.observe import Served, parse_metrics, sample, wait_for


def _vanish(reg: Registry, *repos: str) -> None:
    for repo in repos:
        shutil.rmtree(reg.storage / "docker" / "registry" / "v2" / "repositories" / repo)


def _mirrored(tmp_path: Path, src: Registry, dst: Registry, extra: str = "") -> Path:
    seed_catalogue(src, repos=4, tags=2, layers=1, layer_size=1000)
    config = mirror_config(tmp_path, src, dst, "diamol/*", extra)
    assert regsync_json("once", config).code == 0
    return config


def test_orphaned_repositories_are_reported_everywhere_and_left_alone(
    tmp_path: Path, source_registry: Registry, dest_registry: Registry
) -> None:
    """README "Pruning": check, once, verify (JSON and text) and the gauge name them."""
    config = _mirrored(tmp_path, source_registry, dest_registry)
    _vanish(source_registry, "diamol/app02", "diamol/app03")
    expected = {"count": 2, "names": ["diamol/app02", "diamol/app03"], "unchecked": 0}

    checked = regsync_json("check", config)
    assert checked.code == 0 and checked.rule["orphaned_repositories"] == expected
    prom = tmp_path / "regsync.prom"
    once = regsync_json("once", config, "--metrics-file", prom)
    assert once.code == 0 and once.rule["orphaned_repositories"] == expected
    assert once.rule["tags"]["pruned"] == 0
    samples = parse_metrics(prom.read_text())
    assert sample(samples, "regsync_orphaned_repositories", rule="mirror") == 2
    verified = regsync_json("verify", config)
    assert verified.data["rules"][0]["orphaned_repositories"] == expected
    text = run_regsync("check", "-c", config).stderr
    assert "note: 2 destination repositories in scope are gone from the source: " in text
    assert dest_registry.tags("diamol/app02") == ["1.0.0", "1.1.0"]  # left as they are


def test_prune_repositories_deletes_their_tags_then_reports_none(
    tmp_path: Path, source_registry: Registry, dest_registry: Registry
) -> None:
    """`prune_repositories: true`: the orphans' tags go (2 of 4 repositories: at the default
    max_fraction 0.5); the next run finds no orphan; the live repositories keep their tags."""
    config = _mirrored(tmp_path, source_registry, dest_registry, "prune_repositories: true")
    _vanish(source_registry, "diamol/app02", "diamol/app03")

    run = regsync_json("once", config)

    assert run.code == 0, run.stderr
    assert run.rule["tags"]["pruned"] == 4
    assert dest_registry.tags("diamol/app02") == [] and dest_registry.tags("diamol/app03") == []
    assert dest_registry.tags("diamol/app00") == ["1.0.0", "1.1.0"]
    again = regsync_json("once", config)
    assert again.code == 0 and again.rule["orphaned_repositories"] == {
        "count": 0,
        "names": [],
        "unchecked": 0,
    }


def test_prune_repositories_refuses_over_max_fraction(
    tmp_path: Path, source_registry: Registry, dest_registry: Registry
) -> None:
    """The max-fraction rail counts repositories: 3 of 4 gone is over 0.5, nothing deleted."""
    config = _mirrored(tmp_path, source_registry, dest_registry, "prune_repositories: true")
    _vanish(source_registry, "diamol/app01", "diamol/app02", "diamol/app03")

    run = regsync_json("once", config)

    assert run.code == 1
    assert run.rule["errors"] == [
        "prune_repositories refused: it would empty 3 of 4 repositories (75%), over "
        "prune.max_fraction 0.5; nothing deleted"
    ]
    assert all(dest_registry.tags(f"diamol/app0{i}") == ["1.0.0", "1.1.0"] for i in range(4))


def test_prune_repositories_never_after_an_empty_source_listing(
    tmp_path: Path, source_registry: Registry, dest_registry: Registry
) -> None:
    """A source that lists nothing (allowed empty) never empties the mirror."""
    config = _mirrored(
        tmp_path,
        source_registry,
        dest_registry,
        "prune_repositories: true\nallow_empty: true\nprune: {max_fraction: 1}",
    )
    _vanish(source_registry, *(f"diamol/app0{i}" for i in range(4)))

    run = regsync_json("once", config)

    assert run.code == 1
    assert run.rule["errors"] == [
        "prune_repositories refused: the source lists no repository; nothing deleted"
    ]
    assert dest_registry.tags("diamol/app00") == ["1.0.0", "1.1.0"]


def test_status_and_metrics_of_serve_show_the_orphans(
    tmp_path: Path, source_registry: Registry, dest_registry: Registry
) -> None:
    """README "Pruning": `/status` (the last run) and `/metrics` of the daemon list them."""
    config = _mirrored(tmp_path, source_registry, dest_registry)
    _vanish(source_registry, "diamol/app03")

    with Served(config, tmp_path) as served:
        wait_for(served.ready, "the first run")
        last = served.rule("mirror")["last_run"]
        gauge = served.metric("regsync_orphaned_repositories", rule="mirror")
        assert served.stop() == 0

    assert last["orphaned_repositories"] == {
        "count": 1,
        "names": ["diamol/app03"],
        "unchecked": 0,
    }
    assert gauge == 1


def test_prune_repositories_never_under_missing(
    tmp_path: Path, source_registry: Registry, dest_registry: Registry
) -> None:
    """`once --missing` copies absent tags only and never prunes: not orphans either."""
    config = _mirrored(tmp_path, source_registry, dest_registry, "prune_repositories: true")
    _vanish(source_registry, "diamol/app02", "diamol/app03")

    run = regsync_json("once", config, "--missing")

    assert run.code == 0, run.stderr
    assert run.rule["tags"]["pruned"] == 0
    assert dest_registry.tags("diamol/app02") == ["1.0.0", "1.1.0"]
    assert dest_registry.tags("diamol/app03") == ["1.0.0", "1.1.0"]


class _Held(MemoryBackend):
    """A destination whose every repository holds one tag (an orphan, once found)."""

    async def tags(self, repo: str) -> Listed:
        self.calls.append(("tags", repo, ""))
        return Listed(("1",))


async def test_orphans_past_the_per_run_cap_are_counted_and_refuse_prune_repositories() -> None:
    """README "Pruning": candidates over the 1000 checked a run are not dropped in silence:
    the JSON counts them as `unchecked`, the note says "at least", and prune_repositories is
    refused (the max_fraction rail would otherwise see a shortened list)."""
    config = parse_config(
        "version: 1\nrules:\n  - {name: m, source: src.example/team/*,"
        " destination: dst.example, prune_repositories: true}\n",
        env={},
    )
    (rule,) = config.rules
    found = Discovered((RepoPair("team/live", "team/live"),))
    catalog = Listed(tuple(f"team/gone{i:04d}" for i in range(CHECKED_ORPHANS + 5)))
    dest = _Held("dst.example")

    lost = await orphans.find(rule, config.rules, found, dest, catalog)

    assert lost is not None
    assert len(lost.names) == CHECKED_ORPHANS and lost.unchecked == 5
    assert len(dest.calls) == CHECKED_ORPHANS  # the work stays bounded
    assert orphans_json(lost) == {
        "count": CHECKED_ORPHANS,
        "names": [f"team/gone{i:04d}" for i in range(5)],
        "unchecked": 5,
    }
    (note,) = orphans_note(lost)
    assert note.startswith(f"at least {CHECKED_ORPHANS} destination repositories in scope")
    assert "5 more candidates were not checked (at most 1000 a run)" in note
    assert orphans.refusal(rule, lost, found, 0, 0) == (
        "5 more candidate repositories were not checked (at most 1000 a run), so the orphans "
        "cannot all be counted"
    )
    under = Listed(catalog.names[:3])
    exact = await orphans.find(rule, config.rules, found, _Held("dst.example"), under)
    assert exact is not None and exact.unchecked == 0 and len(exact.names) == 3
    assert orphans.refusal(rule, exact, found, 0, 0) is not None  # 3 of 4: max_fraction
