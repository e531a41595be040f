"""Air-gapped transfer through an OCI image layout: registry -> layout -> registry.

The integration tests run regsync as a subprocess against real registries and check the layout
with skopeo; the unit tests drive the Layout backend directly on temp directories (no sockets).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path

import pytest

from regsync.backends import layoutdir
from regsync.backends.layout import Layout
from regsync.backends.layoutfs import is_regular
from regsync.backends.layoutindex import REF_NAME, REPOSITORY
from regsync.errors import IntegrityError, LayoutError, ManifestError
from regsync.oci.digest import sha256_digest
from regsync.oci.manifest import Descriptor, parse_manifest
from tests.support import (
    Artifact,
    Blob,
    Image,
    Registry,
    attach,
    push,
    registries_yaml,
    regsync_json,
    run_regsync,
    seed_samples,
    write_config,
)

# -- helpers --------------------------------------------------------------------------------


def layout_config(tmp_path: Path, source: str, destination: str, *regs: Registry) -> Path:
    name = f"sync-{abs(hash((source, destination))) % 10**6}.yaml"
    return write_config(
        tmp_path,
        (registries_yaml(*regs) if regs else "")
        + f"""
version: 1
rules:
  - name: airgap
    source: {source}
    destination: {destination}
""",
        name=name,
    )


def index_entries(layout: Path) -> dict[str, dict]:
    """``"repo:tag" -> index.json entry``."""
    data = json.loads((layout / "index.json").read_text())
    return {e["annotations"][REF_NAME]: e for e in data["manifests"]}


def blob_files(layout: Path) -> dict[str, os.stat_result]:
    return {p.name: p.stat() for p in (layout / "blobs" / "sha256").iterdir()}


def temp_files(layout: Path) -> list[Path]:
    return sorted((layout / "blobs" / "sha256").glob(".tmp-*"))


def assert_complete(layout: Path) -> None:
    """Everything index.json reaches exists and matches its digest (nothing partial)."""

    def check(digest: str) -> bytes:
        data = (layout / "blobs" / "sha256" / digest.split(":")[1]).read_bytes()
        assert sha256_digest(data) == digest
        return data

    def walk(digest: str) -> None:
        manifest = parse_manifest(check(digest))
        for blob in manifest.blobs:
            check(blob.digest)
        for child in manifest.children:
            walk(child.digest)

    for entry in index_entries(layout).values():
        walk(entry["digest"])


def skopeo(*args: str) -> bytes:
    proc = subprocess.run(["skopeo", *args], capture_output=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr.decode()
    return proc.stdout


# -- registry -> layout -> registry ---------------------------------------------------------


def test_airgap_round_trip_keeps_digests_and_skopeo_reads_the_layout(
    tmp_path: Path, source_registry: Registry, dest_registry: Registry
) -> None:
    """Export to a layout, import into a second registry: every digest and byte is the same."""
    pushed = {p.ref: p for p in seed_samples(source_registry, namespace="diamol")}
    single = Image.oci([Blob.tar_gz(40_000, seed="single")])
    pushed["diamol/single:1.0"] = push(source_registry, "diamol/single", "1.0", single)
    layout = tmp_path / "transfer"

    run = regsync_json(
        "once",
        layout_config(
            tmp_path, f"{source_registry.host}/diamol/*", f"oci:{layout}", source_registry
        ),
    )
    code, export = run.code, run.rule
    assert code == 0, export
    assert export["tags"]["copied"] == len(pushed) == 5
    assert json.loads((layout / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    entries = index_entries(layout)
    assert {ref: e["digest"] for ref, e in entries.items()} == {
        ref: p.digest for ref, p in pushed.items()
    }
    assert all(e["annotations"][REPOSITORY] == ref.split(":")[0] for ref, e in entries.items())
    assert_complete(layout)

    run = regsync_json(
        "once", layout_config(tmp_path, f"oci:{layout}", dest_registry.host, dest_registry)
    )
    code, imported = run.code, run.rule
    assert code == 0, imported
    assert imported["tags"]["copied"] == 5
    for ref, p in pushed.items():
        repo, tag = ref.split(":")
        assert dest_registry.manifest(repo, tag) == source_registry.manifest(repo, tag)
        for digest in p.blobs:
            assert dest_registry.blob(repo, digest) == source_registry.blob(repo, digest)

    # skopeo addresses an image in the layout as oci:<dir>:<repo>:<tag> (it resolves names of
    # OCI-typed entries only; the Docker-typed web and worker are there for regsync).
    raw = skopeo("inspect", "--raw", f"oci:{layout}:diamol/api:1.0")
    assert raw == source_registry.manifest("diamol/api", "1.0")[1]
    info = json.loads(skopeo("inspect", f"oci:{layout}:diamol/single:1.0"))
    assert info["Digest"] == pushed["diamol/single:1.0"].digest
    skopeo(
        "copy",
        "--all",
        "--preserve-digests",
        "--dest-tls-verify=false",
        f"oci:{layout}:diamol/api:1.0",
        f"docker://{dest_registry.host}/by-skopeo/api:1.0",
    )
    assert dest_registry.manifest("by-skopeo/api", "1.0") == source_registry.manifest(
        "diamol/api", "1.0"
    )


def test_second_export_writes_only_new_blobs(tmp_path: Path, source_registry: Registry) -> None:
    """Re-exporting after one new tag writes exactly that tag's new blobs and manifest."""
    base = Blob.random(200_000, seed="base")
    first = Image.oci([base, Blob.random(50_000, seed="v1")])
    push(source_registry, "team/app", "1", first)
    layout = tmp_path / "transfer"
    config = layout_config(
        tmp_path, f"{source_registry.host}/team/*", f"oci:{layout}", source_registry
    )
    run = regsync_json("once", config)
    code, _ = run.code, run.rule
    assert code == 0
    before = blob_files(layout)

    second = Image.oci([base, Blob.random(60_000, seed="v2")])
    push(source_registry, "team/app", "2", second)
    run = regsync_json("once", config)
    code, summary = run.code, run.rule

    assert code == 0, summary
    new_blobs = {b.digest for b in second.blobs} - {b.digest for b in first.blobs}
    new_sizes = sum(b.size for b in second.blobs if b.digest in new_blobs)
    assert summary["tags"] == {"copied": 1, "up_to_date": 1, "pruned": 0, "failed": 0}
    assert summary["blobs"]["copied"] == len(new_blobs) == 2  # the new layer and config
    assert summary["bytes_copied"] == new_sizes
    after = blob_files(layout)
    added = after.keys() - before.keys()
    assert added == {d.split(":")[1] for d in new_blobs} | {second.digest.split(":")[1]}
    for name, stat in before.items():  # nothing already there was rewritten
        assert (after[name].st_ino, after[name].st_mtime_ns) == (stat.st_ino, stat.st_mtime_ns)
    assert sum(after[n].st_size for n in added) == new_sizes + second.size


