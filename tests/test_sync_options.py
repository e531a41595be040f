"""Sync options from regclient's regsync, against real `docker-registry` pairs: `once --missing`,
`backup`, `media_types`, referrer filters."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support import (
    DOCKER_LIST,
    DOCKER_MANIFEST,
    OCI_MANIFEST,
    Blob,
    Image,
    Index,
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


def _helm_chart(seed: str) -> Manifest:
    """A Helm chart as `helm push` stores it: an OCI image manifest with Helm's config type."""
    config = Blob(f'{{"name": "{seed}", "version": "0.1.0"}}'.encode())
    chart = Blob.random(800, seed=seed)
    body = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config.descriptor("application/vnd.cncf.helm.config.v1+json"),
        "layers": [chart.descriptor("application/vnd.cncf.helm.chart.content.v1.tar+gzip")],
    }
    return Manifest(OCI_MANIFEST, json.dumps(body).encode(), (config, chart))


INDEX_TYPES = "[application/vnd.oci.image.index.v1+json, " + DOCKER_LIST + "]"
IMAGE_TYPES = (
    "[application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, "
    f"{DOCKER_LIST}, {DOCKER_MANIFEST}, application/vnd.oci.image.config.v1+json, "
    "application/vnd.docker.container.image.v1+json]"
)


def test_media_types_skips_manifest_types_not_listed_without_reading_them(
    tmp_path: Path, registry_factory: RegistryFactory
) -> None:
    src, dst = registry_factory(), registry_factory()
    index = Index.oci([Image.oci([Blob.random(900, seed="mt-amd")]), _image("mt-arm")])
    push(src, "team/app", "multi", index)
    push(src, "team/app", "single", _image("mt-single"))
    config = mirror_config(tmp_path, src, dst, "team/app", f"media_types: {INDEX_TYPES}")

    check = regsync_json("check", config)
    (repo,) = check.data["plan"][0]["repos"]
    assert [t["tag"] for t in repo["tags"]] == ["multi"]
    assert repo["filtered"] == [
        {
            "tag": "single",
            "by": "media_types",
            "detail": f"media type {DOCKER_MANIFEST} is not in media_types",
        }
    ]
    once = regsync_json("once", config)
    assert once.code == 0, once.stderr
    r = once.rule
    assert r["tags"] == {"copied": 1, "up_to_date": 0, "pruned": 0, "failed": 0}, r
    assert r["skipped_media_types"] == 1 and r["source_manifest_gets"] == 3, r  # index + 2
    assert any("1 tags skipped by media_types: single (media type" in n for n in r["notes"])
    assert sorted(dst.tags("team/app")) == ["multi"]


def test_media_types_with_image_config_types_skips_helm_charts(
    tmp_path: Path, registry_factory: RegistryFactory
) -> None:
    src, dst = registry_factory(), registry_factory()
    image = push(src, "charts/app", "1.0", _image("mt-image"))
    push(src, "charts/app", "chart-0.1.0", _helm_chart("mt-chart"))
    config = mirror_config(tmp_path, src, dst, "charts/app", f"media_types: {IMAGE_TYPES}")

    once = regsync_json("once", config)
    assert once.code == 0, once.stderr
    r = once.rule
    assert r["tags"] == {"copied": 1, "up_to_date": 0, "pruned": 0, "failed": 0}, r
    assert r["skipped_media_types"] == 1, r
    # One GET per manifest read: the image's, shared by the filter and its copy, and the chart's.
    assert r["source_manifest_gets"] == 2, r
    assert dst.tags("charts/app") == ["1.0"]
    assert dst.manifest_digest("charts/app", "1.0") == image.digest
    helm = "artifact type application/vnd.cncf.helm.config.v1+json is not in media_types"
    assert any(helm in note for note in r["notes"]), r["notes"]

    plain = mirror_config(tmp_path, src, dst, "charts/app", name="all")
    everything = regsync_json("once", plain)  # without media_types the chart is copied
    assert everything.code == 0 and everything.rule["tags"]["copied"] == 1, everything.rule
