"""Plan, then execute, between two in-memory backends: no sockets.

The survey plans (COPY, SKIP, PRUNE with their reasons) from what two ``MemoryBackend``s list
and HEAD; the executor applies exactly that plan. Checked: the destination ends with the
source's digests, prune removes exactly the tags the plan names, and every manifest written is
counted once in ``manifests_pushed``.
"""

from __future__ import annotations

import asyncio

import pytest

from regsync import manifestcache, pruneplan
from regsync.backends import Backend
from regsync.backends.memory import MemoryBackend
from regsync.blobledger import BlobLedger
from regsync.copy import CopyEngine
from regsync.errors import TransportError
from regsync.execute import DeleteGuard, copy_action, prune_actions
from regsync.oci.manifest import Manifest
from regsync.plan import Action, RepoPlan
from regsync.platforms import PlatformFilter
from regsync.pruneplan import PrunePolicy
from regsync.survey import SyncPolicy, survey
from regsync.tagpolicy import TagPattern, TagPolicy
from tests.support import Blob, Image, Index, stored
from tests.support import Manifest as Built

REPO = "team/app"
PRUNE = SyncPolicy(prune=PrunePolicy(max_fraction=0.5))


async def store(backend: Backend, ref: str, built: Built) -> Manifest:
    """``built`` (blobs, children, then itself) into ``REPO`` under ``ref``."""
    return await stored.store(backend, REPO, ref, built)


def image(seed: str, platform: str = "linux/amd64") -> Built:
    return Image.oci([Blob.random(200, seed=seed)], platform)


def engine(source: MemoryBackend, dest: MemoryBackend) -> CopyEngine:
    return CopyEngine(source, dest, BlobLedger(), asyncio.Semaphore(4))


async def execute(
    eng: CopyEngine, plan: RepoPlan, platforms: PlatformFilter | None = None
) -> list[str]:
    """What the runner does with a plan: every COPY, then the PRUNE actions; the pruned tags."""
    for action in plan.of(Action.COPY):
        await copy_action(eng, platforms, plan, action)
    outcome = await prune_actions(eng.destination, plan, DeleteGuard(eng.destination.name))
    assert outcome.errors == []
    return outcome.pruned


async def tags_of(backend: MemoryBackend) -> dict[str, str]:
    names = (await backend.tags(REPO)).names
    heads = {t: await backend.manifest_head(REPO, t) for t in names}
    return {t: d.digest for t, d in heads.items() if d is not None}


async def test_a_plan_of_copy_skip_and_prune_is_applied_exactly() -> None:
    source, dest = MemoryBackend("src"), MemoryBackend("dst")
    for tag, seed in [("1.0", "a"), ("2.0", "b"), ("3.0", "c")]:
        await store(source, tag, image(seed))
    await store(dest, "1.0", image("a"))  # up to date
    await store(dest, "2.0", image("old"))  # points elsewhere
    await store(dest, "0.9", image("gone"))  # the source no longer has it
    await store(dest, "0.9-keep", image("gone"))  # same digest, outside the rule's scope

    policy = SyncPolicy(
        tags=TagPolicy(exclude=(TagPattern(r".*-keep"),)), prune=PrunePolicy(max_fraction=0.5)
    )
    plan = await survey(source, dest, REPO, REPO, policy)
    assert {a.tag: a.action for a in plan.actions} == {
        "1.0": Action.SKIP,
        "2.0": Action.COPY,
        "3.0": Action.COPY,
        "0.9": Action.PRUNE,
    }
    (prune,) = plan.of(Action.PRUNE)
    assert prune.shared == ("0.9-keep",)  # a foreign tag shares the digest: delete by tag

    eng = engine(source, dest)
    puts_before = dest.count("manifest_put")
    pruned = await execute(eng, plan)

    src, dst = await tags_of(source), await tags_of(dest)
    assert {t: dst[t] for t in src} == src  # every source tag, same digest
    assert pruned == ["0.9"] and set(dst) == set(src) | {"0.9-keep"}
    assert dest.count("manifest_delete") == 0 and dest.count("tag_delete") == 1
    assert eng.stats.manifests_pushed == 2 == dest.count("manifest_put") - puts_before
    assert (await survey(source, dest, REPO, REPO, policy)).in_sync


async def test_prune_deletes_by_digest_only_what_the_plan_names() -> None:
    source, dest = MemoryBackend("src"), MemoryBackend("dst")
    await store(source, "1.0", image("a"))
    await store(dest, "1.0", image("a"))
    gone = await store(dest, "0.9", image("gone"))

    plan = await survey(source, dest, REPO, REPO, PRUNE)
    assert [(a.tag, a.dest_digest) for a in plan.of(Action.PRUNE)] == [("0.9", gone.digest)]
    pruned = await execute(engine(source, dest), plan)

    assert pruned == ["0.9"]
    assert [c for c in dest.calls if c[0] == "manifest_delete"] == [
        ("manifest_delete", REPO, gone.digest)
    ]
    assert await tags_of(dest) == await tags_of(source)


