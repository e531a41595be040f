"""Delta bundles (`delta: true`): each bundle of a rule carries only what earlier ones did not,
still lists every tag, names the bundles it depends on, and imports only in order.

The issue's targets, measured on real registries: after adding one repository on a shared
base, the next bundle is within 10% of the new content; importing bundles 1..N in order into a
fresh registry gives the source digests (read back with skopeo); bundle N alone fails cleanly,
naming bundle N-1, and pushes nothing that references missing content."""

from __future__ import annotations

import json
import tarfile
from collections.abc import ItemsView
from pathlib import Path

import pytest

from regsync.backends.bundle import REQUIRES, SEQUENCE, BundleSeries
from regsync.backends.tarfs import Archive, blob_name, pack
from regsync.config import parse_config
from regsync.errors import ConfigError
from tests.policy_helpers import skopeo_digest
from tests.support import (
    Artifact,
    Blob,
    Image,
    Index,
    Registry,
    RegistryFactory,
    attach,
    push,
    regsync_json,
    run_regsync,
    write_config,
)

MIB = 1024 * 1024


def export(
    tmp_path: Path, src: Registry, bundle: Path, state: Path, extra: str = ""
) -> dict[str, object]:
    config = write_config(
        tmp_path,
        f"""
        version: 1
        registries:
          "{src.host}": {{tls: http}}
        rules:
          - name: field
            source: "{src.host}/team/*"
            destination: "tar:{bundle}"
            delta: true
            {extra}
        """,
        name="export.yaml",
    )
    run = regsync_json("once", config, "--state-dir", state)
    assert run.code == 0, run.stderr
    return run.rule


def import_(
    tmp_path: Path, bundle: Path, dst: Registry, state: Path, extra: str = ""
) -> tuple[int, str]:
    config = write_config(
        tmp_path,
        f"""
        version: 1
        registries:
          "{dst.host}": {{tls: http}}
        rules:
          - {{name: import, source: "tar:{bundle}", destination: "{dst.host}"{extra}}}
        """,
        name="import.yaml",
    )
    run = regsync_json("once", config, "--state-dir", state)
    return run.code, json.dumps(run.data)


def index_of(bundle: Path) -> dict[str, object]:
    with tarfile.open(bundle) as tar:
        handle = tar.extractfile("index.json")
        assert handle is not None
        data: dict[str, object] = json.load(handle)
    return data


