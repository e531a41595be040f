"""Where source repositories go: a rule's mapping must be one-to-one, and two rules must not
write one destination repository (unless their tag filters cannot meet)."""

from __future__ import annotations

from pathlib import Path

import pytest

from regsync.config import parse_config
from regsync.config.overlap import common_repository
from regsync.discovery import map_repositories
from regsync.errors import ConfigError, MappingError
from regsync.oci.ref import DestinationSpec, Listed
from tests.support import (
    FAST_RETRIES,
    Blob,
    Image,
    Registry,
    push,
    registry_rules_config,
    regsync_json,
    run_regsync,
)


def rules_config(*rules: str) -> str:
    return "version: 1\nrules:\n" + "".join(f"  - {r}\n" for r in rules)


@pytest.mark.parametrize(
    ("a", "b", "common"),
    [
        ("m/team/*", "m/team/app", "m/team/app"),
        ("m/team/*", "m/other/*", None),
        ("flat/*", "flat/app", "flat/app"),
        ("m/**", "m/a/b", "m/a/b"),
        ("a/**/z", "a/b/*", "a/b/z"),
        ("app-*", "*-web", "app-web"),
        ("v1*", "v2*", None),
        ("m/a", "m/a/b", None),
        ("x/**", "x", None),
    ],
)
def test_destination_globs_meet_exactly_when_a_repository_matches_both(
    a: str, b: str, common: str | None
) -> None:
    assert common_repository(a, b) == common
    assert common_repository(b, a) == common


def test_validate_refuses_two_rules_writing_one_repository_naming_both_and_their_lines() -> None:
    text = rules_config(
        "{name: wide, source: docker.io/team/*, destination: reg.local:5000/m}",
        "{name: apps, source: ghcr.io/team/app, destination: reg.local:5000/m}",
    )
    with pytest.raises(ConfigError) as info:
        parse_config(text, env={})
    assert str(info.value) == (
        "rules[1].destination (sync.yaml:4): rule 'apps' and rule 'wide' (line 3) can both "
        "write destination repository m/team/app: they would overwrite and prune each other's "
        "tags; give them different destination paths, or tags.include patterns with different "
        "literal prefixes"
    )


@pytest.mark.parametrize(
    ("first", "second", "refused"),
    [
        # {name} flattens: a/app and b/app could both exist.
        (
            "source: docker.io/a/*, destination: 'r.io/flat/{name}'",
            "source: docker.io/b/*, destination: 'r.io/flat/{name}'",
            True,
        ),
        (
            "source: docker.io/a/*, destination: 'r.io/{path}'",
            "source: docker.io/b/*, destination: 'r.io/{path}'",
            False,
        ),
        (
            "source: docker.io/a/*, destination: r.io/m",
            "source: ghcr.io/a/*, destination: oci:/srv/m",
            False,
        ),
        (
            "source: docker.io/a/x, destination: r.io, tags: {include: ['v1\\..*']}",
            "source: ghcr.io/a/x, destination: r.io, tags: {include: ['v2\\..*']}",
            False,
        ),
        (
            "source: docker.io/a/x, destination: r.io, tags: {include: ['v1.*']}",
            "source: ghcr.io/a/x, destination: r.io, tags: {include: ['v1\\.2.*']}",
            True,
        ),
        (
            "source: docker.io/a/x, destination: r.io, referrers: true, tags: {include: ['v1.*']}",
            "source: ghcr.io/a/x, destination: r.io, tags: {include: ['v2.*']}",
            True,
        ),
    ],
)
def test_rules_sharing_a_registry_are_refused_only_when_they_can_meet(
    first: str, second: str, refused: bool
) -> None:
    text = rules_config(f"{{name: one, {first}}}", f"{{name: two, {second}}}")
    if refused:
        with pytest.raises(ConfigError, match="can both write destination repository"):
            parse_config(text, env={})
    else:
        assert [r.name for r in parse_config(text, env={}).rules] == ["one", "two"]


