"""End-to-end mirroring against two real registries: digests, bytes, counts, mounts."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.support import (
    Blob,
    Image,
    Index,
    Manifest,
    Registry,
    mirror_config,
    only_rule,
    push,
    regsync_json,
    run_regsync,
)


def seed_mixed(src: Registry) -> dict[str, str]:
    """Single-arch Docker and OCI, an OCI index, a Docker list, an empty layer, shared base."""
    base = Blob.random(150_000, seed="base")
    amd = Image.oci([base, Blob.random(40_000, seed="amd")], platform="linux/amd64")
    arm = Image.oci([base, Blob.random(40_000, seed="arm")], platform="linux/arm64/v8")
    d_amd = Image.docker([base, Blob.random(30_000, seed="d-amd")], platform="linux/amd64")
    d_arm = Image.docker([base, Blob.random(30_000, seed="d-arm")], platform="linux/arm64/v8")
    pushed = [
        push(src, "diamol/single", "1.0", Image.docker([base, Blob.random(20_000, seed=1)])),
        push(src, "diamol/single", "oci", Image.oci([base, Blob.random(20_000, seed=2)])),
        push(src, "diamol/multi", "1.0", Index.oci([amd, arm])),
        push(src, "diamol/list", "1.0", Index.docker_list([d_amd, d_arm])),
        push(src, "diamol/empty", "1.0", Image.oci([Blob.empty(), base])),
        push(src, "other/ignored", "1.0", Image.docker([Blob.random(1000, seed=3)])),
    ]
    return {p.ref: p.digest for p in pushed}


def test_mirror_copies_every_kind_with_identical_digests(
    tmp_path: Path, source_registry: Registry, dest_registry: Registry
) -> None:
    """Every destination tag has the source digest and the exact source bytes."""
    expected = seed_mixed(source_registry)
    config = mirror_config(tmp_path, source_registry, dest_registry, "diamol/*")

    code, summary, _ = regsync_json("once", config)

    assert code == 0, summary
    r = only_rule(summary)
    assert r["repos"] == 4 and r["tags"]["copied"] == 5 and r["tags"]["failed"] == 0
    for ref, digest in expected.items():
        repo, tag = ref.split(":")
        if repo.startswith("other/"):
            assert dest_registry.manifest_digest(repo, tag) is None
            continue
        assert dest_registry.manifest_digest(repo, tag) == digest
        assert dest_registry.manifest(repo, tag) == source_registry.manifest(repo, tag)
    # The shared base layer was sent once, then mounted into the other repositories.
    assert r["blobs"]["mounted"] >= 3
    assert r["bytes_copied"] < 2 * 150_000 + 5 * 50_000


def test_skopeo_reads_the_mirror(
    tmp_path: Path, source_registry: Registry, dest_registry: Registry
) -> None:
    """An independent client inspects and copies what regsync mirrored."""
    expected = seed_mixed(source_registry)
    code, _, _ = regsync_json(
        "once", mirror_config(tmp_path, source_registry, dest_registry, "diamol/*")
    )
    assert code == 0
    ref = f"docker://{dest_registry.host}/diamol/multi:1.0"
    raw = subprocess.run(
        ["skopeo", "inspect", "--raw", "--tls-verify=false", ref],
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout
    assert raw == source_registry.manifest("diamol/multi", "1.0")[1]
    out = tmp_path / "copy"
    subprocess.run(
        [
            "skopeo",
            "copy",
            "--all",
            "--src-tls-verify=false",
            f"docker://{dest_registry.host}/diamol/list:1.0",
            f"dir:{out}",
        ],
        capture_output=True,
        check=True,
        timeout=120,
    )
    assert (out / "manifest.json").read_bytes() == source_registry.manifest("diamol/list", "1.0")[1]
    assert expected["diamol/list:1.0"]


def test_second_run_is_a_no_op(
    tmp_path: Path, source_registry: Registry, dest_registry: Registry
) -> None:
    """Up-to-date tags cost a HEAD per side: no blobs, no pushes, no source manifest GETs."""
    seed_mixed(source_registry)
    config = mirror_config(tmp_path, source_registry, dest_registry, "diamol/*")
    assert regsync_json("once", config).code == 0

    code, summary, _ = regsync_json("once", config)

    r = only_rule(summary)
    assert code == 0
    assert r["tags"] == {"copied": 0, "up_to_date": 5, "pruned": 0, "failed": 0}
    assert r["blobs"] == {"copied": 0, "mounted": 0, "present": 0}
    assert r["manifests_pushed"] == 0
    assert r["source_manifest_gets"] == 0


def test_changed_tag_is_recopied_sending_only_new_blobs(
    tmp_path: Path, source_registry: Registry, dest_registry: Registry
) -> None:
    base = Blob.random(100_000, seed="base")
    push(source_registry, "diamol/app", "1.0", Image.docker([base, Blob.random(10_000, seed=1)]))
    push(source_registry, "diamol/app", "2.0", Image.docker([base, Blob.random(10_000, seed=2)]))
    config = mirror_config(tmp_path, source_registry, dest_registry, "diamol/app")
    assert regsync_json("once", config).code == 0
    new_layer = Blob.random(12_345, seed="new")
    changed = push(source_registry, "diamol/app", "2.0", Image.docker([base, new_layer]))

    code, summary, _ = regsync_json("once", config)

    r = only_rule(summary)
    assert code == 0
    assert r["tags"]["copied"] == 1 and r["tags"]["up_to_date"] == 1
    assert r["blobs"]["copied"] == 2  # the new layer and the new config
    assert r["blobs"]["present"] == 1  # the base layer
    config_size = changed.blobs[
        next(d for d in changed.blobs if d not in (base.digest, new_layer.digest))
    ]
    assert r["bytes_copied"] == new_layer.size + config_size
    assert dest_registry.manifest_digest("diamol/app", "2.0") == changed.digest


def test_tag_filters_full_match(
    tmp_path: Path, source_registry: Registry, dest_registry: Registry
) -> None:
    layer = Blob.random(1000, seed=1)
    for tag in ("1.0", "1.0-rc1", "10", "latest"):
        push(source_registry, "diamol/app", tag, Image.docker([layer]))
    extra = "    tags:\n      include: ['1.*', 'latest']\n      exclude: ['.*-rc\\d*']\n"
    config = mirror_config(tmp_path, source_registry, dest_registry, "diamol/app", extra)

    code, summary, _ = regsync_json("once", config)

    assert code == 0, summary
    assert sorted(dest_registry.tags("diamol/app")) == ["1.0", "10", "latest"]


def test_check_reports_drift_and_changes_nothing(
    tmp_path: Path, source_registry: Registry, dest_registry: Registry
) -> None:
    push(source_registry, "diamol/app", "1.0", Image.docker([Blob.random(1000, seed=1)]))
    config = mirror_config(tmp_path, source_registry, dest_registry, "diamol/app")

    drift = run_regsync("check", "-c", config, "--json")
    assert drift.returncode == 1, drift.stderr
    plan = json.loads(drift.stdout)["plan"][0]["repos"][0]["tags"]
    assert [(t["tag"], t["action"]) for t in plan] == [("1.0", "copy")]
    assert dest_registry.tags("diamol/app") == []

    assert regsync_json("once", config).code == 0
    clean = run_regsync("check", "-c", config)
    assert clean.returncode == 0, clean.stderr


def test_corrupt_source_blob_is_never_pushed_onward(
    tmp_path: Path, source_registry: Registry, dest_registry: Registry
) -> None:
    """A blob whose bytes do not match its digest fails the tag; nothing referencing it lands."""
    good = Blob.random(5000, seed="good")
    push(source_registry, "diamol/app", "good", Image.docker([good]))
    bad = Blob.random(5000, seed="bad")
    image = Image.docker([bad])
    push(source_registry, "diamol/app", "bad", image)
    # Corrupt the stored layer in place: the registry now serves other bytes under its digest.
    hexdigest = bad.digest.split(":")[1]
    data_file = next(
        source_registry.storage.rglob(f"blobs/sha256/{hexdigest[:2]}/{hexdigest}/data")
    )
    data_file.write_bytes(Blob.random(5000, seed="evil").data)
    config = mirror_config(tmp_path, source_registry, dest_registry, "diamol/app")

    code, summary, _ = regsync_json("once", config)

    r = only_rule(summary)
    assert code == 1
    assert r["tags"]["copied"] == 1 and r["tags"]["failed"] == 1
    assert any("does not match" in e for e in r["errors"]), r["errors"]
    assert dest_registry.tags("diamol/app") == ["good"]
    assert not dest_registry.blob_exists("diamol/app", bad.digest)


def test_an_index_whose_entries_carry_an_empty_artifact_type_is_mirrored(
    tmp_path: Path, source_registry: Registry, dest_registry: Registry
) -> None:
    """Garden Linux's publishing library writes every index entry with `"artifactType": ""`:
    an empty field says nothing, as an absent one, so the index is mirrored with its digest
    (not refused as a media type off the grammar)."""
    amd = Image.oci([Blob.random(900, seed="gl-amd")], platform="linux/amd64")
    arm = Image.oci([Blob.random(900, seed="gl-arm")], platform="linux/arm64")
    plain = Index.oci([amd, arm])
    body = plain.json
    for entry in body["manifests"]:
        entry["artifactType"] = ""
    index = Manifest(plain.media_type, json.dumps(body).encode(), children=plain.children)
    push(source_registry, "diamol/gardenlinux", "1877", index)
    config = mirror_config(tmp_path, source_registry, dest_registry, "diamol/*")

    run = regsync_json("once", config)

    assert run.code == 0, run.stderr
    assert run.rule["tags"]["copied"] == 1
    assert dest_registry.manifest("diamol/gardenlinux", "1877") == source_registry.manifest(
        "diamol/gardenlinux", "1877"
    )
    assert dest_registry.manifest_digest("diamol/gardenlinux", "1877") == index.digest