def test_delta_bundles_carry_only_new_content_and_import_in_order(
    tmp_path: Path, source_registry: Registry, registry_factory: RegistryFactory
) -> None:
    src = source_registry
    base = Blob.random(2 * MIB, seed="base")
    app_a = push(src, "team/a", "1", Image.oci([base, Blob.random(200_000, seed="a")]))
    exported, imported = tmp_path / "export-state", tmp_path / "import-state"
    first, second = tmp_path / "bundle-1.tar", tmp_path / "bundle-2.tar"

    export(tmp_path, src, first, exported)
    image_b = Image.oci([base, Blob.random(MIB, seed="b")])
    app_b = push(src, "team/b", "1", image_b)
    rule = export(tmp_path, src, second, exported)
    assert rule["tags"] == {**rule["tags"], "copied": 1, "up_to_date": 1}

    # Only B's new layer, config and manifest travel; the shared base does not.
    new = {b.digest: b.size for b in image_b.blobs if b.digest != base.digest}
    new[image_b.digest] = image_b.size
    members = Archive.scan(second).digests
    assert sorted(members) == sorted(new)
    new_bytes = sum(new.values())
    assert second.stat().st_size <= 1.10 * new_bytes, (second.stat().st_size, new_bytes)
    index = index_of(second)
    names = sorted(
        e["annotations"]["org.opencontainers.image.ref.name"]  # type: ignore[index]
        for e in index["manifests"]  # type: ignore[attr-defined]
    )
    assert names == ["team/a:1", "team/b:1"]  # every tag in scope, not only the new one
    annotations = index["annotations"]
    assert annotations[SEQUENCE] == "2"  # type: ignore[index]
    assert annotations[REQUIRES].startswith("bundle-1.tar@sha256:")  # type: ignore[index]
    assert skopeo_digest(f"oci-archive:{second}:team/b:1") == app_b.digest
    verified = regsync_json("verify", tmp_path / "export.yaml")  # what bundle 2 carries
    assert verified.code == 0, verified.data
    # B's config and new layer are read and hashed; the shared base came in bundle 1.
    assert verified.rule["blobs_checked"] == 3 and verified.rule["missing"] == []

    # In order into a fresh registry: the source digests. The second import has a state dir
    # of its own: the shared base is mounted from where bundle 1 put it (team/a), which
    # bundle 2 names, not from what a content index happens to remember.
    dst = registry_factory()
    assert import_(tmp_path, first, dst, imported)[0] == 0
    code, summary = import_(tmp_path, second, dst, tmp_path / "another-state")
    assert code == 0, summary
    blobs = json.loads(summary)["rules"][0]["blobs"]
    assert (blobs["mounted"], blobs["copied"]) == (1, 2)  # the base mounted; B's own copied
    for pushed in (app_a, app_b):
        assert skopeo_digest(f"docker://{dst.host}/{pushed.ref}") == pushed.digest

    # Bundle 2 alone: fails naming bundle 1, and nothing referencing missing content is pushed.
    alone = registry_factory()
    code, summary = import_(tmp_path, second, alone, tmp_path / "alone-state")
    assert code == 1
    assert "import bundle #1 bundle-1.tar (sha256:" in summary
    assert alone.tags("team/a") == [] and alone.tags("team/b") == []

    # Bundle 3: a new tag of team/a on the same base. In order, the base is already in
    # team/a at the destination (present: the bundle declares it, the repository holds it);
    # alone, the error names bundle 2, the one to import just before it.
    third = tmp_path / "bundle-3.tar"
    app_a2 = push(src, "team/a", "2", Image.oci([base, Blob.random(50_000, seed="a2")]))
    export(tmp_path, src, third, exported)
    code, summary = import_(tmp_path, third, dst, tmp_path / "third-state")
    assert code == 0, summary
    blobs = json.loads(summary)["rules"][0]["blobs"]
    assert (blobs["present"], blobs["copied"]) == (1, 2)
    assert skopeo_digest(f"docker://{dst.host}/{app_a2.ref}") == app_a2.digest
    code, summary = import_(tmp_path, third, alone, tmp_path / "alone-state")
    assert code == 1 and "import bundle #2 bundle-2.tar (sha256:" in summary
    assert "it came in bundle #1 bundle-1.tar" in summary
    assert alone.tags("team/a") == []


def test_a_delta_bundle_with_nothing_new_is_not_written_and_the_series_keeps_its_state(
    tmp_path: Path, source_registry: Registry
) -> None:
    """No new content: no bundle file, and the next bundle still depends on bundle 1 only;
    `check` plans against the series (the state dir), not the file, which was carried away."""
    src = source_registry
    push(src, "team/a", "1", Image.oci([Blob.random(5000, seed="only")]))
    state = tmp_path / "state"
    export(tmp_path, src, tmp_path / "b1.tar", state)
    (tmp_path / "b1.tar").unlink()  # carried across: the series, not the file, says what went
    env = {"REGSYNC_STATE_DIR": str(state)}
    planned = regsync_json("check", tmp_path / "export.yaml", env=env)
    assert planned.code == 0, planned.data  # in sync: bundle 1 carried team/a:1
    rule = export(tmp_path, src, tmp_path / "b2.tar", state)
    assert rule["tags"] == {**rule["tags"], "copied": 0, "up_to_date": 1}
    assert not (tmp_path / "b2.tar").exists()
    push(src, "team/c", "1", Image.oci([Blob.random(5000, seed="c")]))
    export(tmp_path, src, tmp_path / "b3.tar", state)
    annotations = index_of(tmp_path / "b3.tar")["annotations"]
    assert annotations[SEQUENCE] == "2"  # type: ignore[index]
    assert annotations[REQUIRES].startswith("b1.tar@sha256:")  # type: ignore[index]
    assert "," not in annotations[REQUIRES]  # type: ignore[index]


