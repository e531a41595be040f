"""Sync options from regclient's regsync, against real `docker-registry` pairs: `once --missing`,
`backup`, `media_types`, referrer filters."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import (
    Blob,
    Image,
    Manifest,
    RegistryFactory,
    mirror_config,
    push,
    regsync_json,
    run_regsync,
)

pytestmark = pytest.mark.integration


def _image(seed: str) -> Manifest:
    return Image.docker([Blob.random(1500, seed=seed)])


def test_once_missing_copies_absent_tags_and_leaves_differing_ones(
    tmp_path: Path, registry_factory: RegistryFactory
) -> None:
    src, dst = registry_factory(), registry_factory()
    pushed = {t: push(src, "team/app", t, _image(f"src-{t}")) for t in ("1", "2", "3")}
    push(dst, "team/app", "1", _image("src-1"))
    pinned = push(dst, "team/app", "2", _image("pinned-2"))
    push(dst, "team/app", "gone", _image("dest-only"))
    config = mirror_config(tmp_path, src, dst, "team/app", "prune: true")

    first = regsync_json("once", config, "--missing")
    assert first.code == 0, first.stderr
    r = first.rule
    assert r["tags"] == {"copied": 1, "up_to_date": 1, "pruned": 0, "failed": 0}, r
    assert r["left_differing"] == 1
    assert any("left as is (--missing): 2" in note for note in r["notes"]), r["notes"]
    assert dst.manifest_digest("team/app", "3") == pushed["3"].digest
    assert dst.manifest_digest("team/app", "2") == pinned.digest  # not overwritten
    assert dst.manifest_digest("team/app", "gone") is not None  # --missing never prunes

    drift = regsync_json("check", config)
    assert drift.code == 1  # the differing tag is still drift for a plain check
    plain = regsync_json("once", config)
    assert plain.code == 0, plain.stderr
    assert dst.manifest_digest("team/app", "2") == pushed["2"].digest
    assert dst.manifest_digest("team/app", "gone") is None


def test_backup_keeps_the_overwritten_image_and_is_counted_in_summary_and_metric(
    tmp_path: Path, registry_factory: RegistryFactory
) -> None:
    src, dst = registry_factory(), registry_factory()
    old = push(dst, "team/app", "latest", _image("old"))
    new = push(src, "team/app", "latest", _image("new"))
    push(src, "team/app", "fresh", _image("fresh"))
    config = mirror_config(tmp_path, src, dst, "team/app", "backup: 'backup-{tag}'")

    check = run_regsync("check", "-c", config)
    assert check.returncode == 1
    assert "latest (destination has sha256:" in check.stderr
    assert "backup as backup-latest" in check.stderr
    assert "backup-fresh" not in check.stderr  # a tag the destination lacks has nothing to keep

    metrics = tmp_path / "once.prom"
    once = regsync_json("once", config, "--metrics-file", metrics)
    assert once.code == 0, once.stderr
    assert once.rule["backups"] == 1 and once.rule["manifests_pushed"] == 3, once.rule
    assert 'regsync_backups_total{rule="mirror"} 1.0' in metrics.read_text()
    assert dst.manifest_digest("team/app", "backup-latest") == old.digest
    assert dst.manifest_digest("team/app", "latest") == new.digest
    assert sorted(dst.tags("team/app")) == ["backup-latest", "fresh", "latest"]

    again = regsync_json("once", config)  # unchanged: no backup made
    assert again.code == 0 and again.rule["backups"] == 0, again.rule


def test_a_backup_name_that_is_no_tag_fails_the_tag_and_leaves_it_as_it_was(
    tmp_path: Path, registry_factory: RegistryFactory
) -> None:
    src, dst = registry_factory(), registry_factory()
    long_tag = "t" * 125  # + "-prev" is 130 characters: over the 128 a tag may have
    kept = push(dst, "team/app", long_tag, _image("kept"))
    push(src, "team/app", long_tag, _image("newer"))
    config = mirror_config(tmp_path, src, dst, "team/app", "backup: '{tag}-prev'")

    once = regsync_json("once", config)
    assert once.code == 1
    assert once.rule["tags"]["failed"] == 1 and once.rule["backups"] == 0, once.rule
    assert any("is not a valid tag" in e for e in once.rule["errors"]), once.rule["errors"]
    assert dst.manifest_digest("team/app", long_tag) == kept.digest
