"""`tar:FILE` bundles: an OCI layout in one tar (`oci-archive`), written atomically, read in
place, every member untrusted. End-to-end runs use real registries and skopeo; the archive
unit tests build hostile tars by hand."""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from regsync.backends.tarball import Tarball
from regsync.backends.tarfs import MAX_SKIPPED, Archive, pack
from regsync.errors import IntegrityError, LayoutError, NotFoundError
from regsync.oci.manifest import Descriptor
from tests.policy_helpers import skopeo_digest
from tests.support import (
    Blob,
    Image,
    Index,
    Registry,
    push,
    regsync_json,
    run_regsync,
    write_config,
)
from tests.support.stored import store


def bundle_config(tmp_path: Path, src: Registry, source: str, bundle: Path) -> Path:
    return write_config(
        tmp_path,
        f"""
        version: 1
        registries:
          "{src.host}": {{tls: http}}
        rules:
          - {{name: export, source: "{src.host}/{source}", destination: "tar:{bundle}"}}
        """,
        name="export.yaml",
    )


def import_config(tmp_path: Path, bundle: Path, dst: Registry, name: str = "import.yaml") -> Path:
    return write_config(
        tmp_path,
        f"""
        version: 1
        registries:
          "{dst.host}": {{tls: http}}
        rules:
          - {{name: import, source: "tar:{bundle}", destination: "{dst.host}"}}
        """,
        name=name,
    )


def test_export_to_a_tar_then_import_keeps_digests_and_skopeo_reads_the_archive(
    tmp_path: Path, source_registry: Registry, dest_registry: Registry
) -> None:
    """registry -> tar:FILE -> registry: the digests are the source's, skopeo reads the bundle
    as an oci-archive by `repo:tag`, nothing but the bundle is left beside it, and a second
    export with nothing new leaves the file untouched."""
    app = push(source_registry, "team/app", "1", Image.oci([Blob.tar_gz(30_000, seed="app")]))
    layer = Blob.tar_gz(20_000, seed="multi")
    multi = Index.oci([Image.oci([layer]), Image.oci([layer], "linux/arm64")])
    multi_pushed = push(source_registry, "team/multi", "2", multi)
    docker = push(source_registry, "team/old", "3", Image.docker([Blob.random(900, seed="d")]))
    bundle = tmp_path / "out" / "bundle.tar"
    bundle.parent.mkdir()

    export = regsync_json("once", bundle_config(tmp_path, source_registry, "team/*", bundle))
    assert export.code == 0, export.stderr
    assert export.rule["tags"]["copied"] == 3
    assert [p.name for p in bundle.parent.iterdir()] == ["bundle.tar"]  # no temp file left
    assert skopeo_digest(f"oci-archive:{bundle}:team/app:1") == app.digest
    assert skopeo_digest(f"oci-archive:{bundle}:team/multi:2") == multi_pushed.digest
    before = bundle.read_bytes()

    again = regsync_json("once", bundle_config(tmp_path, source_registry, "team/*", bundle))
    assert again.code == 0 and again.rule["tags"]["up_to_date"] == 3
    assert bundle.read_bytes() == before
    later = push(source_registry, "team/app", "4", Image.oci([Blob.tar_gz(9_000, seed="later")]))
    grown = regsync_json("once", bundle_config(tmp_path, source_registry, "team/*", bundle))
    assert grown.code == 0 and (grown.rule["tags"]["copied"], grown.rule["tags"]["up_to_date"]) == (
        1,
        3,
    )
    assert skopeo_digest(f"oci-archive:{bundle}:team/app:4") == later.digest
    assert skopeo_digest(f"oci-archive:{bundle}:team/app:1") == app.digest  # kept from before

    imported = regsync_json("once", import_config(tmp_path, bundle, dest_registry))
    assert imported.code == 0, imported.stderr
    for pushed in (app, multi_pushed, docker, later):
        assert dest_registry.manifest_digest(pushed.repo, pushed.tag or "") == pushed.digest
    host = dest_registry.host
    assert skopeo_digest(f"docker://{host}/team/multi:2") == multi_pushed.digest

    verified = regsync_json("verify", bundle_config(tmp_path, source_registry, "team/*", bundle))
    assert verified.code == 0 and verified.rule["blobs_checked"] >= 4


def test_a_damaged_blob_in_a_bundle_fails_its_tag_and_verify_names_it(
    tmp_path: Path, source_registry: Registry, dest_registry: Registry
) -> None:
    """One flipped byte inside a blob member: the import fails that tag (nothing of it is
    pushed) and the other tag goes through; `verify` of the tar reads every blob and reports it."""
    bad_layer = Blob.random(5_000, seed="bad")
    push(source_registry, "team/bad", "1", Image.oci([bad_layer]))
    good = push(source_registry, "team/good", "1", Image.oci([Blob.random(5_000, seed="good")]))
    bundle = tmp_path / "bundle.tar"
    export_config = bundle_config(tmp_path, source_registry, "team/*", bundle)
    assert regsync_json("once", export_config).code == 0
    data = bytearray(bundle.read_bytes())
    offset = Archive.scan(bundle).members[f"blobs/sha256/{bad_layer.digest[7:]}"].offset
    data[offset + 100] ^= 0xFF
    bundle.write_bytes(bytes(data))

    imported = regsync_json("once", import_config(tmp_path, bundle, dest_registry))
    assert imported.code == 1
    assert imported.rule["tags"] == {**imported.rule["tags"], "copied": 1, "failed": 1}
    assert dest_registry.tags("team/bad") == []
    assert dest_registry.manifest_digest("team/good", "1") == good.digest

    verified = regsync_json("verify", export_config)
    assert verified.code == 1
    assert [m["digest"] for m in verified.rule["missing"]] == [bad_layer.digest]


