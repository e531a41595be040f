"""Unit tests of prune execution (``execute.prune_actions``) on the in-memory backend: no sockets.

Which delete each PRUNE action becomes (by digest when nothing kept needs the digest, else by
tag), that a tag counts as pruned only when the backend confirmed it, and the guard's one
error per rule when deletes are refused.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

from regsync import execute, orphans
from regsync.backends.memory import MemoryBackend
from regsync.oci import mediatypes
from regsync.oci.digest import sha256_digest
from regsync.oci.manifest import Descriptor, Manifest, parse_manifest
from regsync.plan import Action, RepoPlan, TagAction
from regsync.survey import SyncPolicy

REPO = "team/app"


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def put_image(backend: MemoryBackend, seed: str, *tags: str) -> Manifest:
    """A one-blob OCI image (the blob is its config) under each tag."""
    config = json.dumps({"seed": seed}).encode()
    desc = Descriptor(
        "application/vnd.oci.image.config.v1+json", sha256_digest(config), len(config)
    )
    await backend.blob_upload(REPO, desc, _once(config))
    body = {
        "schemaVersion": 2,
        "mediaType": mediatypes.OCI_MANIFEST,
        "config": {"mediaType": desc.media_type, "digest": desc.digest, "size": desc.size},
        "layers": [],
    }
    manifest = parse_manifest(json.dumps(body).encode())
    for tag in tags:
        await backend.manifest_put(REPO, tag, manifest)
    return manifest


def prune_action(tag: str, digest: str, *shared: str) -> TagAction:
    return TagAction(tag, Action.PRUNE, None, digest, "gone from the source", shared=shared)


def plan_of(*actions: TagAction) -> RepoPlan:
    return RepoPlan(REPO, REPO, actions)


async def test_a_digest_nothing_kept_needs_is_deleted_once_for_all_its_tags() -> None:
    dest = MemoryBackend()
    doomed = await put_image(dest, "doomed", "1.0", "1.0.1")
    await put_image(dest, "kept", "2.0")
    plan = plan_of(prune_action("1.0", doomed.digest), prune_action("1.0.1", doomed.digest))

    out = await execute.prune_actions(dest, plan, execute.DeleteGuard(dest.name))

    assert sorted(out.pruned) == ["1.0", "1.0.1"] and out.errors == [] and out.notes == []
    assert dest.count("manifest_delete") == 1 and dest.count("tag_delete") == 0
    assert list((await dest.tags(REPO)).names) == ["2.0"]


async def test_a_digest_a_kept_tag_shares_is_removed_by_tag_only() -> None:
    dest = MemoryBackend()
    shared = await put_image(dest, "shared", "1.9", "1.0")
    plan = plan_of(prune_action("1.9", shared.digest, "1.0"))

    out = await execute.prune_actions(dest, plan, execute.DeleteGuard(dest.name))

    assert out.pruned == ["1.9"] and out.errors == []
    assert dest.count("manifest_delete") == 0 and dest.count("tag_delete") == 1
    assert list((await dest.tags(REPO)).names) == ["1.0"]
    assert (await dest.manifest_get(REPO, "1.0")).digest == shared.digest


async def test_a_digest_this_run_copied_is_removed_by_tag_only() -> None:
    """The survey saw 2.0 absent; the copy then pointed it at the doomed tag's digest."""
    dest = MemoryBackend()
    image = await put_image(dest, "retagged", "1.9", "2.0")
    copy = TagAction("2.0", Action.COPY, image.digest, None, "missing")
    plan = plan_of(copy, prune_action("1.9", image.digest))

    out = await execute.prune_actions(dest, plan, execute.DeleteGuard(dest.name))

    assert out.pruned == ["1.9"] and dest.count("manifest_delete") == 0
    assert list((await dest.tags(REPO)).names) == ["2.0"]


async def test_a_failed_tag_delete_is_an_error_not_a_pruned_tag() -> None:
    dest = MemoryBackend()
    shared = await put_image(dest, "shared", "1.0")
    plan = plan_of(prune_action("1.9", shared.digest, "1.0"))  # 1.9 vanished meanwhile

    out = await execute.prune_actions(dest, plan, execute.DeleteGuard(dest.name))

    assert out.pruned == []
    assert len(out.errors) == 1 and out.errors[0].startswith(f"{REPO}:1.9: prune: ")
    assert list((await dest.tags(REPO)).names) == ["1.0"]


async def test_refused_deletes_give_one_error_for_the_rule_and_stop_trying() -> None:
    dest = MemoryBackend(deletes=False)
    a = await put_image(dest, "a", "1.0", "1.1")
    b = await put_image(dest, "b", "2.0")
    guard = execute.DeleteGuard(dest.name)
    first = plan_of(prune_action("1.1", a.digest, "1.0"), prune_action("2.0", b.digest))

    out = await execute.prune_actions(dest, first, guard)
    again = await execute.prune_actions(dest, plan_of(prune_action("2.0", b.digest)), guard)

    assert out.pruned == [] and again.pruned == [] and again.errors == []
    assert out.errors == [
        "prune: memory refuses deletes (405 UNSUPPORTED); enable deletion there "
        "(distribution: storage.delete.enabled) or set prune: false"
    ]
    assert dest.count("manifest_delete") + dest.count("tag_delete") == 1
    assert list((await dest.tags(REPO)).names) == ["1.0", "1.1", "2.0"]


async def test_a_shutdown_starts_no_delete_of_an_orphaned_repository() -> None:
    """SIGTERM while `prune_repositories` runs: like tag prune, no further delete starts and
    the tags left are noted for the next run."""
    dest = MemoryBackend()
    await put_image(dest, "orphan", "1.0", "2.0")
    stop = asyncio.Event()
    stop.set()

    out = await orphans.prune(dest, [REPO], SyncPolicy(), execute.DeleteGuard(dest.name), stop)

    assert out.pruned == [] and out.notes, out
    assert dest.count("manifest_delete") == 0 and dest.count("tag_delete") == 0
    assert list((await dest.tags(REPO)).names) == ["1.0", "2.0"]