def test_name_template_collision_refuses_the_whole_rule_and_writes_nothing(
    tmp_path: Path, source_registry: Registry, dest_registry: Registry
) -> None:
    """deep/a/x/app and deep/b/y/app both map to flat/app: one error line naming both, exit 1
    for once, check and verify, and the destination is untouched (also for deep/c/z/other)."""
    for n, repo in enumerate(["deep/a/x/app", "deep/b/y/app", "deep/c/z/other"]):
        for tag in ("1", "2"):
            push(source_registry, repo, tag, Image.docker([Blob.random(500, seed=f"{n}{tag}")]))
    config = registry_rules_config(
        tmp_path,
        source_registry,
        dest_registry,
        f"""
        - name: flat
          source: {source_registry.host}/deep/**
          destination: "{dest_registry.host}/flat/{{name}}"
          prune: true
        """,
    )
    assert run_regsync("validate", "-c", config).returncode == 0  # only the catalog can tell

    results = {cmd: regsync_json(cmd, config, env=FAST_RETRIES) for cmd in ("once", "check")}
    verified = regsync_json("verify", config, env=FAST_RETRIES)

    expected = (
        "source repositories deep/a/x/app, deep/b/y/app all map to destination flat/app; "
        "nothing of this rule was synced"
    )
    for cmd, (code, summary, stderr) in results.items():
        (rule,) = summary["rules"]
        assert (code, summary["ok"], rule["result"]) == (1, False, "failed"), (cmd, stderr)
        assert len(rule["errors"]) == 1 and rule["errors"][0].startswith(expected), rule
        assert rule["tags"] == {"copied": 0, "up_to_date": 0, "pruned": 0, "failed": 0}
    assert verified.code == 1 and verified.data["rules"][0]["errors"][0].startswith(expected)
    assert dest_registry.catalog() == []


def test_rules_with_disjoint_tags_share_a_repository_and_settle(
    tmp_path: Path, source_registry: Registry, dest_registry: Registry
) -> None:
    """Two sources into one repository, v1.* from one and v2.* from the other, both pruning:
    neither touches the other's tags, and `check` settles at 0."""
    v1 = {
        t: push(source_registry, "team/app", t, Image.docker([Blob.random(400, seed=t)]))
        for t in ("v1.0", "v1.1", "v1.2")
    }
    v2 = {
        t: push(source_registry, "other/app", t, Image.docker([Blob.random(400, seed=t)]))
        for t in ("v2.0", "v2.1")
    }
    config = registry_rules_config(
        tmp_path,
        source_registry,
        dest_registry,
        f"""
        - name: one
          source: {source_registry.host}/team/app
          destination: "{dest_registry.host}/m/{{name}}"
          tags: {{include: ['v1\\..*']}}
          prune: true
        - name: two
          source: {source_registry.host}/other/app
          destination: "{dest_registry.host}/m/{{name}}"
          tags: {{include: ['v2\\..*']}}
          prune: true
        """,
    )
    first = regsync_json("once", config, env=FAST_RETRIES)
    source_registry.delete_manifest("team/app", v1["v1.2"].digest)
    second = regsync_json("once", config, env=FAST_RETRIES)
    settled = regsync_json("check", config, env=FAST_RETRIES)

    assert first.code == 0 and [r["tags"]["copied"] for r in first.data["rules"]] == [3, 2]
    assert second.code == 0 and [r["tags"]["pruned"] for r in second.data["rules"]] == [1, 0]
    assert settled.code == 0 and settled.data["ok"] is True, settled.stderr
    kept = {t: p.digest for t, p in {**v1, **v2}.items() if t != "v1.2"}
    assert {t: dest_registry.manifest_digest("m/app", t) for t in kept} == kept
    assert sorted(dest_registry.tags("m/app")) == sorted(kept)


def test_two_rules_writing_one_repository_are_refused_before_any_request(
    tmp_path: Path, source_registry: Registry, dest_registry: Registry
) -> None:
    push(source_registry, "team/app", "1", Image.docker([Blob.random(300, seed="r")]))
    config = registry_rules_config(
        tmp_path,
        source_registry,
        dest_registry,
        f"""
        - name: all
          source: {source_registry.host}/team/*
          destination: {dest_registry.host}/m
        - name: one
          source: {source_registry.host}/team/app
          destination: {dest_registry.host}/m
          prune: true
        """,
    )
    for cmd in ("validate", "once", "check", "verify"):
        proc = run_regsync(cmd, "-c", config)
        assert proc.returncode == 2, (cmd, proc.stderr)
        assert "rule 'one' and rule 'all' (line" in proc.stderr
        assert "can both write destination repository m/team/app" in proc.stderr
    assert dest_registry.catalog() == []


def test_mapping_names_every_colliding_source_and_passes_a_one_to_one_rule() -> None:
    flat = DestinationSpec.parse("r.io/flat/{name}")
    with pytest.raises(MappingError) as info:
        map_repositories(flat, Listed(("deep/a/x/app", "deep/b/y/app", "deep/c/web", "deep/d/web")))
    assert str(info.value).startswith(
        "source repositories deep/a/x/app, deep/b/y/app all map to destination flat/app "
        "(1 more destinations collide); nothing of this rule was synced"
    )
    found = map_repositories(
        DestinationSpec.parse("r.io/m/{path}"), Listed(("a/app", "b/app"), ("a/../b",))
    )
    assert [(p.source, p.destination) for p in found.pairs] == [
        ("a/app", "m/a/app"),
        ("b/app", "m/b/app"),
    ]
    assert found.skipped == (
        ("a/../b", "skipped repository 'a/../b': not a valid repository name"),
    )