def test_a_bundle_is_renamed_into_place_never_left_half_written(tmp_path: Path) -> None:
    """A pack that fails midway (a source of bytes that breaks) leaves the old file as it
    was and no temp file beside it."""
    final = tmp_path / "b.tar"
    final.write_bytes(b"old bundle")

    def broken() -> Iterator[bytes]:
        yield b"x" * 1000
        raise OSError("disk gone")

    with pytest.raises(OSError, match="disk gone"):
        pack(final, [("oci-layout", 10, iter([b"0123456789"])), ("index.json", 5000, broken())])
    assert final.read_bytes() == b"old bundle"
    assert [p.name for p in tmp_path.iterdir()] == ["b.tar"]


def hostile_tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes]]) -> None:
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            info.size = len(data) if info.isreg() else 0
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)


def member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    return info


async def test_tar_members_are_untrusted_names_links_and_duplicates(tmp_path: Path) -> None:
    """Path traversal, absolute names, links and devices are never taken as layout files: a
    symlink named like a blob is absent, not followed; a member named twice refuses the
    archive; nothing is ever written outside (reading never extracts)."""
    image = Image.oci([Blob.random(100, seed="t")])
    layer = image.blobs[-1]
    index = {"schemaVersion": 2, "manifests": []}
    good = [
        (member("oci-layout"), b'{"imageLayoutVersion": "1.0.0"}'),
        (member("index.json"), json.dumps(index).encode()),
    ]
    evil = [
        (member("../escape"), b"x"),
        (member("/etc/evil"), b"x"),
        (member(f"blobs/sha256/{layer.digest[7:]}", tarfile.SYMTYPE, "/etc/passwd"), b""),
        (member("blobs/sha256/../../index.json"), b"{}"),
        (member(f"blobs/sha256/{'0' * 64}", tarfile.CHRTYPE), b""),
    ]
    path = tmp_path / "hostile.tar"
    hostile_tar(path, good + evil)
    archive = Archive.scan(path)
    assert sorted(archive.members) == ["index.json", "oci-layout"]
    assert len(archive.skipped) == 5
    tarball = Tarball(path)
    tarball.is_source = True
    try:
        desc = Descriptor("application/octet-stream", layer.digest, layer.size)
        assert not await tarball.blob_head("any", layer.digest)
        with pytest.raises(NotFoundError):
            _ = [c async for c in tarball.blob_read("any", desc)]
    finally:
        tarball.discard()
    assert not (tmp_path.parent / "escape").exists()

    twice = tmp_path / "twice.tar"
    hostile_tar(twice, [*good, (member("index.json"), b"{}")])
    with pytest.raises(LayoutError, match="appears twice"):
        Archive.scan(twice)


def test_skipped_members_are_counted_not_all_kept(tmp_path: Path) -> None:
    """A bundle of many junk members (up to the million a scan allows) keeps a few of their
    names for the log and counts the rest, rather than one string per member in memory."""
    junk = [(member(f"junk/{i:04d}-" + "n" * 200), b"") for i in range(300)]
    path = tmp_path / "junk.tar"
    hostile_tar(path, [(member("oci-layout"), b"{}"), *junk])
    archive = Archive.scan(path)
    assert len(archive.skipped) == MAX_SKIPPED + 1
    assert archive.skipped[-1] == f"skipped {300 - MAX_SKIPPED} more members"


def test_an_oversized_extended_header_is_refused_before_it_is_read(tmp_path: Path) -> None:
    """tarfile reads a PAX header whole: one over 1 MiB refuses the archive instead."""
    path = tmp_path / "pax.tar"
    info = member("oci-layout")
    info.pax_headers = {"comment": "x" * (2 * 1024 * 1024)}
    hostile_tar(path, [(info, b"{}")])
    with pytest.raises(LayoutError, match="extended header"):
        Archive.scan(path)
    small = tmp_path / "small.tar"
    info.pax_headers = {"comment": "x" * 1000}
    hostile_tar(small, [(info, b"{}")])
    assert list(Archive.scan(small).members) == ["oci-layout"]


