"""Platform subsets against real registries: only the listed children travel, and the subset
index is recognised as up to date on the next run without touching the source."""

from __future__ import annotations

import json
from pathlib import Path

from tests.support import (
    FAST_RETRIES,
    Blob,
    Image,
    Index,
    Manifest,
    Registry,
    mirror_config,
    only_rule,
    push,
    regsync_json,
)
from tests.support.matrix import untag

PLATFORMS = "platforms: [linux/amd64, linux/arm64]"


def multi(seed: str) -> tuple[Manifest, dict[str, Manifest]]:
    base = Blob.random(2000, seed="base")
    images = {
        p: Image.oci([base, Blob.random(1500, seed=f"{seed}/{p}")], platform=p)
        for p in ("linux/amd64", "linux/arm64/v8", "linux/arm/v7")
    }
    return Index.oci(list(images.values())), images


def test_subset_is_pushed_and_recognised_as_up_to_date(
    tmp_path: Path, source_registry: Registry, dest_registry: Registry
) -> None:
    index, images = multi("1")
    src = push(source_registry, "diamol/app", "1.0", index)
    d_amd = Image.docker([Blob.random(900, seed="d-amd")], platform="linux/amd64")
    d_s390 = Image.docker([Blob.random(900, seed="d-s390")], platform="linux/s390x")
    listed = push(source_registry, "diamol/app", "list", Index.docker_list([d_amd, d_s390]))
    single = push(source_registry, "diamol/app", "single", Image.docker([Blob.random(800, seed=9)]))
    cfg = mirror_config(tmp_path, source_registry, dest_registry, "diamol/app", PLATFORMS)

    code, summary, stderr = regsync_json("once", cfg, env=FAST_RETRIES)

    r = only_rule(summary)
    assert code == 0, summary
    assert r["tags"]["copied"] == 3 and r["platform_subsets"] == 2
    assert "2 tags hold a platform subset" in stderr
    _, raw = dest_registry.manifest("diamol/app", "1.0")
    subset = json.loads(raw)
    assert [m["digest"] for m in subset["manifests"]] == [
        images["linux/amd64"].digest,
        images["linux/arm64/v8"].digest,
    ]
    assert subset["annotations"] == {
        "io.regsync.source.digest": src.digest,
        "io.regsync.platforms": "linux/amd64,linux/arm64",
    }
    assert dest_registry.manifest_digest("diamol/app", "1.0") != src.digest
    assert dest_registry.manifest_digest("diamol/app", images["linux/arm/v7"].digest) is None
    arm7_layer = images["linux/arm/v7"].blobs[-1]
    assert not dest_registry.blob_exists("diamol/app", arm7_layer.digest)
    _, list_raw = dest_registry.manifest("diamol/app", "list")
    assert [m["digest"] for m in json.loads(list_raw)["manifests"]] == [d_amd.digest]
    assert json.loads(list_raw)["mediaType"] == listed.media_type
    assert dest_registry.manifest_digest("diamol/app", "single") == single.digest  # whole

    code, summary, _ = regsync_json("once", cfg, env=FAST_RETRIES)

    r = only_rule(summary)
    assert code == 0, summary
    assert r["tags"] == {"copied": 0, "up_to_date": 3, "pruned": 0, "failed": 0}
    assert r["source_manifest_gets"] == 0 and r["manifests_pushed"] == 0
    assert r["blobs"] == {"copied": 0, "mounted": 0, "present": 0}

    code, plan, _ = regsync_json("check", cfg, env=FAST_RETRIES)
    assert code == 0
    (tag,) = [t for t in plan["plan"][0]["repos"][0]["tags"] if t["tag"] == "1.0"]
    assert tag["action"] == "up_to_date" and tag["platforms"] == "linux/amd64,linux/arm64"
    assert tag["source_digest"] == src.digest and tag["dest_digest"] != src.digest