async def test_a_safety_rail_refusal_deletes_nothing() -> None:
    source, dest = MemoryBackend("src"), MemoryBackend("dst")
    await store(source, "1.0", image("a"))
    for tag in ("0.7", "0.8", "0.9"):
        await store(dest, tag, image(tag))

    plan = await survey(source, dest, REPO, REPO, PRUNE)
    assert plan.of(Action.PRUNE) == [] and "over prune.max_fraction" in plan.refusals[0]
    await execute(engine(source, dest), plan)
    assert dest.count("manifest_delete") == dest.count("tag_delete") == 0
    assert set(await tags_of(dest)) == {"0.7", "0.8", "0.9", "1.0"}


async def test_prune_candidates_are_computed_once_per_repository(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    source, dest = MemoryBackend("src"), MemoryBackend("dst")
    await store(source, "1.0", image("a"))
    await store(dest, "1.0", image("a"))
    await store(dest, "0.9", image("gone"))
    calls: list[tuple[str, ...]] = []
    real = pruneplan.candidates

    def counted(*args: object, **kwargs: object) -> set[str]:
        calls.append(tuple(args[1]))  # type: ignore[arg-type]
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(pruneplan, "candidates", counted)
    plan = await survey(source, dest, REPO, REPO, PRUNE)
    assert [a.tag for a in plan.of(Action.PRUNE)] == ["0.9"]
    assert calls == [("0.9", "1.0")]


async def test_a_platform_subset_counts_every_manifest_it_pushes() -> None:
    source, dest = MemoryBackend("src"), MemoryBackend("dst")
    index = Index.oci([image("x", "linux/amd64"), image("y", "linux/arm64")])
    await store(source, "1.0", index)
    wanted = PlatformFilter.parse(["linux/arm64"])

    plan = await survey(source, dest, REPO, REPO, SyncPolicy(platforms=wanted))
    (copy,) = plan.of(Action.COPY)
    assert copy.subset == "linux/arm64"
    eng = engine(source, dest)
    await execute(eng, plan, wanted)

    # The arm64 image by digest, then the subset index under the tag: two pushes, two counted.
    assert dest.count("manifest_put") == eng.stats.manifests_pushed == 2
    subset = await dest.manifest_get(REPO, "1.0")
    assert [c.digest for c in subset.children] == [index.children[1].digest]
    assert (await survey(source, dest, REPO, REPO, SyncPolicy(platforms=wanted))).in_sync


async def test_push_manifest_puts_and_counts_once() -> None:
    source, dest = MemoryBackend("src"), MemoryBackend("dst")
    built = image("a")
    manifest = await store(source, "1.0", built)
    eng = engine(source, dest)
    await eng.place_content(REPO, REPO, manifest)

    await eng.push_manifest(REPO, "1.0", manifest)
    await eng.push_manifest(REPO, manifest.digest, manifest)

    assert eng.stats.manifests_pushed == 2 == dest.count("manifest_put")
    assert (await dest.manifest_get(REPO, "1.0")).raw == built.raw


class _MountFails(MemoryBackend):
    """A destination whose mount requests fail in transit (a reset, a timeout)."""

    async def blob_mount(self, repo: str, digest: str, from_repo: str) -> bool:
        raise TransportError(f"{self.name}: POST mount failed: connection reset")


async def test_a_mount_that_fails_in_transit_falls_back_to_the_upload() -> None:
    source, dest = MemoryBackend("src"), _MountFails("dst")
    built = image("mount")
    await store(source, "1.0", built)
    eng = engine(source, dest)
    manifest = await eng.get_manifest(REPO, built.digest)
    blob = manifest.blobs[0]
    eng.ledger.record(blob.digest, "other/app")  # a holder this run knows of
    await eng.copy_blob(REPO, REPO, blob)
    assert (eng.stats.blobs_mounted, eng.stats.blobs_copied) == (0, 1)
    assert await dest.blob_head(REPO, blob.digest)


async def test_source_manifests_are_cached_within_a_byte_budget(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    source, dest = MemoryBackend("src"), MemoryBackend("dst")
    built = image("budget")
    await store(source, "1.0", built)
    eng = engine(source, dest)
    await eng.get_manifest(REPO, built.digest)
    await eng.get_manifest(REPO, built.digest)
    assert eng.stats.source_manifest_gets == 1  # fetched once, then served from the cache
    monkeypatch.setattr(manifestcache, "MANIFEST_CACHE_BYTES", 0)  # nothing fits any more
    eng = engine(source, dest)
    await eng.get_manifest(REPO, built.digest)
    await eng.get_manifest(REPO, built.digest)
    assert eng.stats.source_manifest_gets == 2
