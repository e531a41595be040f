"""A layout is a directory someone else may have crafted: regsync reads and writes only regular
files inside it, follows no symlink out of it, never blocks on a FIFO, and completes the
leftovers of its own killed first export instead of refusing them.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from pathlib import Path

import pytest

from regsync.backends.layout import Layout
from regsync.errors import LayoutError, NotFoundError
from tests.support import Blob, Image, Registry, push, regsync_json
from tests.test_layout import (
    assert_complete,
    chunks,
    desc_of,
    index_entries,
    layout_config,
    put_image,
    skopeo,
    temp_files,
)


def blob_file(root: Path, digest: str) -> Path:
    return root / "blobs" / "sha256" / digest.split(":")[1]


def layer_of(seed: str) -> bytes:
    """The layer bytes ``put_image(..., seed)`` writes."""
    return hashlib.sha256(seed.encode()).digest() * 100


def tree(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*"))


# -- reading a crafted source ----------------------------------------------------------------


def test_a_fifo_in_blobs_fails_its_tag_and_the_others_import(tmp_path: Path) -> None:
    """A FIFO where a layer should be fails that tag at once (no hang); other tags copy."""
    source = tmp_path / "src"
    good = asyncio.run(put_image(Layout(source), "team/good", "1", "good"))
    asyncio.run(put_image(Layout(source), "team/trap", "1", "trap"))
    fifo = blob_file(source, desc_of(layer_of("trap")).digest)
    fifo.unlink()
    os.mkfifo(fifo)
    out = tmp_path / "out"

    run = regsync_json("once", layout_config(tmp_path, f"oci:{source}", f"oci:{out}"), timeout=60)

    assert run.code == 1, run
    assert run.rule["tags"]["copied"] == 1 and run.rule["tags"]["failed"] == 1, run.rule
    assert "FIFO, not a regular file" in str(run.rule["errors"]), run.rule
    assert {ref: e["digest"] for ref, e in index_entries(out).items()} == {"team/good:1": good}
    assert_complete(out)


async def test_a_symlinked_blob_is_not_read(tmp_path: Path) -> None:
    """A blob symlinked to a file outside the layout is refused, even with the right bytes."""
    root, outside = tmp_path / "l", tmp_path / "secret"
    digest = await put_image(Layout(root), "a", "1", "x")
    layer = desc_of(layer_of("x"))
    outside.write_bytes(layer_of("x"))
    blob_file(root, layer.digest).unlink()
    blob_file(root, layer.digest).symlink_to(outside)
    manifest_bytes = blob_file(root, digest).read_bytes()
    (tmp_path / "m").write_bytes(manifest_bytes)
    blob_file(root, digest).unlink()
    blob_file(root, digest).symlink_to(tmp_path / "m")
    layout = Layout(root)

    with pytest.raises(LayoutError, match="is a symlink, not a regular file: refusing"):
        _ = [c async for c in layout.blob_read("a", layer)]
    with pytest.raises(LayoutError, match="is a symlink, not a regular file: refusing"):
        await layout.manifest_get("a", "1")
    assert not await layout.blob_head("a", layer.digest)
    assert await layout.manifest_head("a", "1") is None  # a destination writes it again


async def test_symlinked_index_and_layout_files_are_refused(tmp_path: Path) -> None:
    root = tmp_path / "l"
    await put_image(Layout(root), "a", "1", "x")
    real = tmp_path / "index.json"
    (root / "index.json").rename(real)
    (root / "index.json").symlink_to(real)
    with pytest.raises(LayoutError, match=r"index\.json is a symlink"):
        await Layout(root).tags("a")
    (root / "index.json").unlink()
    real.rename(root / "index.json")
    (root / "oci-layout").rename(tmp_path / "oci-layout")
    (root / "oci-layout").symlink_to(tmp_path / "oci-layout")
    with pytest.raises(LayoutError, match="oci-layout is a symlink"):
        await Layout(root).repositories()


async def test_an_oversized_index_is_refused_without_reading_it_whole(tmp_path: Path) -> None:
    root = tmp_path / "l"
    await put_image(Layout(root), "a", "1", "x")
    with (root / "index.json").open("r+b") as handle:
        handle.truncate(65 * 1024 * 1024)  # sparse: costs no disk
    with pytest.raises(LayoutError, match="over the 64 MiB limit"):
        await Layout(root).tags("a")


# -- writing into a crafted destination ------------------------------------------------------


def test_a_symlinked_blobs_directory_writes_nothing_outside(
    tmp_path: Path, source_registry: Registry
) -> None:
    """`blobs -> elsewhere` in a destination: the run fails clearly; elsewhere stays empty."""
    push(source_registry, "team/app", "1", Image.oci([Blob.tar_gz(20_000, seed="sym")]))
    layout, outside = tmp_path / "transfer", tmp_path / "outside"
    asyncio.run(put_image(Layout(layout), "other", "1", "o"))
    outside.mkdir()
    (layout / "blobs").rename(tmp_path / "real-blobs")
    (layout / "blobs").symlink_to(outside)
    before = (layout / "index.json").read_bytes()

    run = regsync_json(
        "once",
        layout_config(tmp_path, f"{source_registry.host}/team/*", f"oci:{layout}", source_registry),
    )

    assert run.code == 1, run
    assert "blobs is a symlink, not a directory: refusing" in str(run.rule["errors"]), run.rule
    assert tree(outside) == []
    assert (layout / "index.json").read_bytes() == before


async def test_a_symlinked_sha256_directory_is_refused(tmp_path: Path) -> None:
    root, outside = tmp_path / "l", tmp_path / "outside"
    outside.mkdir()
    (root / "blobs").mkdir(parents=True)
    (root / "blobs" / "sha256").symlink_to(outside)
    with pytest.raises(LayoutError, match="sha256 is a symlink, not a directory: refusing"):
        await Layout(root).blob_upload("a", desc_of(b"x"), chunks(b"x"))
    assert tree(outside) == []


async def test_a_symlinked_lock_file_creates_nothing(tmp_path: Path) -> None:
    """`.regsync.lock -> /somewhere/new` must not create /somewhere/new."""
    root, target = tmp_path / "l", tmp_path / "created-by-regsync"
    root.mkdir()
    (root / ".regsync.lock").symlink_to(target)
    with pytest.raises(LayoutError, match=r"\.regsync\.lock is a symlink"):
        await Layout(root).blob_upload("a", desc_of(b"x"), chunks(b"x"))
    assert not target.exists() and not target.is_symlink()
    assert tree(root) == [".regsync.lock"]


async def test_fifos_named_like_temp_files_do_not_block_the_sweep(tmp_path: Path) -> None:
    """The orphan sweep opens temp files too: a FIFO among them is skipped, not waited on."""
    root = tmp_path / "l"
    (root / "blobs" / "sha256").mkdir(parents=True)
    os.mkfifo(root / "blobs" / "sha256" / ".tmp-fifo")
    os.mkfifo(root / ".regsync.lock")
    with pytest.raises(LayoutError, match=r"\.regsync\.lock is a FIFO"):
        await asyncio.wait_for(put_image(Layout(root), "a", "1", "x"), 10)
    (root / ".regsync.lock").unlink()
    await asyncio.wait_for(put_image(Layout(root), "a", "1", "x"), 10)
    assert (await Layout(root).tags("a")).names == ("1",)


# -- a first export killed early --------------------------------------------------------------


def half_created(root: Path, *, index: bool = False) -> None:
    """What a first export killed before writing ``oci-layout`` leaves behind."""
    (root / "blobs" / "sha256").mkdir(parents=True)
    (root / ".regsync.lock").write_bytes(b"")
    (root / "blobs" / "sha256" / ".tmp-0123456789abcdef-a1b2c3").write_bytes(b"partial" * 100)
    (root / ".tmp-index.json-a1b2c3").write_bytes(b'{"schemaVersion": 2, "manif')
    if index:
        (root / "index.json").write_text('{"schemaVersion": 2, "manifests": []}')


@pytest.mark.parametrize("index", [False, True], ids=["no-index", "index-only"])
def test_a_half_created_destination_is_completed(
    tmp_path: Path, source_registry: Registry, index: bool
) -> None:
    pushed = push(source_registry, "team/app", "1", Image.oci([Blob.tar_gz(30_000, seed="half")]))
    layout = tmp_path / "transfer"
    half_created(layout, index=index)
    config = layout_config(
        tmp_path, f"{source_registry.host}/team/*", f"oci:{layout}", source_registry
    )

    run = regsync_json("once", config)

    assert run.code == 0 and run.rule["tags"]["copied"] == 1, run
    assert {ref: e["digest"] for ref, e in index_entries(layout).items()} == {
        "team/app:1": pushed.digest
    }
    assert json.loads(skopeo("inspect", f"oci:{layout}:team/app:1"))["Digest"] == pushed.digest
    assert temp_files(layout) == [] and not list(layout.glob(".tmp-*"))
    assert_complete(layout)
    again = regsync_json("once", config)
    assert again.code == 0 and again.rule["tags"]["up_to_date"] == 1, again


@pytest.mark.parametrize("pattern", ["", "//team/app"], ids=["glob", "one-repository"])
def test_a_half_created_source_is_an_error(tmp_path: Path, pattern: str) -> None:
    source, out = tmp_path / "src", tmp_path / "out"
    half_created(source)
    run = regsync_json("once", layout_config(tmp_path, f"oci:{source}{pattern}", f"oci:{out}"))
    assert run.code == 1, run
    assert f"{source} is not an OCI image layout" in str(run.rule["errors"]), run.rule
    assert not out.exists()


async def test_a_missing_source_blob_is_not_found(tmp_path: Path) -> None:
    root = tmp_path / "l"
    await put_image(Layout(root), "a", "1", "x")
    layer = desc_of(layer_of("x"))
    blob_file(root, layer.digest).unlink()
    with pytest.raises(NotFoundError):
        _ = [c async for c in Layout(root).blob_read("a", layer)]
