"""What a cycle trusts between full checks (issue #21), counted from the registries' access logs.

The content index records, per destination tag, the digest this mirror last put or confirmed.
Between full checks a no-op costs the listings and one source HEAD per tag; a recorded
immutable tag costs no HEAD at all; every ``full_check`` (or ``once --full``, or a missing or
corrupt index) HEADs everything and heals what changed behind the mirror's back.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from pathlib import Path

from tests.support import (
    Blob,
    Image,
    Registry,
    RegistryFactory,
    mirror_config,
    push,
    regsync_json,
    seed_catalogue,
)
from tests.support.accesslog import ACCESS_LOG, AccessLog

TAGS = 120  # one repository: the listings are 2 requests beside one HEAD per tag


def _mirror(
    tmp_path: Path, factory: RegistryFactory, extra: str = "", tags: int = TAGS
) -> tuple[Registry, Registry, Path]:
    src, dst = factory(extra_config=ACCESS_LOG), factory(extra_config=ACCESS_LOG)
    seed_catalogue(src, repos=1, tags=tags, layers=1, layer_size=100, namespace="cyc")
    config = mirror_config(tmp_path, src, dst, "cyc/app00", extra, name="cyc")
    first = regsync_json("once", config)
    assert first.code == 0 and first.rule["tags"]["copied"] == tags, first.stderr
    return src, dst, config


def _age_full_checks(state: Path, seconds: float) -> None:
    """Move every recorded full check ``seconds`` into the past (no sleeping)."""
    with sqlite3.connect(state / "index.sqlite") as conn:
        conn.execute("UPDATE checks SET checked = checked - ?", (seconds,))


def test_a_no_op_between_full_checks_heads_only_the_source(
    tmp_path: Path, registry_factory: RegistryFactory
) -> None:
    """Second run: the listings and one source HEAD per tag, nothing at the destination but its
    listing: at most 1.02 requests per tag (was 2.02)."""
    src, dst, config = _mirror(tmp_path, registry_factory)
    src_log, dst_log = AccessLog(src), AccessLog(dst)

    run = regsync_json("once", config)

    assert run.code == 0, run.stderr
    assert run.rule["tags"]["up_to_date"] == TAGS and run.rule["source_manifest_gets"] == 0
    assert src_log.counts() == Counter({"HEAD manifest": TAGS, "GET tags": 1})
    assert dst_log.counts() == Counter({"GET tags": 1})
    total = sum(src_log.counts().values()) + sum(dst_log.counts().values())
    assert total / TAGS <= 1.02


def test_full_check_heads_everything_and_heals_a_tag_changed_behind_our_back(
    tmp_path: Path, registry_factory: RegistryFactory, _isolated_state_dir: Path
) -> None:
    """A destination tag re-pointed by someone else is trusted until the next full check:
    `once --full` and an expired `full_check` HEAD every destination tag and copy it back."""
    src, dst, config = _mirror(tmp_path, registry_factory, "full_check: 2h")
    want = src.manifest_digest("cyc/app00", "1.3.0")
    other = push(dst, "cyc/app00", "1.3.0", Image.docker([Blob.random(50, seed="intruder")]))
    assert other.digest != want

    between = regsync_json("once", config)
    assert between.code == 0 and between.rule["tags"]["copied"] == 0, between.stderr
    assert dst.manifest_digest("cyc/app00", "1.3.0") == other.digest  # trusted until checked

    dst_log = AccessLog(dst)
    forced = regsync_json("once", config, "--full")
    assert forced.code == 0 and forced.rule["tags"]["copied"] == 1, forced.stderr
    assert dst_log.counts()["HEAD manifest"] == TAGS
    assert dst.manifest_digest("cyc/app00", "1.3.0") == want

    other = push(dst, "cyc/app00", "1.3.0", Image.docker([Blob.random(60, seed="again")]))
    _age_full_checks(_isolated_state_dir, 7_201)  # the 2h full_check is due
    dst_log.mark()
    due = regsync_json("once", config)
    assert due.code == 0 and due.rule["tags"]["copied"] == 1, due.stderr
    assert dst_log.counts()["HEAD manifest"] == TAGS
    assert dst.manifest_digest("cyc/app00", "1.3.0") == want
    dst_log.mark()
    assert regsync_json("once", config).code == 0  # checked just now: trusted again
    assert dst_log.counts()["HEAD manifest"] == 0


def test_a_corrupt_or_missing_index_means_a_full_check(
    tmp_path: Path, registry_factory: RegistryFactory, _isolated_state_dir: Path
) -> None:
    """The index is a hint: garbage in its file, or no file, makes the next run HEAD every
    destination tag (and rebuild what it records)."""
    _, dst, config = _mirror(tmp_path, registry_factory)
    index = _isolated_state_dir / "index.sqlite"
    for f in _isolated_state_dir.iterdir():
        f.unlink()
    index.write_bytes(b"not a database" * 100)
    dst_log = AccessLog(dst)

    run = regsync_json("once", config)

    assert run.code == 0 and run.rule["tags"]["up_to_date"] == TAGS, run.stderr
    assert dst_log.counts()["HEAD manifest"] == TAGS
    assert "unreadable" in run.stderr
    dst_log.mark()
    assert regsync_json("once", config).code == 0
    assert dst_log.counts()["HEAD manifest"] == 0  # rebuilt by that full check


def test_a_tag_deleted_at_the_destination_is_copied_back_at_once(
    tmp_path: Path, registry_factory: RegistryFactory
) -> None:
    """The destination listing is read every cycle: a deleted tag is not trusted."""
    src, dst, config = _mirror(tmp_path, registry_factory, tags=3)
    dst.delete_manifest("cyc/app00", dst.manifest_digest("cyc/app00", "1.1.0"))

    run = regsync_json("once", config)

    assert run.code == 0 and run.rule["tags"]["copied"] == 1, run.stderr
    assert dst.manifest_digest("cyc/app00", "1.1.0") == src.manifest_digest("cyc/app00", "1.1.0")


def test_immutable_tags_cost_no_head_between_full_checks(
    tmp_path: Path, registry_factory: RegistryFactory
) -> None:
    """`tags.immutable` tags already mirrored: only the listings, no HEAD on either side."""
    src, dst, config = _mirror(tmp_path, registry_factory, "tags: {immutable: ['1\\.\\d+\\.0']}")
    src_log, dst_log = AccessLog(src), AccessLog(dst)

    run = regsync_json("once", config)

    assert run.code == 0 and run.rule["tags"]["up_to_date"] == TAGS, run.stderr
    assert src_log.counts() == Counter({"GET tags": 1})
    assert dst_log.counts() == Counter({"GET tags": 1})


def test_an_immutable_tag_that_changed_is_a_warning_at_the_full_check(
    tmp_path: Path, registry_factory: RegistryFactory
) -> None:
    """Between full checks the change is not seen; the full check copies it (the mirror follows
    the source) and warns, naming the tag and both digests."""
    src, dst, config = _mirror(tmp_path, registry_factory, "tags: {immutable: ['1\\..*']}", tags=2)
    old = src.manifest_digest("cyc/app00", "1.1.0")
    new = push(src, "cyc/app00", "1.1.0", Image.docker([Blob.random(70, seed="moved")])).digest

    between = regsync_json("once", config)
    assert between.code == 0 and between.rule["tags"]["copied"] == 0, between.stderr
    full = regsync_json("once", config, "--full")

    assert full.code == 0 and full.rule["tags"]["copied"] == 1, full.stderr
    assert dst.manifest_digest("cyc/app00", "1.1.0") == new
    warning = f"cyc/app00:1.1.0: immutable tag changed at the source from {old} to {new}"
    assert any(warning in note for note in full.rule["notes"]), full.rule
    assert warning in full.stderr


def test_moved_immutable_tags_are_logged_ten_then_counted(
    tmp_path: Path, registry_factory: RegistryFactory
) -> None:
    """README "Cycles between full checks": one warning each for the first 10 moved immutable
    tags of a rule and run, then one line counting the rest; the summary's notes name each."""
    src, dst, config = _mirror(tmp_path, registry_factory, "tags: {immutable: ['.*']}", tags=13)
    for tag in src.tags("cyc/app00"):
        push(src, "cyc/app00", tag, Image.docker([Blob.random(70, seed=f"moved-{tag}")]))

    full = regsync_json("once", config, "--full")

    assert full.code == 0 and full.rule["tags"]["copied"] == 13, full.stderr
    logged = [line for line in full.stderr.splitlines() if "WARNING rule cyc:" in line]
    assert sum("immutable tag changed at the source" in line for line in logged) == 10
    assert (
        sum(line.endswith("… and 3 more immutable tags changed at the source") for line in logged)
        == 1
    )
    assert sum("immutable tag changed" in note for note in full.rule["notes"]) == 13
    moved = src.tags("cyc/app00")
    assert [dst.manifest_digest("cyc/app00", t) for t in moved] == [
        src.manifest_digest("cyc/app00", t) for t in moved
    ]
