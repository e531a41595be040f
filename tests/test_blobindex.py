"""The persistent content index: later runs mount what earlier runs placed, and the index is
only ever a hint (deleted, corrupt or stale state changes the cost of a run, never its result).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path
from urllib.parse import unquote

import pytest
from aiohttp import web

from regsync import blobindex
from regsync.blobindex import (
    FILE_NAME,
    MAX_HOLDERS,
    SCHEMA_VERSION,
    BlobIndex,
    TagRecords,
    default_state_dir,
    valid_holder,
)
from regsync.blobledger import BlobLedger
from regsync.config import parse_config
from regsync.lru import LRU
from regsync.runner import run
from tests.support import (
    Blob,
    Image,
    Registry,
    RegistryFactory,
    mirror_config,
    push,
    regsync_json,
)
from tests.support.accesslog import ACCESS_LOG, AccessLog
from tests.support.scripted import ScriptedRegistry

D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64
BASE = Blob.random(500_000, seed="eco-base")


def seed_app(src: Registry, name: str) -> dict[str, int]:
    """``eco/<name>:1.0`` on the shared base; returns its blobs (digest -> size)."""
    return push(
        src, f"eco/{name}", "1.0", Image.docker([BASE, Blob.random(30_000, seed=name)])
    ).blobs


# -- unit: the file ------------------------------------------------------------------------


def test_index_remembers_holders_across_opens_newest_first(tmp_path: Path) -> None:
    index = BlobIndex.open(tmp_path)
    index.record("reg:5000", D1, "eco/a")
    index.record("reg:5000", D1, "eco/b")
    index.record("other:5000", D1, "eco/c")
    index.forget("reg:5000", D1, "eco/a")
    index.close()
    again = BlobIndex.open(tmp_path)
    assert again.holders("reg:5000", D1) == ["eco/b"]
    assert again.holders("reg:5000", D2) == []
    again.close()


def test_a_long_lived_index_learns_a_new_registry_after_a_flush(tmp_path: Path) -> None:
    """`serve` keeps one index open: a registry unknown at its first run is known after."""
    index = BlobIndex.open(tmp_path)
    assert not index.knows("reg") and index.holders("reg", D1) == []
    index.record("reg", D1, "eco/a")
    index.flush()
    assert index.knows("reg") and index.holders("reg", D1) == ["eco/a"]
    index.close()


def test_rows_that_break_the_name_grammar_are_never_returned(tmp_path: Path) -> None:
    index = BlobIndex.open(tmp_path)
    index.record("reg", D2, "eco/other")  # creates the file
    index.close()
    with sqlite3.connect(tmp_path / FILE_NAME) as conn:
        for repo in ("../etc", "eco/ok", "Eco/Upper", "a?b=c", "x" * 300):
            conn.execute("INSERT INTO holders VALUES ('reg', ?, ?, 1)", (D1, repo))
    again = BlobIndex.open(tmp_path)
    assert again.holders("reg", D1) == ["eco/ok"]
    assert not valid_holder("sha256:zz", "eco/ok")
    again.close()


def test_corrupt_file_is_set_aside_and_rebuilt(tmp_path: Path) -> None:
    (tmp_path / FILE_NAME).write_bytes(b"not a database at all" * 100)
    index = BlobIndex.open(tmp_path)
    index.record("reg", D1, "eco/a")
    index.close()
    aside = [p.name for p in tmp_path.iterdir() if ".corrupt-" in p.name]
    assert len(aside) == 1
    again = BlobIndex.open(tmp_path)
    assert again.holders("reg", D1) == ["eco/a"]
    again.close()


def test_unusable_state_dir_means_no_hints_and_no_failure(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    index = BlobIndex.open(blocker / "state")
    index.record("reg", D1, "eco/a")
    index.close()
    assert index.broken and index.holders("reg", D1) == []


def test_opening_touches_no_file_until_used(tmp_path: Path) -> None:
    """A run with nothing to copy pays nothing for the index."""
    BlobIndex.open(tmp_path / "state").close()
    assert not (tmp_path / "state").exists()


def test_the_ledger_never_touches_the_file_on_the_event_loop_thread(tmp_path: Path) -> None:
    # Opening the file, or waiting on another process's commit (busy timeout: seconds), on
    # the loop thread would stall every transfer and /healthz of a daemon sharing the index.
    loop_thread = threading.get_ident()
    on_loop: list[str] = []

    class Watched(BlobIndex):
        def _db(self) -> sqlite3.Connection | None:
            if threading.get_ident() == loop_thread:
                on_loop.append("_db")
            return super()._db()

    seed = BlobIndex(tmp_path)
    seed.record("reg", D1, "a/one")
    seed.close()
    index = Watched(tmp_path)
    ledger = BlobLedger(index=index, registry="reg")
    assert asyncio.run(ledger.known_holders(D1, "b/two")) == ["a/one"]
    assert on_loop == []
    index.close()


def test_stale_holders_are_capped_per_blob(tmp_path: Path) -> None:
    index = BlobIndex.open(tmp_path)
    for n in range(10):
        index.record("reg", D1, f"eco/stale{n}")
    index.flush()
    assert len(index.holders("reg", D1)) == MAX_HOLDERS
    assert len(index.holders("reg", D1, limit=5)) == 5
    index.close()


def test_known_holders_never_offer_the_destination_itself_or_a_holder_tried_this_run(
    tmp_path: Path,
) -> None:
    """A mount from the repository being filled, or again from one that already answered in
    this run, can only cost a request (or, from itself, claim a blob that is not there)."""
    seed = BlobIndex(tmp_path)
    for repo in ("eco/dest", "eco/tried", "eco/other"):
        seed.record("reg", D1, repo)
    seed.close()
    index = BlobIndex(tmp_path)
    ledger = BlobLedger(index=index, registry="reg")
    ledger.locations[D1] = {"eco/tried"}  # this run placed (or mounted from) it there already
    assert asyncio.run(ledger.known_holders(D1, "eco/dest")) == ["eco/other"]
    index.close()


async def test_stale_holders_cost_three_mount_attempts_then_one_upload(
    tmp_path: Path,
) -> None:
    layer = Blob.random(1000, seed="stale-base")
    index = BlobIndex(tmp_path)
    async with ScriptedRegistry() as src, ScriptedRegistry() as dst:
        src.add("eco/app", "1.0", Image.docker([layer]))
        stale = {f"eco/stale{n}" for n in range(blobindex.MAX_HOLDER_ROWS)}  # as many as kept
        for repo in stale:
            index.record(dst.host, layer.digest, repo)
        index.flush()
        mounted_from: list[str] = []

        async def watch(request: web.Request, match: re.Match[str]) -> None:
            if "mount" in request.query:
                mounted_from.append(request.query["from"])

        dst.override("POST", r"/blobs/uploads/$", watch)
        config = parse_config(
            f'registries:\n  "{src.host}": {{tls: http}}\n  "{dst.host}": {{tls: http}}\n'
            f"version: 1\nrules:\n  - name: app\n    source: {src.host}/eco/app\n"
            f"    destination: {dst.host}\n"
        )
        result = (await run(config, config.rules, index=index)).rules[0]

    assert (result.copied, result.stats.blobs_copied, result.stats.blobs_mounted) == (1, 2, 0)
    assert len(mounted_from) == MAX_HOLDERS and set(mounted_from) <= stale
    assert dst.blobs[layer.digest] == layer.data
    index.close()
    with sqlite3.connect(tmp_path / FILE_NAME) as conn:
        left = {
            r[0] for r in conn.execute("SELECT repo FROM holders WHERE digest = ?", (layer.digest,))
        }
    assert left == stale - set(mounted_from) | {"eco/app"}  # the failed ones are forgotten


def test_a_holder_name_of_255_characters_is_the_longest_taken() -> None:
    assert valid_holder(D1, "a" * 255) and not valid_holder(D1, "a" * 256)


def test_reading_holders_is_bounded_even_when_newer_rows_are_junk(tmp_path: Path) -> None:
    """At most 4 x limit rows are read per blob: junk rows newer than a good one hide it
    rather than make the lookup read the whole table."""
    index = BlobIndex.open(tmp_path)
    index.record("reg", D1, "eco/good")
    index.close()
    with sqlite3.connect(tmp_path / FILE_NAME) as conn:
        for n in range(4 * MAX_HOLDERS):
            conn.execute("INSERT INTO holders VALUES ('reg', ?, ?, ?)", (D1, f"Bad/{n}", 2e9 + n))
    again = BlobIndex.open(tmp_path)
    assert again.holders("reg", D1) == []
    assert again.holders("reg", D1, limit=MAX_HOLDERS + 1) == ["eco/good"]
    again.close()


def test_a_state_dir_several_levels_deep_is_created(tmp_path: Path) -> None:
    index = BlobIndex.open(tmp_path / "a" / "b" / "state")
    index.record("reg", D1, "eco/a")
    index.close()
    assert BlobIndex.open(tmp_path / "a" / "b" / "state").holders("reg", D1) == ["eco/a"]


def test_an_unusable_state_dir_says_so_once_and_knows_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    index = BlobIndex.open(blocker / "state")
    with caplog.at_level(logging.WARNING, logger="regsync.blobindex"):
        assert index.knows("reg") is False
        assert index.tags_of("reg", "eco/a") == TagRecords({}, None)
    assert [
        m.startswith(f"state dir {blocker / 'state'} unusable, no content index: ")
        for m in (caplog.messages)
    ] == [True]


def test_a_corrupt_index_is_set_aside_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / FILE_NAME).write_bytes(b"not a database at all" * 100)
    index = BlobIndex.open(tmp_path)
    with caplog.at_level(logging.WARNING, logger="regsync.blobindex"):
        assert index.holders("reg", D1) == []
    (aside,) = [p.name for p in tmp_path.iterdir() if ".corrupt-" in p.name]
    assert caplog.messages == [
        f"content index {tmp_path / FILE_NAME} unreadable (file is not a database): "
        f"set aside as {tmp_path / aside}"
    ]
    index.close()


def test_an_index_set_aside_while_another_process_has_it_open_takes_its_journal_along(
    tmp_path: Path,
) -> None:
    """Another process (an older regsync) keeps the WAL files in use: all three move, so the
    rebuilt index never starts from a stranger's journal."""
    held = sqlite3.connect(tmp_path / FILE_NAME)
    held.execute("PRAGMA journal_mode = WAL")
    held.execute("PRAGMA user_version = 99")
    held.execute("CREATE TABLE other (x)")
    held.execute("INSERT INTO other VALUES (1)")
    held.commit()
    try:
        index = BlobIndex.open(tmp_path)
        index.record("reg", D1, "eco/a")
        index.flush()
        aside = sorted(p.name for p in tmp_path.iterdir() if ".corrupt-" in p.name)
        assert [a.rsplit("-", 1)[-1] for a in aside[1:]] == ["shm", "wal"]
        assert aside[1:] == [f"{aside[0]}-shm", f"{aside[0]}-wal"]
        assert index.holders("reg", D1) == ["eco/a"]
        index.close()
    finally:
        held.close()