def test_signatures_cross_the_air_gap_with_their_images(
    tmp_path: Path, source_registry: Registry, dest_registry: Registry
) -> None:
    """With referrers: true, an attached SBOM (fallback tag + artifact by digest) goes through
    the layout and arrives with the same digests; a second import finds everything in sync."""
    image = Image.oci([Blob.random(3_000, seed="signed")])
    push(source_registry, "team/signed", "1", image)
    sbom = Artifact.oci(image, payloads=[Blob(b'{"sbom": true}')])
    attach(source_registry, "team/signed", sbom)
    fallback = image.digest.replace(":", "-")
    layout = tmp_path / "transfer"

    def rule_config(name: str, source: str, destination: str, reg: Registry) -> Path:
        return write_config(
            tmp_path,
            registries_yaml(reg)
            + f"""
version: 1
rules:
  - name: {name}
    source: {source}
    destination: {destination}
    referrers: true
""",
            name=f"{name}.yaml",
        )

    export = rule_config(
        "export", f"{source_registry.host}/team/*", f"oci:{layout}", source_registry
    )
    imports = rule_config("import", f"oci:{layout}", dest_registry.host, dest_registry)
    run = regsync_json("once", export)
    assert run.code == 0 and run.rule, run
    assert f"team/signed:{fallback}" in index_entries(layout)
    run = regsync_json("once", imports)
    code, summary = run.code, run.rule

    assert code == 0, summary
    assert summary["tags"]["copied"] == 2  # the image and its fallback index
    for ref in ("1", fallback):
        assert dest_registry.manifest("team/signed", ref) == source_registry.manifest(
            "team/signed", ref
        )
    assert dest_registry.manifest("team/signed", sbom.digest)[1] == sbom.raw
    run = regsync_json("once", imports)
    code, again = run.code, run.rule
    assert code == 0 and again["tags"]["up_to_date"] == 2 and again["tags"]["copied"] == 0


