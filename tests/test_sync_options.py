"""Sync options from regclient's regsync, against real `docker-registry` pairs: `once --missing`,
`backup`, `media_types`, referrer filters."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import Blob, Image, Manifest, RegistryFactory, mirror_config, push, regsync_json

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