async def test_a_blob_member_of_the_wrong_size_or_bytes_is_refused_while_read(
    tmp_path: Path,
) -> None:
    """A blob member whose bytes do not hash to its name fails the read (IntegrityError)."""
    written = Tarball(tmp_path / "b.tar")
    built = Image.oci([Blob.random(3000, seed="w")])
    try:
        await store(written, "team/app", "1", built)
        await written.finish()
    finally:
        written.discard()
    layer = built.blobs[-1]
    data = bytearray((tmp_path / "b.tar").read_bytes())
    offset = Archive.scan(tmp_path / "b.tar").members[f"blobs/sha256/{layer.digest[7:]}"].offset
    data[offset] ^= 0x01
    (tmp_path / "b.tar").write_bytes(bytes(data))
    reader = Tarball(tmp_path / "b.tar")
    reader.is_source = True
    try:
        assert (await reader.manifest_get("team/app", "1")).digest == built.digest
        desc = Descriptor("application/octet-stream", layer.digest, layer.size)
        with pytest.raises(IntegrityError):
            _ = [c async for c in reader.blob_read("team/app", desc)]
        assert not await reader.blob_verify("team/app", desc)
        assert await reader.blob_check("team/app", desc)  # the size is right: proof, not hash
    finally:
        reader.discard()


def test_a_missing_tar_source_is_the_rules_error(tmp_path: Path, dest_registry: Registry) -> None:
    proc = run_regsync("once", "-c", import_config(tmp_path, tmp_path / "nope.tar", dest_registry))
    assert proc.returncode == 1
    assert "nope.tar: no such file" in proc.stderr


def test_a_source_tag_whose_manifest_the_bundle_lacks_fails_naming_it(
    tmp_path: Path, dest_registry: Registry
) -> None:
    """An index entry naming a manifest the bundle does not hold (a damaged or crafted
    bundle) fails that tag with one line, exit 1; it is not taken for a tag that vanished.
    The bundle's other tags are imported."""
    good = Image.oci([Blob.random(300, seed="whole")])
    entries = [
        {
            "mediaType": good.media_type,
            "digest": digest,
            "size": good.size,
            "annotations": {"org.opencontainers.image.ref.name": ref},
        }
        for ref, digest in (("team/app:1", good.digest), ("team/app:ghost", "sha256:" + "e" * 64))
    ]
    files = {
        "oci-layout": b'{"imageLayoutVersion": "1.0.0"}',
        "index.json": json.dumps({"schemaVersion": 2, "manifests": entries}).encode(),
        **{f"blobs/sha256/{b.digest[7:]}": b.data for b in good.blobs},
        f"blobs/sha256/{good.digest[7:]}": good.raw,
    }
    bundle = tmp_path / "damaged.tar"
    pack(bundle, [(name, len(data), iter([data])) for name, data in files.items()])

    proc = run_regsync("once", "-c", import_config(tmp_path, bundle, dest_registry))
    assert proc.returncode == 1, proc.stderr
    assert "ghost" in proc.stderr and "sha256:" + "e" * 64 in proc.stderr
    assert dest_registry.tags("team/app") == ["1"]


def test_a_damaged_blob_is_not_carried_into_the_repacked_bundle(
    tmp_path: Path, source_registry: Registry
) -> None:
    """Adding to an existing bundle packs its blobs again: a member that no longer matches its
    digest fails the pack (naming it) and the bundle stays as it was, rather than the damage
    being carried into a new file that looks freshly written."""
    bad_layer = Blob.random(5_000, seed="rot")
    push(source_registry, "team/old", "1", Image.oci([bad_layer]))
    bundle = tmp_path / "bundle.tar"
    config = bundle_config(tmp_path, source_registry, "team/*", bundle)
    assert regsync_json("once", config).code == 0
    data = bytearray(bundle.read_bytes())
    offset = Archive.scan(bundle).members[f"blobs/sha256/{bad_layer.digest[7:]}"].offset
    data[offset + 100] ^= 0xFF
    bundle.write_bytes(bytes(data))
    push(source_registry, "team/new", "1", Image.oci([Blob.random(5_000, seed="fresh")]))

    added = regsync_json("once", config)
    assert added.code == 1
    assert any(bad_layer.digest in e for e in added.rule["errors"]), added.rule["errors"]
    assert bundle.read_bytes() == bytes(data)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp file


async def test_a_bundle_another_writer_replaced_meanwhile_is_not_overwritten(
    tmp_path: Path,
) -> None:
    """Two runs adding to one bundle each start from the file as it was: the one packing
    second would drop the first one's tags. It fails instead (the bundle changed since this
    run read it), leaving the other writer's bundle in place."""
    path = tmp_path / "b.tar"
    first, second = Tarball(path), Tarball(path)
    try:
        assert (await first.tags("team/a")).names == ()  # both open the (absent) bundle
        assert (await second.tags("team/b")).names == ()
        await store(first, "team/a", "1", Image.oci([Blob.random(300, seed="a")]))
        await store(second, "team/b", "1", Image.oci([Blob.random(300, seed="b")]))
        await first.finish()
        with pytest.raises(LayoutError, match="changed by another writer"):
            await second.finish()
    finally:
        first.discard()
        second.discard()
    reader = Tarball(path)
    reader.is_source = True
    try:
        assert (await reader.repositories()).names == ("team/a",)
    finally:
        reader.discard()