def test_an_index_of_another_schema_version_is_set_aside_naming_both(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with sqlite3.connect(tmp_path / FILE_NAME) as conn:
        conn.execute("PRAGMA user_version = 99")
    with caplog.at_level(logging.WARNING, logger="regsync.blobindex"):
        assert BlobIndex.open(tmp_path).holders("reg", D1) == []
    assert f"(schema version 99, expected {SCHEMA_VERSION})" in caplog.messages[0]


def test_a_corrupt_index_that_cannot_be_set_aside_leaves_the_run_without_hints(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / FILE_NAME).write_bytes(b"not a database at all" * 100)

    def refuse(src: str, dst: str) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "replace", refuse)
    index = BlobIndex.open(tmp_path)
    with caplog.at_level(logging.WARNING, logger="regsync.blobindex"):
        index.record("reg", D1, "eco/a")
        index.flush()
        assert index.holders("reg", D1) == [] and index.broken
    assert caplog.messages[-1] == (
        f"content index {tmp_path / FILE_NAME} cannot be rebuilt, none used: "
        "[Errno 13] Permission denied"
    )


def test_an_index_failing_mid_run_warns_once_and_goes_on_without_hints(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    index = BlobIndex.open(tmp_path)
    index.record("reg", D1, "eco/a")
    index.flush()
    with sqlite3.connect(tmp_path / FILE_NAME) as conn:
        conn.execute("DROP TABLE holders")
    index._known.clear()  # ask the file again
    with caplog.at_level(logging.WARNING, logger="regsync.blobindex"):
        assert index.knows("reg") is False
        assert index.holders("reg", D1) == []
        index.record("reg", D2, "eco/b")
        index.flush()
        assert index.tags_of("reg", "eco/a") == TagRecords({}, None)
    assert index.broken
    assert caplog.messages == [
        f"content index {tmp_path / FILE_NAME} failed, continuing without it: "
        "no such table: holders"
    ]
    index.close()


def test_the_file_is_opened_once_and_again_after_a_close(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[Path] = []
    real = blobindex._open_file

    def counted(state_dir: Path, path: Path) -> sqlite3.Connection | None:
        opened.append(path)
        return real(state_dir, path)

    monkeypatch.setattr(blobindex, "_open_file", counted)
    index = BlobIndex.open(tmp_path)
    index.record("reg", D1, "eco/a")
    index.flush()
    assert index.holders("reg", D1) == ["eco/a"] and len(opened) == 1
    index.close()
    assert index.holders("reg", D1) == ["eco/a"] and len(opened) == 2
    index.close()


async def test_what_a_run_learnt_is_readable_by_another_process_after_flush_async(
    tmp_path: Path,
) -> None:
    index = BlobIndex.open(tmp_path)
    index.record("reg", D1, "eco/a")
    await index.flush_async()
    assert index.pending == 0
    other = BlobIndex.open(tmp_path)
    assert other.holders("reg", D1) == ["eco/a"]
    other.close()
    index.close()


def test_a_registry_found_empty_is_not_asked_about_again_until_the_next_flush(
    tmp_path: Path,
) -> None:
    """A first copy into a new destination asks the file nothing per blob."""
    index = BlobIndex.open(tmp_path)
    assert not index.knows("reg")
    writer = BlobIndex.open(tmp_path)
    writer.record("reg", D1, "eco/a")
    writer.close()
    assert index.holders("reg", D1) == []  # still what it found at first
    index.record("reg", D2, "eco/b")
    index.flush()
    assert index.holders("reg", D1) == ["eco/a"]
    index.close()


def test_dropping_one_tag_row_keeps_the_others_and_is_no_full_check(tmp_path: Path) -> None:
    index = BlobIndex.open(tmp_path)
    for tag in ("1.0", "2.0"):
        index.put_tag("reg", "a/one", tag, D1, "")
    index.flush()
    index.drop_tag("reg", "a/one", "1.0")
    index.flush()
    assert index.tags_of("reg", "a/one") == TagRecords({"2.0": (D1, "")}, None)
    index.close()


def test_state_dir_defaults() -> None:
    assert default_state_dir({"REGSYNC_STATE_DIR": "/s"}) == Path("/s")
    assert default_state_dir({"XDG_STATE_HOME": "/x"}) == Path("/x/regsync")
    home = Path(os.path.expanduser("~"))
    assert default_state_dir({}) == home / ".local" / "state" / "regsync"


_WRITER = """
import sys
from pathlib import Path
from regsync.blobindex import BlobIndex
index = BlobIndex.open(Path(sys.argv[1]))
for i in range(400):
    index.record("reg", "sha256:" + f"{i:064x}", "eco/" + sys.argv[2])
    if i % 50 == 0:
        index.flush()
index.close()
"""


def test_two_processes_writing_one_state_dir_both_land(tmp_path: Path) -> None:
    writers = [
        subprocess.Popen([sys.executable, "-c", _WRITER, str(tmp_path), name])
        for name in ("one", "two")
    ]
    assert [w.wait(timeout=60) for w in writers] == [0, 0]
    with sqlite3.connect(tmp_path / FILE_NAME) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert conn.execute("SELECT count(*) FROM holders").fetchone() == (800,)


# -- integration: runs against real registries ---------------------------------------------


def first_day(
    tmp_path: Path, factory: RegistryFactory
) -> tuple[Registry, Registry, Path, dict[str, int]]:
    """Day 0: eco/app0 and eco/app1 mirrored; then eco/appnew appears on the same base."""
    src, dst = factory(extra_config=ACCESS_LOG), factory(extra_config=ACCESS_LOG)
    seed_app(src, "app0")
    seed_app(src, "app1")
    config = mirror_config(tmp_path, src, dst, "eco/*", name="eco")
    day0 = regsync_json("once", config)
    assert day0.code == 0 and day0.rule["blobs"]["copied"] == 5, day0.stderr
    new = seed_app(src, "appnew")
    return src, dst, config, new


def assert_mirrored(src: Registry, dst: Registry) -> None:
    for repo in ("eco/app0", "eco/app1", "eco/appnew"):
        assert dst.manifest_digest(repo, "1.0") == src.manifest_digest(repo, "1.0")


def test_new_repository_on_a_known_base_mounts_it_from_an_earlier_run(
    tmp_path: Path, registry_factory: RegistryFactory
) -> None:
    """The base crosses the wire once, on day 0; day 1 mounts it into the new repository."""
    src, dst, config, new = first_day(tmp_path, registry_factory)
    src_log, dst_log = AccessLog(src), AccessLog(dst)

    day1 = regsync_json("once", config)

    assert day1.code == 0, day1.stderr
    rule = day1.rule
    assert rule["blobs"] == {"copied": 2, "mounted": 1, "present": 0}
    assert rule["bytes_copied"] == sum(new.values()) - BASE.size
    got = src_log.requests()
    assert sorted(r.path.rsplit("/", 1)[1] for r in got if r.key == "GET blob") == sorted(
        d for d in new if d != BASE.digest
    )
    mounts = [r for r in dst_log.requests() if "mount=" in r.path]
    assert len(mounts) == 1 and mounts[0].status == 201
    assert f"mount={BASE.digest}" in unquote(mounts[0].path)
    # The price of proof (invariant 10): one source HEAD of the mounted blob, in its own repo.
    heads = [r.path for r in got if r.key == "HEAD blob"]
    assert heads == [f"/v2/eco/appnew/blobs/{BASE.digest}"]
    assert_mirrored(src, dst)


def test_deleted_state_costs_the_base_again_but_converges(
    tmp_path: Path, registry_factory: RegistryFactory, _isolated_state_dir: Path
) -> None:
    src, dst, config, new = first_day(tmp_path, registry_factory)
    (_isolated_state_dir / FILE_NAME).unlink()

    day1 = regsync_json("once", config)

    assert day1.code == 0, day1.stderr
    assert day1.rule["blobs"] == {"copied": 3, "mounted": 0, "present": 0}
    assert day1.rule["bytes_copied"] == sum(new.values())
    assert_mirrored(src, dst)


def test_corrupt_state_is_set_aside_with_a_warning_and_converges(
    tmp_path: Path, registry_factory: RegistryFactory, _isolated_state_dir: Path
) -> None:
    src, dst, config, _ = first_day(tmp_path, registry_factory)
    for name in os.listdir(_isolated_state_dir):
        os.unlink(_isolated_state_dir / name)
    (_isolated_state_dir / FILE_NAME).write_bytes(b"\x00garbage" * 512)

    day1 = regsync_json("once", config)

    assert day1.code == 0, day1.stderr
    assert "unreadable" in day1.stderr and "set aside" in day1.stderr
    assert day1.rule["blobs"]["copied"] == 3
    assert_mirrored(src, dst)
    assert any(".corrupt-" in n for n in os.listdir(_isolated_state_dir))
    # Rebuilt and learning again: the next new repository mounts its base.
    seed_app(src, "applater")
    day2 = regsync_json("once", config)
    assert day2.code == 0 and day2.rule["blobs"]["mounted"] == 1, day2.stderr


def test_holder_that_lost_the_blob_falls_back_to_upload_and_is_forgotten(
    tmp_path: Path, registry_factory: RegistryFactory, _isolated_state_dir: Path
) -> None:
    """The index names repositories that do not hold the base (one never existed, one exists
    without it): the mounts fail, the base is uploaded, and those holders are forgotten."""
    src, dst, config, _ = first_day(tmp_path, registry_factory)
    push(dst, "eco/lacking", "1.0", Image.docker([Blob.random(1000, seed="lacking")]))
    with sqlite3.connect(_isolated_state_dir / FILE_NAME) as conn:
        conn.execute("DELETE FROM holders WHERE digest = ?", (BASE.digest,))
        for repo in ("eco/ghost", "eco/lacking"):
            conn.execute("INSERT INTO holders VALUES (?, ?, ?, 1)", (dst.host, BASE.digest, repo))
    dst_log = AccessLog(dst)

    day1 = regsync_json("once", config)

    assert day1.code == 0, day1.stderr
    assert day1.rule["blobs"] == {"copied": 3, "mounted": 0, "present": 0}
    assert len([r for r in dst_log.requests() if "mount=" in r.path]) == 2
    assert_mirrored(src, dst)
    with sqlite3.connect(_isolated_state_dir / FILE_NAME) as conn:
        holders = {
            r[0] for r in conn.execute("SELECT repo FROM holders WHERE digest = ?", (BASE.digest,))
        }
    assert holders == {"eco/appnew"}


def test_two_runs_sharing_a_state_dir_at_once_both_succeed(
    tmp_path: Path, registry_factory: RegistryFactory, _isolated_state_dir: Path
) -> None:
    src, dst = registry_factory(), registry_factory()
    seed_app(src, "app0")
    seed_app(src, "app1")
    configs = [
        mirror_config(tmp_path / name, src, dst, f"eco/{name}", name=name)
        for name in ("app0", "app1")
        if (tmp_path / name).mkdir() is None
    ]
    runs = [
        subprocess.Popen(
            [sys.executable, "-m", "regsync", "once", "-q", "-c", str(c)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for c in configs
    ]
    assert [r.wait(timeout=120) for r in runs] == [0, 0]
    with sqlite3.connect(_isolated_state_dir / FILE_NAME) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        repos = {
            r[0] for r in conn.execute("SELECT repo FROM holders WHERE digest = ?", (BASE.digest,))
        }
    assert repos == {"eco/app0", "eco/app1"}
    for repo in ("eco/app0", "eco/app1"):
        assert dst.manifest_digest(repo, "1.0") == src.manifest_digest(repo, "1.0")


def test_tag_rows_are_replaced_by_a_full_check_and_kept_apart_per_repository(
    tmp_path: Path,
) -> None:
    """`checked` forgets the repository's rows (a full check re-confirms what it saw) and keeps
    its time; rows of other repositories and registries are untouched."""
    index = BlobIndex.open(tmp_path)
    index.put_tag("reg", "a/one", "1.0", D1, "application/vnd.oci.image.manifest.v1+json")
    index.put_tag("reg", "a/one", "gone", D1, "")
    index.put_tag("reg", "a/two", "1.0", D2, "")
    index.put_tag("other", "a/one", "1.0", D2, "")
    index.flush()
    assert index.tags_of("reg", "a/one").checked is None  # never fully checked: a full check
    index.checked("reg", "a/one")
    index.put_tag("reg", "a/one", "1.0", D2, "")
    index.drop_tag("reg", "a/two", "1.0")
    index.flush()

    one = index.tags_of("reg", "a/one")
    assert one.digests == {"1.0": (D2, "")} and one.checked is not None
    assert index.tags_of("reg", "a/two").digests == {}
    assert index.tags_of("other", "a/one").digests == {"1.0": (D2, "")}


def test_tag_rows_that_break_the_grammar_are_never_trusted(tmp_path: Path) -> None:
    """Rows come from a file anyone with access could edit: a bad tag, digest or media type
    is left out (the tag is then HEADed as if never recorded)."""
    index = BlobIndex.open(tmp_path)
    index.put_tag("reg", "a", "ok", D1, "")
    index.flush()
    with sqlite3.connect(tmp_path / FILE_NAME) as conn:
        for tag, digest, media_type in [
            ("../x", D1, ""),
            ("bad", "sha256:xyz", ""),
            ("mt", D1, "text/plain; x=1"),
        ]:
            conn.execute(
                "INSERT INTO tags VALUES ('reg', 'a', ?, ?, ?, 0)", (tag, digest, media_type)
            )
    assert index.tags_of("reg", "a").digests == {"ok": (D1, "")}


def test_a_version_1_index_gains_the_tag_tables_and_keeps_its_holders(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / FILE_NAME) as conn:
        conn.execute(
            "CREATE TABLE holders (registry TEXT NOT NULL, digest TEXT NOT NULL,"
            " repo TEXT NOT NULL, seen REAL NOT NULL, PRIMARY KEY (registry, digest, repo))"
            " WITHOUT ROWID"
        )
        conn.execute("INSERT INTO holders VALUES ('reg', ?, 'eco/a', 1)", (D1,))
        conn.execute("PRAGMA user_version = 1")
    index = BlobIndex.open(tmp_path)
    assert index.holders("reg", D1) == ["eco/a"]
    index.put_tag("reg", "eco/a", "1.0", D1, "")
    index.flush()
    assert index.tags_of("reg", "eco/a").digests == {"1.0": (D1, "")}
    assert not index.broken


def _holder_rows(state: Path) -> int:
    with sqlite3.connect(state / FILE_NAME) as conn:
        (rows,) = conn.execute("SELECT count(*) FROM holders").fetchone()
    return int(rows)


def test_holder_rows_are_capped_per_digest_and_in_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A churning catalogue cannot grow the index without bound: at most MAX_HOLDER_ROWS
    holders per digest, MAX_ROWS in all (the oldest go first)."""
    index = BlobIndex.open(tmp_path)
    for i in range(blobindex.MAX_HOLDER_ROWS + 5):
        index.record("reg", D1, f"churn/r{i}")
    index.flush()
    assert _holder_rows(tmp_path) == blobindex.MAX_HOLDER_ROWS
    index.close()

    monkeypatch.setattr(blobindex, "MAX_ROWS", 5)
    index = BlobIndex.open(tmp_path)  # a new owner expires and caps at its first commit
    for i in range(4):
        index.record("reg", "sha256:" + f"{i + 7:064x}", "other/app")
    index.flush()
    assert _holder_rows(tmp_path) == 5


def test_holders_no_full_check_refreshed_for_the_ttl_expire(tmp_path: Path) -> None:
    """Rows of a repository that stopped being checked (gone from the source or the
    destination) expire after HOLDER_TTL; a full check keeps its repository's rows fresh."""
    index = BlobIndex.open(tmp_path)
    index.record("reg", D1, "gone/app")
    index.record("reg", D1, "kept/app")
    index.flush()
    index.close()
    with sqlite3.connect(tmp_path / FILE_NAME) as conn:
        conn.execute("UPDATE holders SET seen = seen - ?", (blobindex.HOLDER_TTL + 60,))
    index = BlobIndex.open(tmp_path)
    index.checked("reg", "kept/app")
    index.flush()
    assert index.holders("reg", D1) == ["kept/app"]


def test_a_first_copy_into_a_new_destination_never_looks_up_holders_even_after_a_flush(
    tmp_path: Path,
) -> None:
    """An index with nothing for this destination when the run began has nothing to offer
    it: the rows the run itself writes (and flushes mid-run) are in the ledger already, so no
    blob costs a lookup on a worker thread."""
    looked: list[str] = []

    class Counted(BlobIndex):
        def holders(self, registry: str, digest: str, limit: int = MAX_HOLDERS) -> list[str]:
            looked.append(digest)
            return super().holders(registry, digest, limit)

    index = Counted(tmp_path)
    ledger = BlobLedger(index=index, registry="reg")

    async def run() -> None:
        assert await ledger.known_holders(D1, "eco/a") == []
        ledger.record(D1, "eco/a")
        index.flush()  # a mid-run commit: the index now holds this run's own rows
        assert await ledger.known_holders(D1, "eco/b") == []
        assert ledger.elsewhere(D1, "eco/b") == "eco/a"  # the run's own knowledge serves

    asyncio.run(run())
    assert looked == []
    index.close()


def test_a_ledger_that_forgot_blobs_asks_the_index_for_the_runs_own_holders(
    tmp_path: Path,
) -> None:
    """Once the ledger's memory is full (``regsync.lru``), what it forgot may be in the index
    (this run flushed it): lookups resume, so a forgotten blob is mounted, not sent again."""
    index = BlobIndex(tmp_path)
    ledger = BlobLedger(locations=LRU(1), index=index, registry="reg")

    async def run() -> list[str]:
        assert await ledger.known_holders(D1, "eco/a") == []  # empty when the run began
        ledger.record(D1, "eco/a")
        ledger.record(D2, "eco/a")  # D1 forgotten
        index.flush()
        return await ledger.known_holders(D1, "eco/b")

    assert asyncio.run(run()) == ["eco/a"]
    index.close()