def test_delta_needs_a_tar_destination_named_with_key_path_and_line() -> None:
    """`delta: true` on a registry or layout destination is a config error (exit 2 path)."""
    text = """
version: 1
rules:
  - name: r
    source: docker.io/team/app
    destination: oci:/srv/layout
    delta: true
"""
    with pytest.raises(
        ConfigError, match=r"rules\[0\]\.delta \(sync\.yaml:7\): .*tar: destination"
    ):
        parse_config(text)
    assert parse_config(text.replace("oci:", "tar:").replace("layout", "b.tar")).rules[0].delta


def test_a_crafted_bundle_cannot_claim_another_repositorys_blob(
    tmp_path: Path, source_registry: Registry, dest_registry: Registry
) -> None:
    """A bundle is untrusted: one that "leaves out" a blob it does not hold (here the layer of
    another repository at the destination, which the content index knows) gets nothing by
    saying so. The blob is not mounted into the bundle's repository, its tag fails naming
    the bundle to import first, and no manifest referencing the blob is pushed."""
    src, dst = source_registry, dest_registry
    secret = Blob.random(4000, seed="secret")
    push(src, "tenant/secret", "1", Image.oci([secret]))
    state = tmp_path / "state"
    tls = ["--tls", f"{src.host}=http", "--tls", f"{dst.host}=http", "--state-dir", str(state)]
    mirrored = run_regsync("copy", f"{src.host}/tenant/secret", dst.host, *tls)
    assert mirrored.returncode == 0, mirrored.stderr  # the content index: secret in tenant/secret

    evil = Image.oci([secret])  # its config is new; its layer is the other tenant's
    config = evil.blobs[0]
    record = {
        "rule": "x",
        "sequence": 2,
        "requires": [{"sequence": 1, "name": "b1.tar", "sha256": "sha256:" + "0" * 64}],
        "left_out": {secret.digest: 1},
        "carriers": {secret.digest: ["evil/app"]},
    }
    entry = {
        "mediaType": evil.media_type,
        "digest": evil.digest,
        "size": evil.size,
        "annotations": {"org.opencontainers.image.ref.name": "evil/app:1"},
    }
    files = {
        "oci-layout": b'{"imageLayoutVersion": "1.0.0"}',
        "index.json": json.dumps({"schemaVersion": 2, "manifests": [entry]}).encode(),
        "regsync-bundle.json": json.dumps(record).encode(),
        blob_name(evil.digest): evil.raw,
        blob_name(config.digest): config.data,
    }
    crafted = tmp_path / "crafted.tar"
    pack(crafted, [(name, len(data), iter([data])) for name, data in files.items()])

    proc = run_regsync("copy", f"tar:{crafted}", dst.host, *tls)
    assert proc.returncode == 1
    assert "import bundle #1 b1.tar" in proc.stderr
    assert not dst.blob_exists("evil/app", secret.digest)
    assert dst.tags("evil/app") == []


def test_a_delta_series_of_platform_subsets_reads_the_subsets_earlier_bundles_carried(
    tmp_path: Path, source_registry: Registry, registry_factory: RegistryFactory
) -> None:
    """With `platforms`, whether a destination subset is up to date is read from the subset
    itself (the source digest it records): the subset an earlier bundle carried must still be
    readable by the exporter (from the state dir), or every later bundle fails the repository.
    Bundles 1 and 2 imported in order give the same subsets."""
    src = source_registry
    amd64, arm64 = (
        Image.oci([Blob.random(3000, seed="amd")], "linux/amd64"),
        Image.oci([Blob.random(3000, seed="arm")], "linux/arm64"),
    )
    push(src, "team/a", "1", Index.oci([amd64, arm64]))
    state = tmp_path / "state"
    subset = "platforms: [linux/amd64]"
    export(tmp_path, src, tmp_path / "b1.tar", state, subset)
    push(src, "team/b", "1", Image.oci([Blob.random(3000, seed="b")]))
    rule = export(tmp_path, src, tmp_path / "b2.tar", state, subset)
    assert rule["tags"] == {**rule["tags"], "copied": 1, "up_to_date": 1, "failed": 0}
    assert rule["errors"] == []

    dst = registry_factory()
    for bundle in ("b1.tar", "b2.tar"):
        code, out = import_(tmp_path, tmp_path / bundle, dst, tmp_path / "import-state")
        assert code == 0, out
    index = json.loads(dst.manifest("team/a", "1")[1])
    assert [m["digest"] for m in index["manifests"]] == [amd64.digest]