def test_source_change_or_new_platform_list_recopies_the_subset(
    tmp_path: Path, source_registry: Registry, dest_registry: Registry
) -> None:
    push(source_registry, "diamol/app", "1.0", multi("1")[0])
    cfg = mirror_config(tmp_path, source_registry, dest_registry, "diamol/app", PLATFORMS)
    assert regsync_json("once", cfg, env=FAST_RETRIES).code == 0
    changed, images = multi("2")
    push(source_registry, "diamol/app", "1.0", changed)

    code, plan, _ = regsync_json("check", cfg, env=FAST_RETRIES)
    (tag,) = plan["plan"][0]["repos"][0]["tags"]
    assert code == 1 and tag["action"] == "copy" and "source changed" in tag["reason"]
    assert regsync_json("once", cfg, env=FAST_RETRIES).code == 0
    arm_only = mirror_config(
        tmp_path, source_registry, dest_registry, "diamol/app", "platforms: [linux/arm64/v8]"
    )

    code, summary, _ = regsync_json("once", arm_only, env=FAST_RETRIES)

    assert code == 0 and only_rule(summary)["tags"]["copied"] == 1
    subset = json.loads(dest_registry.manifest("diamol/app", "1.0")[1])
    assert [m["digest"] for m in subset["manifests"]] == [images["linux/arm64/v8"].digest]
    assert subset["annotations"]["io.regsync.source.digest"] == changed.digest


def test_an_index_nesting_an_index_is_filtered_at_every_level(
    tmp_path: Path, source_registry: Registry, dest_registry: Registry
) -> None:
    """A nested index is kept if any platform in it is wanted, as its own subset (recording
    its source digest); one with no wanted platform is dropped; the next run is a no-op."""
    base = Blob.random(2000, seed="n-base")
    image = {
        p: Image.oci([base, Blob.random(1200, seed=f"n/{p}")], platform=p)
        for p in ("linux/amd64", "linux/arm/v7", "linux/arm64", "linux/s390x")
    }
    inner = Index.oci([image["linux/amd64"], image["linux/arm/v7"]])
    unwanted = Index.oci([image["linux/s390x"]])
    top = push(source_registry, "nest/app", "1", Index.oci([inner, image["linux/arm64"], unwanted]))
    cfg = mirror_config(tmp_path, source_registry, dest_registry, "nest/app", PLATFORMS)

    code, summary, stderr = regsync_json("once", cfg, env=FAST_RETRIES)

    assert code == 0, stderr
    assert only_rule(summary)["tags"]["copied"] == 1
    _, raw = dest_registry.manifest("nest/app", "1")
    subset = json.loads(raw)
    nested_digest, arm64 = (m["digest"] for m in subset["manifests"])
    assert arm64 == image["linux/arm64"].digest
    assert subset["annotations"]["io.regsync.source.digest"] == top.digest
    _, nested_raw = dest_registry.manifest("nest/app", nested_digest)
    nested = json.loads(nested_raw)
    assert [m["digest"] for m in nested["manifests"]] == [image["linux/amd64"].digest]
    assert nested["annotations"]["io.regsync.source.digest"] == inner.digest
    for dropped in ("linux/arm/v7", "linux/s390x"):
        assert not dest_registry.blob_exists("nest/app", image[dropped].blobs[-1].digest)
        assert dest_registry.manifest_digest("nest/app", image[dropped].digest) is None
    assert dest_registry.blob("nest/app", image["linux/amd64"].blobs[-1].digest)

    code, summary, _ = regsync_json("once", cfg, env=FAST_RETRIES)
    r = only_rule(summary)
    assert code == 0 and r["tags"]["up_to_date"] == 1 and r["source_manifest_gets"] == 0


def test_a_renamed_tag_keeps_its_subset_when_the_old_name_is_pruned(
    tmp_path: Path, source_registry: Registry, dest_registry: Registry
) -> None:
    """Source `1.0` becomes `2.0` (same index): the copy of `2.0` makes the very subset `1.0`
    points at, so pruning `1.0` must not delete that digest (it would take `2.0` along)."""
    index, _ = multi("1")
    push(source_registry, "diamol/app", "1.0", index)
    push(source_registry, "diamol/app", "keep", Image.oci([Blob.random(500, seed="keep")]))
    extra = f"{PLATFORMS}\nprune: true"
    cfg = mirror_config(tmp_path, source_registry, dest_registry, "diamol/app", extra)
    assert regsync_json("once", cfg, env=FAST_RETRIES).code == 0
    subset = dest_registry.manifest_digest("diamol/app", "1.0")
    push(source_registry, "diamol/app", "2.0", index)
    untag(source_registry, "diamol/app", "1.0")

    code, summary, _ = regsync_json("once", cfg, env=FAST_RETRIES)

    r = only_rule(summary)
    assert code == 0, summary
    assert r["tags"] == {"copied": 1, "up_to_date": 1, "pruned": 1, "failed": 0}, r
    assert sorted(dest_registry.tags("diamol/app")) == ["2.0", "keep"]
    assert dest_registry.manifest_digest("diamol/app", "2.0") == subset