# -- crash safety ---------------------------------------------------------------------------


class SlowProxy:
    """A TCP proxy on loopback that trickles responses, so an export takes a few seconds."""

    def __init__(self, target_port: int, chunk: int = 16_384, pause: float = 0.005) -> None:
        self.target_port, self.chunk, self.pause = target_port, chunk, pause
        self.loop = asyncio.new_event_loop()
        self.port = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> SlowProxy:
        self._thread.start()
        start = asyncio.start_server(self._handle, "127.0.0.1", 0)
        self._server = asyncio.run_coroutine_threadsafe(start, self.loop).result(10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._shutdown(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()

    async def _shutdown(self) -> None:
        self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        up_r, up_w = await asyncio.open_connection("127.0.0.1", self.target_port)

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, slow: bool) -> None:
            with contextlib.suppress(OSError):
                while data := await src.read(self.chunk):
                    dst.write(data)
                    await dst.drain()
                    if slow:
                        await asyncio.sleep(self.pause)
            dst.close()

        try:
            await asyncio.gather(pump(client_r, up_w, False), pump(up_r, client_w, True))
        finally:
            for writer in (client_w, up_w):
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()
            self._tasks.discard(task)


def test_killed_export_leaves_a_consistent_layout_the_next_run_completes(
    tmp_path: Path, source_registry: Registry
) -> None:
    """SIGKILL mid-export: index.json names only complete content; a rerun finishes the job."""
    pushed = {}
    for i in range(4):  # staggered sizes: the streams finish at different times
        layer = Blob.random(600_000 * (i + 1), seed=f"big{i}")
        pushed[f"big/app{i}"] = push(source_registry, f"big/app{i}", "1.0", Image.oci([layer]))
    layout = tmp_path / "transfer"
    with SlowProxy(int(source_registry.host.rsplit(":", 1)[1])) as proxy:
        slow_host = f"127.0.0.1:{proxy.port}"
        config = write_config(
            tmp_path,
            f"""
registries:
  "{slow_host}": {{tls: http}}
version: 1
rules:
  - name: airgap
    source: {slow_host}/big/*
    destination: oci:{layout}
""",
            name="slow.yaml",
        )
        proc = subprocess.Popen(
            [sys.executable, "-m", "regsync", "once", "-c", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            saw_partial = _wait_for_partial_blob(layout, proc)
        finally:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == -signal.SIGKILL and saw_partial
    assert temp_files(layout), "the kill should have left a partial blob behind"
    assert_complete(layout)  # whatever index.json names is whole
    done_before = set(index_entries(layout))
    assert len(done_before) < 4

    run = regsync_json(
        "once",
        layout_config(tmp_path, f"{source_registry.host}/big/*", f"oci:{layout}", source_registry),
    )
    code, rerun = run.code, run.rule

    assert code == 0, rerun
    assert rerun["tags"]["copied"] == 4 - len(done_before)
    assert rerun["tags"]["up_to_date"] == len(done_before)
    assert {ref: e["digest"] for ref, e in index_entries(layout).items()} == {
        f"{repo}:1.0": p.digest for repo, p in pushed.items()
    }
    assert_complete(layout)
    assert temp_files(layout) == []  # the orphaned partial blob was swept


def _wait_for_partial_blob(layout: Path, proc: subprocess.Popen[bytes]) -> bool:
    """Until a big blob is complete and another is still being written; then the writer is
    left stopped (SIGSTOP), so what was seen is exactly what the kill leaves behind.

    The writer renames and removes its temp files while we look: a file listed may be gone by
    the time it is statted, so sizes are read forgivingly and decided on only once frozen.
    """
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if _has_whole_and_partial(layout):
            os.kill(proc.pid, signal.SIGSTOP)
            _, status = os.waitpid(proc.pid, os.WUNTRACED)
            if not os.WIFSTOPPED(status):
                proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
                return False
            if _has_whole_and_partial(layout):
                return True
            os.kill(proc.pid, signal.SIGCONT)
        time.sleep(0.01)
    return False


def _has_whole_and_partial(layout: Path) -> bool:
    blobs = layout / "blobs" / "sha256"
    files = list(blobs.iterdir()) if blobs.is_dir() else []
    whole = [p for p in files if not p.name.startswith(".") and _size(p) > 500_000]
    partial = [p for p in files if p.name.startswith(".tmp-") and _size(p) > 0]
    return bool(whole and partial)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return -1  # renamed into place or removed since it was listed


# -- layout -> layout: no network ------------------------------------------------------------


def _no_unshare() -> str | None:
    """Why ``unshare -n`` cannot run here (None: it can)."""
    if shutil.which("unshare") is None:
        return "needs `unshare -n` (util-linux): not found"
    if subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode != 0:
        return "needs `unshare -n` (root or user namespaces, Linux): not allowed here"
    return None


NO_UNSHARE = _no_unshare()
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


# Skipped on a developer machine without it; in CI (CI=true) it must run, so it fails there.
@pytest.mark.skipif(NO_UNSHARE is not None and not IN_CI, reason=str(NO_UNSHARE))
def test_layout_to_layout_runs_without_any_network(
    tmp_path: Path, source_registry: Registry
) -> None:
    """In a network namespace with no interfaces, a layout -> layout rule still completes."""
    if NO_UNSHARE is not None:
        pytest.fail(f"CI must run the no-network layout test: {NO_UNSHARE}")
    pushed = {p.ref: p for p in seed_samples(source_registry, namespace="diamol")}
    outside = tmp_path / "outside"
    run = regsync_json(
        "once",
        layout_config(
            tmp_path, f"{source_registry.host}/diamol/*", f"oci:{outside}", source_registry
        ),
    )
    code, _ = run.code, run.rule
    assert code == 0
    inside = tmp_path / "inside"
    config = layout_config(tmp_path, f"oci:{outside}//diamol/web", f"oci:{inside}")

    proc = subprocess.run(
        ["unshare", "-n", sys.executable, "-m", "regsync", "once", "-c", str(config), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["rules"][0]["tags"]["copied"] == 2
    assert {ref: e["digest"] for ref, e in index_entries(inside).items()} == {
        ref: p.digest for ref, p in pushed.items() if ref.startswith("diamol/web:")
    }
    assert_complete(inside)


@pytest.mark.parametrize(("ci", "outcome"), [("true", "1 failed"), ("", "1 skipped")])
def test_without_unshare_the_no_network_test_fails_in_ci_and_skips_elsewhere(
    tmp_path: Path, ci: str, outcome: str
) -> None:
    bare = tmp_path / "bin"  # a PATH without unshare
    bare.mkdir()
    proc = subprocess.run(
        [
            *(sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "0", "-rfs"),
            f"{__file__}::test_layout_to_layout_runs_without_any_network",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "PATH": str(bare), "CI": ci},
    )
    assert outcome in proc.stdout, proc.stdout + proc.stderr
    assert "needs `unshare -n` (util-linux): not found" in proc.stdout
    if ci:
        assert "CI must run the no-network layout test" in proc.stdout


# -- the backend itself (no sockets) ---------------------------------------------------------


async def chunks(data: bytes, size: int = 1000) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


def desc_of(data: bytes, media_type: str = "application/octet-stream") -> Descriptor:
    return Descriptor(media_type, sha256_digest(data), len(data))


def image_manifest(config: bytes, layer: bytes) -> bytes:
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {**desc_json(config), "mediaType": "application/json"},
            "layers": [desc_json(layer)],
        }
    ).encode()


def desc_json(data: bytes) -> dict[str, object]:
    d = desc_of(data)
    return {"mediaType": d.media_type, "digest": d.digest, "size": d.size}


async def put_image(layout: Layout, repo: str, tag: str, seed: str) -> str:
    config, layer = f'{{"c":"{seed}"}}'.encode(), hashlib.sha256(seed.encode()).digest() * 100
    for blob in (config, layer):
        await layout.blob_upload(repo, desc_of(blob), chunks(blob))
    manifest = parse_manifest(image_manifest(config, layer))
    await layout.manifest_put(repo, tag, manifest)
    return manifest.digest


async def test_blob_with_wrong_bytes_leaves_no_file(tmp_path: Path) -> None:
    """A digest mismatch fails the upload; neither the blob nor its temp file remains."""
    layout = Layout(tmp_path / "l")
    good = b"x" * 5000
    with pytest.raises(IntegrityError):
        await layout.blob_upload("a", desc_of(good), chunks(b"y" * 5000))
    assert not await layout.blob_head("a", desc_of(good).digest)
    assert list((tmp_path / "l" / "blobs" / "sha256").iterdir()) == []
    await layout.blob_upload("a", desc_of(good), chunks(good))
    read = b"".join([c async for c in layout.blob_read("b", desc_of(good))])
    assert read == good and await layout.blob_head("other/repo", desc_of(good).digest)


async def test_corrupt_blob_on_disk_fails_the_read(tmp_path: Path) -> None:
    """Bytes that rotted on the transfer disk are caught while streaming."""
    layout = Layout(tmp_path)
    data = b"payload" * 1000
    await layout.blob_upload("a", desc_of(data), chunks(data))
    path = tmp_path / "blobs" / "sha256" / desc_of(data).digest.split(":")[1]
    path.write_bytes(b"P" + data[1:])
    with pytest.raises(IntegrityError):
        _ = [c async for c in layout.blob_read("a", desc_of(data))]


async def test_manifest_with_missing_content_is_refused(tmp_path: Path) -> None:
    """A tag can never point at a manifest whose blobs are not in the layout."""
    layout = Layout(tmp_path)
    manifest = parse_manifest(image_manifest(b"{}", b"layer"))
    with pytest.raises(ManifestError, match="missing"):
        await layout.manifest_put("a", "1", manifest)
    assert list((await layout.tags("a")).names) == []
    assert not await layout.blob_head("a", manifest.digest)


async def test_tags_repositories_and_delete(tmp_path: Path) -> None:
    """Many repositories in one index.json; re-tagging replaces; delete drops a digest's tags."""
    layout = Layout(tmp_path)
    one = await put_image(layout, "team/a", "1", "one")
    await put_image(layout, "team/a", "2", "two")
    await put_image(layout, "team/b", "1", "one")
    assert list((await layout.repositories()).names) == ["team/a", "team/b"]
    assert list((await layout.tags("team/a")).names) == ["1", "2"]
    head = await layout.manifest_head("team/b", "1")
    assert head is not None and head.digest == one
    three = await put_image(layout, "team/a", "1", "three")  # moves the tag
    reread = Layout(tmp_path)
    assert (await reread.manifest_get("team/a", "1")).digest == three
    assert len(index_entries(tmp_path)) == 3
    await layout.manifest_delete("team/b", one)
    assert list((await Layout(tmp_path).repositories()).names) == ["team/a"]
    assert await layout.manifest_head("team/a", one) is not None  # by digest: blob stays


async def test_concurrent_writers_keep_every_tag(tmp_path: Path) -> None:
    """Two writers (separate Layout objects, as two processes) and many tasks: no tag lost."""
    first, second = Layout(tmp_path), Layout(tmp_path)
    await asyncio.gather(
        *(put_image(first, "w/one", f"t{i}", f"a{i}") for i in range(15)),
        *(put_image(second, "w/two", f"t{i}", f"b{i}") for i in range(15)),
    )
    fresh = Layout(tmp_path)
    assert list((await fresh.tags("w/one")).names) == sorted(f"t{i}" for i in range(15))
    assert list((await fresh.tags("w/two")).names) == sorted(f"t{i}" for i in range(15))
    assert_complete(tmp_path)


async def test_a_layout_another_writer_finishes_meanwhile_is_not_taken_for_foreign(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two writers creating one new layout: the other may write `oci-layout` (last) between
    this one's look for it and its listing of the directory. The layout is whole then, not a
    foreign directory (seen as a flaky `test_concurrent_writers_keep_every_tag`)."""
    await put_image(Layout(tmp_path), "w/one", "t0", "a0")  # the other writer, finished
    looks: list[bool] = []

    def late(root: Path, parts: Sequence[str], *, strict: bool) -> bool:
        if list(parts) == ["oci-layout"] and not looks:  # this writer looked before it was written
            looks.append(False)
            return False
        return is_regular(root, parts, strict=strict)

    monkeypatch.setattr(layoutdir, "is_regular", late)
    await put_image(Layout(tmp_path), "w/two", "t0", "b0")
    assert looks == [False]
    assert list((await Layout(tmp_path).tags("w/two")).names) == ["t0"]


async def test_reads_layouts_written_by_other_tools(tmp_path: Path) -> None:
    """containerd's image name and skopeo's bare tag (repository = directory name) are read."""
    root = tmp_path / "nginx"
    writer = Layout(root)
    digest = await put_image(writer, "x", "0", "seed")
    entry = {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest}
    entry["size"] = (root / "blobs" / "sha256" / digest[7:]).stat().st_size
    index = {
        "schemaVersion": 2,
        "manifests": [
            {**entry, "annotations": {"io.containerd.image.name": "docker.io/library/redis:7"}},
            {**entry, "annotations": {REF_NAME: "1.25"}},
            {**entry, "annotations": {REF_NAME: "Not A Name:1"}},
            entry,
        ],
    }
    (root / "index.json").write_text(json.dumps(index))
    layout = Layout(root)
    listed = await layout.repositories()
    assert listed.names == ("library/redis", "nginx")
    assert listed.rejected == ("Not A Name",)  # refused by the grammar, reported by the run
    assert list((await layout.tags("nginx")).names) == ["1.25"]
    assert (await layout.manifest_get("library/redis", "7")).digest == digest


def test_a_source_that_is_not_a_layout_fails_the_rule(tmp_path: Path) -> None:
    """A mistyped oci: source is an error naming the directory, not a silent empty sync."""
    config = layout_config(tmp_path, f"oci:{tmp_path / 'typo'}", f"oci:{tmp_path / 'out'}")
    run = regsync_json("once", config)
    code, summary = run.code, run.rule
    assert code == 1
    assert summary["result"] == "failed" and "typo is not an OCI image layout" in str(summary)
    assert not (tmp_path / "out").exists()


async def test_refuses_to_write_into_a_directory_that_is_not_a_layout(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    layout = Layout(tmp_path)
    with pytest.raises(LayoutError, match="not an OCI image layout"):
        await layout.tags("a")
    with pytest.raises(LayoutError, match="not an OCI image layout"):
        await layout.blob_upload("a", desc_of(b"x"), chunks(b"x"))
    assert sorted(p.name for p in await asyncio.to_thread(tmp_path.iterdir)) == ["notes.txt"]


async def test_sweeps_orphaned_temp_files_but_not_live_ones(tmp_path: Path) -> None:
    """A temp file whose writer died (no lock) is removed; a locked one is left alone."""
    await put_image(Layout(tmp_path), "a", "1", "x")
    blobs = tmp_path / "blobs" / "sha256"
    (blobs / ".tmp-dead-1").write_bytes(b"partial")
    with _held(blobs / ".tmp-live-1"):
        await put_image(Layout(tmp_path), "a", "2", "y")
        assert sorted(p.name for p in temp_files(tmp_path)) == [".tmp-live-1"]


@contextlib.contextmanager
def _held(path: Path) -> Iterator[None]:
    with path.open("wb") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        yield


def test_verify_finds_and_repairs_a_damaged_layout(
    tmp_path: Path, source_registry: Registry
) -> None:
    """`regsync verify` checks a layout destination; --repair copies the lost blob again."""
    layer = Blob.random(30_000, seed="verify")
    pushed = push(source_registry, "team/tool", "1", Image.oci([layer]))
    layout = tmp_path / "transfer"
    config = layout_config(
        tmp_path, f"{source_registry.host}/team/*", f"oci:{layout}", source_registry
    )
    run = regsync_json("once", config)
    assert run.code == 0 and run.rule, run
    assert run_regsync("verify", "-c", config).returncode == 0
    lost = layout / "blobs" / "sha256" / layer.digest.split(":")[1]
    lost.unlink()

    assert run_regsync("verify", "-c", config).returncode == 1
    repaired = run_regsync("verify", "-c", config, "--repair")

    assert repaired.returncode == 0, repaired.stderr
    assert lost.read_bytes() == layer.data
    assert index_entries(layout)["team/tool:1"]["digest"] == pushed.digest
    assert_complete(layout)