def test_a_delta_bundle_merges_a_new_signature_into_an_index_an_earlier_bundle_carried(
    tmp_path: Path, source_registry: Registry, registry_factory: RegistryFactory
) -> None:
    """With referrers, a signature added after bundle 1 is merged into the fallback index
    bundle 1 carried: the exporter reads that index from the state dir, bundle 2 holds the new
    signature and the merged index, and importing 1 then 2 gives both signatures."""
    src = source_registry
    image = Image.oci([Blob.random(3000, seed="signed")])
    push(src, "team/a", "1", image)
    first = attach(src, "team/a", Artifact.oci(image, "application/vnd.example.sig"))
    state = tmp_path / "state"
    export(tmp_path, src, tmp_path / "b1.tar", state, "referrers: true")
    sbom = Artifact.oci(image, "application/spdx+json", [Blob.random(500, seed="sbom")])
    second = attach(src, "team/a", sbom)
    rule = export(tmp_path, src, tmp_path / "b2.tar", state, "referrers: true")
    assert rule["errors"] == []
    assert rule["tags"] == {**rule["tags"], "copied": 1, "failed": 0}

    dst = registry_factory()
    for bundle in ("b1.tar", "b2.tar"):
        imported = import_(
            tmp_path, tmp_path / bundle, dst, tmp_path / "state-in", ", referrers: true"
        )
        assert imported[0] == 0, imported[1]
    fallback = image.digest.replace(":", "-")
    listed = json.loads(dst.manifest("team/a", fallback)[1])["manifests"]
    assert sorted(m["digest"] for m in listed) == sorted([first.digest, second.digest])


def test_a_delta_bundle_backs_up_a_tag_whose_image_an_earlier_bundle_carried(
    tmp_path: Path, source_registry: Registry
) -> None:
    """`backup` re-tags the destination's own manifest: in a delta series that manifest went
    with an earlier bundle, and the backup still reads it (from the state dir)."""
    src = source_registry
    old = push(src, "team/a", "1", Image.oci([Blob.random(3000, seed="old")]))
    state = tmp_path / "state"
    export(tmp_path, src, tmp_path / "b1.tar", state, "backup: '{tag}-prev'")
    new = push(src, "team/a", "1", Image.oci([Blob.random(3000, seed="new")]))
    rule = export(tmp_path, src, tmp_path / "b2.tar", state, "backup: '{tag}-prev'")
    assert rule["backups"] == 1 and rule["errors"] == [], rule
    entries = {
        e["annotations"]["org.opencontainers.image.ref.name"]: e["digest"]  # type: ignore[index]
        for e in index_of(tmp_path / "b2.tar")["manifests"]  # type: ignore[attr-defined]
    }
    assert entries == {"team/a:1": new.digest, "team/a:1-prev": old.digest}


class _CountedItems(dict[str, int]):
    """A series' ``carried`` map that counts the passes made over it."""

    passes = 0

    def items(self) -> ItemsView[str, int]:  # type: ignore[override]
        self.passes += 1
        return super().items()


def test_recording_a_bundle_walks_what_the_series_carried_once(tmp_path: Path) -> None:
    """`BundleSeries.record` is linear in the series: one pass over the carried digests per
    bundle recorded (it made one per earlier bundle: bundles x digests), and each bundle's
    row still lists exactly what it carried, with the repositories it carried them for."""
    series = BundleSeries(tmp_path, "r")
    series.carried = counted = _CountedItems()
    carried = {}
    for n in range(1, 7):
        blobs = {f"sha256:{n:02d}{i:062x}": [f"team/app{n}"] for i in range(3)}
        series.record(f"b{n}.tar", f"sha256:{n:064x}", blobs, [], {})
        carried[n] = sorted(blobs)
    assert counted.passes == 6

    again = BundleSeries(tmp_path, "r").load()
    state = json.loads((tmp_path / "bundles" / "r.json").read_text())
    assert [row["blobs"] for row in state["bundles"]] == [carried[n] for n in range(1, 7)]
    assert state["bundles"][2]["repositories"] == {d: ["team/app3"] for d in carried[3]}
    assert again.carried == {d: n for n in range(1, 7) for d in carried[n]}
