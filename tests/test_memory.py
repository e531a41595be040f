"""Memory bounded by the work in flight, not the catalogue (issue #21): single-flight locks
are dropped after use, the manifest cache counts what parsed manifests cost and evicts the
least recently used, a copying run's result keeps no per-tag record of up-to-date tags,
planning and copying make tasks for the requests in flight only (not one per tag), and the
tag records a full check confirms are committed as repositories are planned."""

from __future__ import annotations

import asyncio
import weakref
from pathlib import Path

import pytest

from regsync import aio, blobindex, lru, manifestcache, mediafilter, reposync, runcontext, runner
from regsync.backends.memory import MemoryBackend
from regsync.blobindex import BlobIndex
from regsync.execute import copy_action
from regsync.keyedlocks import KeyedLocks
from regsync.lru import LRU
from regsync.manifestcache import manifest_cost
from regsync.mediafilter import MediaTypeFilter
from regsync.metrics import out_of_sync
from regsync.oci.manifest import Descriptor, Manifest, parse_manifest
from regsync.plan import Action, TagAction
from regsync.survey import HEAD_CONCURRENCY, SyncPolicy, survey
from tests.support import (
    DOCKER_MANIFEST,
    OCI_MANIFEST,
    Blob,
    Image,
    Index,
    RegistryFactory,
    mirror_config,
    push,
)
from tests.test_execute import REPO, engine, execute, image, store


async def test_keyed_locks_exclude_per_key_and_are_dropped_with_their_last_user() -> None:
    locks: KeyedLocks[str] = KeyedLocks()
    inside: list[str] = []
    order: list[str] = []

    async def work(key: str, name: str) -> None:
        async with locks.hold(key):
            assert key not in inside  # one holder per key
            inside.append(key)
            order.append(name)
            await asyncio.sleep(0)
            inside.remove(key)

    await asyncio.gather(*(work(k, f"{k}{i}") for i in range(5) for k in "ab"))
    assert len(order) == 10 and len(locks) == 0


async def test_a_cancelled_waiter_leaves_no_lock_behind() -> None:
    locks: KeyedLocks[str] = KeyedLocks()
    async with locks.hold("k"):
        waiter = asyncio.ensure_future(locks.hold("k").__aenter__())
        await asyncio.sleep(0)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert len(locks) == 1  # only the holder
    assert len(locks) == 0


async def test_a_copy_keeps_no_single_flight_lock_after_it_ends() -> None:
    """`CopyEngine._flights` and the ledger's per-digest locks used to keep one lock per
    (operation, repository, digest) for the whole run."""
    source, dest = MemoryBackend("src"), MemoryBackend("dst")
    for i in range(6):
        await store(source, f"{i}.0", image(f"flight{i}"))
    await store(source, "multi", Index.oci([image("m-amd"), image("m-arm", "linux/arm64")]))
    eng = engine(source, dest)
    plan = await survey(source, dest, REPO, REPO, SyncPolicy())
    await execute(eng, plan)
    assert eng.stats.manifests_pushed == 7 + 2
    assert len(eng._flights) == 0 and len(eng.ledger._locks) == 0


async def test_the_manifest_cache_counts_parsed_cost_and_drops_the_least_recently_used(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    source, dest = MemoryBackend("src"), MemoryBackend("dst")
    fat = Image.oci([Blob.random(10, seed=f"l{i}") for i in range(40)])
    built = [await store(source, f"{i}", image(f"lru{i}")) for i in range(3)]
    many = await store(source, "fat", fat)
    assert manifest_cost(many) > len(many.raw) + 40 * 256  # descriptors count, not raw bytes
    monkeypatch.setattr(manifestcache, "MANIFEST_CACHE_BYTES", 2 * manifest_cost(built[0]) + 1)
    eng = engine(source, dest)
    for m in (built[0], built[1], built[0], built[2]):  # 1 is least recently used at the end
        await eng.get_manifest(REPO, m.digest)
    assert eng.stats.source_manifest_gets == 3
    await eng.get_manifest(REPO, built[0].digest)  # kept
    assert eng.stats.source_manifest_gets == 3
    await eng.get_manifest(REPO, built[1].digest)  # evicted, fetched again
    assert eng.stats.source_manifest_gets == 4
    await eng.get_manifest(REPO, many.digest)  # over the budget alone: never held
    await eng.get_manifest(REPO, many.digest)
    assert eng.stats.source_manifest_gets == 6
    assert eng._manifests.cached_bytes <= manifestcache.MANIFEST_CACHE_BYTES


async def test_a_copying_run_keeps_no_record_of_each_up_to_date_tag(
    tmp_path: Path, registry_factory: RegistryFactory
) -> None:
    """`RuleResult.plans` of `once` keep no record of every tag in sync nor of every copy
    (the counts, drift and out-of-sync gauge stay exact); `check` still gets every tag's
    action."""
    from regsync.config import load_config
    from regsync.runner import run

    src, dst = registry_factory(), registry_factory()
    for tag in ("1", "2", "3"):
        push(src, "mem/app", tag, Image.docker([Blob.random(300, seed=f"mem{tag}")]))
    config = load_config(mirror_config(tmp_path, src, dst, "mem/app"))
    first = await run(config, config.rules)
    push(src, "mem/app", "4", Image.docker([Blob.random(300, seed="mem4")]))

    again = (await run(config, config.rules)).rules[0]
    checked = (await run(config, config.rules, plan_only=True)).rules[0]

    assert first.rules[0].copied == 3
    assert (again.copied, again.up_to_date) == (1, 3)
    (plan,) = again.plans
    assert plan.actions == () and plan.selected == ()  # copies counted, not kept
    assert again.drift == 1 and out_of_sync(again) == 0
    assert [a.action for a in checked.plans[0].actions] == [Action.SKIP] * 4


def _tasks_seen(seen: list[int]) -> None:
    seen.append(len(asyncio.all_tasks()))


async def test_bounded_map_keeps_workers_not_a_task_per_item_and_raises_the_first_error() -> None:
    seen: list[int] = []
    taken: list[int] = []

    async def double(n: int) -> int:
        _tasks_seen(seen)
        taken.append(n)
        await asyncio.sleep(0)
        if n == 7:
            raise ValueError("seven")
        return 2 * n

    assert await aio.bounded_map(double, range(6), 4) == [0, 2, 4, 6, 8, 10]  # in order
    before = len(asyncio.all_tasks())
    seen.clear()
    taken.clear()
    with pytest.raises(ValueError, match="seven"):
        await aio.bounded_map(double, range(500), 4)
    assert max(seen) <= before + 4  # four workers, never 500 waiting tasks
    assert len(taken) < 20  # no worker takes another item after the error


async def test_planning_a_large_repository_keeps_tasks_for_the_heads_in_flight_only() -> None:
    """A survey used to gather one task per tag and side (8 repositories x 1,000 tags x 2:
    16,000 waiting tasks, ~2.7 KB each, the 22 MiB a 50,000-tag full check peaked above a
    no-op); now at most HEAD_CONCURRENCY workers per side wait."""
    source, dest = MemoryBackend("src"), MemoryBackend("dst")
    built = image("many")
    for i in range(400):
        await store(source, f"1.{i}.0", built)
        await store(dest, f"1.{i}.0", built)
    seen: list[int] = []
    for backend in (source, dest):
        head = backend.manifest_head

        async def counted(repo: str, ref: str, head=head):  # type: ignore[no-untyped-def]
            _tasks_seen(seen)
            return await head(repo, ref)

        backend.manifest_head = counted  # type: ignore[method-assign]
    before = len(asyncio.all_tasks())

    plan = await survey(source, dest, REPO, REPO, SyncPolicy())

    assert [a.action for a in plan.actions] == [Action.SKIP] * 400
    assert len(seen) == 800  # every tag HEADed on both sides (a full check)
    assert max(seen) <= before + 3 * HEAD_CONCURRENCY


async def test_copying_a_repository_keeps_tasks_for_the_copies_in_flight_only(
    tmp_path: Path, registry_factory: RegistryFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The copies of a repository's missing tags used to be one task each, made up front."""
    from regsync.config import load_config

    monkeypatch.setattr(runcontext, "IMAGE_CONCURRENCY", 2)
    monkeypatch.setattr(reposync, "IMAGE_CONCURRENCY", 2)
    src, dst = registry_factory(), registry_factory()
    shared = Blob.random(200, seed="inflight")
    for i in range(30):
        push(src, "mem/many", f"{i}", Image.docker([shared], labels={"id": f"c{i}"}))
    seen: list[int] = []
    copy = copy_action

    async def counted(*args, **kwargs):  # type: ignore[no-untyped-def]
        _tasks_seen(seen)
        return await copy(*args, **kwargs)

    monkeypatch.setattr(reposync, "copy_action", counted)
    config = load_config(mirror_config(tmp_path, src, dst, "mem/many"))

    result = (await runner.run(config, config.rules)).rules[0]

    assert (result.copied, result.failed, len(seen)) == (30, 0, 30)
    assert max(seen) < 15  # two copy workers and what they run, never 30 waiting copies


async def test_only_an_event_triggered_run_notes_the_tags_in_place_and_only_those_named(
    tmp_path: Path, registry_factory: RegistryFactory
) -> None:
    """`RuleResult.placed` (what `triggers` settles events by) kept every tag a cycle copied
    or found in sync; a cycle now keeps none, and its counts stay exact."""
    from regsync.config import load_config

    src, dst = registry_factory(), registry_factory()
    for tag in ("1", "2", "3"):
        push(src, "mem/ev", tag, Image.docker([Blob.random(300, seed=f"ev{tag}")]))
    config = load_config(mirror_config(tmp_path, src, dst, "mem/ev"))
    cycle = (await runner.run(config, config.rules)).rules[0]
    push(src, "mem/ev", "4", Image.docker([Blob.random(300, seed="ev4")]))

    event = await runner.run(config, config.rules, targets={"mem/ev": {"4": "", "3": ""}})

    assert (cycle.copied, cycle.placed) == (3, [])
    (ran,) = event.rules
    assert (ran.copied, ran.up_to_date) == (1, 1)
    assert sorted(ran.placed) == [("mem/ev", "3"), ("mem/ev", "4")]


class _Crash(BaseException):
    """The process dying mid-run: nothing after it runs (no end-of-run flush, no close)."""


async def test_a_full_check_commits_each_repositorys_records_as_it_goes_and_only_true_ones(
    tmp_path: Path, registry_factory: RegistryFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 50,000-tag `--full` held every tag record until the run ended (113 MiB against a
    no-op's 91). Records are now committed in batches as repositories are planned, so a
    run that dies after the first repository leaves that repository's rows, each the digest
    the destination holds, and nothing it did not check."""
    from regsync.config import load_config

    monkeypatch.setattr(blobindex, "FLUSH_BATCH", 2)
    monkeypatch.setattr(runner, "REPO_CONCURRENCY", 1)
    src, dst = registry_factory(), registry_factory()
    for name in ("a", "b"):
        for tag in ("1", "2", "3"):
            push(src, f"mem/{name}", tag, Image.docker([Blob.random(300, seed=f"{name}{tag}")]))
    config = load_config(mirror_config(tmp_path, src, dst, "mem/*"))
    await runner.run(config, config.rules)  # copies: the destination holds everything
    state = tmp_path / "state"
    surveyed = survey

    async def dies_at_b(*args, **kwargs):  # type: ignore[no-untyped-def]
        if args[2] == "mem/b":
            raise _Crash
        return await surveyed(*args, **kwargs)

    monkeypatch.setattr(reposync, "survey", dies_at_b)
    with pytest.raises(BaseExceptionGroup) as crashed:
        await runner.run(config, config.rules, index=BlobIndex.open(state), full=True)
    assert crashed.value.subgroup(_Crash) is not None

    after = BlobIndex.open(state)  # what another process finds in the file
    a, b = after.tags_of(dst.host, "mem/a"), after.tags_of(dst.host, "mem/b")
    assert a.checked is not None and b.checked is None
    assert a.digests == {
        tag: (dst.manifest_digest("mem/a", tag), DOCKER_MANIFEST) for tag in ("1", "2", "3")
    }
    assert b.digests == {}


def test_lru_keeps_the_most_recently_used_keys() -> None:
    seen: LRU[str, bool] = LRU(2)
    seen["a"], seen["b"] = True, False
    assert "a" in seen  # a is now the most recently used
    seen["c"] = True
    assert ("a" in seen, "b" in seen, "c" in seen, len(seen)) == (True, False, True, 2)
    assert seen.setdefault("c", False) is True and seen.get("b") is None


async def test_a_copy_remembers_the_recent_blobs_and_images_not_every_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The ledger's locations, the source's proofs and the images placed were kept for
    every blob and image of the run (~0.4 KB a copied tag); now the most recently used
    RUN_MEMORY, so the layer every image shares is still uploaded once."""
    monkeypatch.setattr(lru, "RUN_MEMORY", 8)
    source, dest = MemoryBackend("src"), MemoryBackend("dst")
    layer = Blob.random(300, seed="shared-layer")
    built = [
        await store(source, f"{i}", Image.oci([layer], labels={"id": str(i)})) for i in range(30)
    ]
    eng = engine(source, dest)
    plan = await survey(source, dest, REPO, REPO, SyncPolicy())
    await execute(eng, plan)

    for i, manifest in enumerate(built):
        head = await dest.manifest_head(REPO, f"{i}")
        assert head is not None and head.digest == manifest.digest
    assert eng.stats.blobs_copied == 31  # 30 configs and the shared layer once
    assert max(len(eng.ledger.locations), len(eng._placed), len(eng._proofs)) <= 8


async def test_media_types_planning_holds_the_manifests_being_read_not_every_one() -> None:
    """`media_types` naming an artifact type reads each image manifest to be copied: it used
    to read them all at once and hold every one until the repository was planned (bounded by
    the listing); now a few at a time, each let go once its tag is decided."""
    built = Image.oci([Blob.random(100, seed="media")])
    alive: list[weakref.ref[Manifest]] = []
    most = 0

    async def fetch(repo: str, digest: str) -> Manifest:
        nonlocal most
        await asyncio.sleep(0)
        manifest = parse_manifest(built.raw, OCI_MANIFEST)
        alive.append(weakref.ref(manifest))
        most = max(most, sum(1 for ref in alive if ref() is not None))
        return manifest

    head = Descriptor(OCI_MANIFEST, built.digest, len(built.raw))
    actions = tuple(TagAction(f"{i}", Action.COPY, built.digest) for i in range(300))
    media = MediaTypeFilter(frozenset({OCI_MANIFEST, "application/vnd.example.chart"}))

    kept, skipped = await mediafilter.apply(
        media, actions, {a.tag: head for a in actions}, REPO, fetch
    )

    assert (len(kept), len(skipped), len(alive)) == (0, 300, 300)  # an image config: refused
    assert most <= mediafilter.READ_CONCURRENCY + 1


def test_the_readme_states_the_memory_bounds_the_code_has() -> None:
    """README "What is bounded", *Catalogue size*: each number is the code's."""
    from tests.support import REPO_ROOT

    readme = " ".join((REPO_ROOT / "README.md").read_text().split())
    claim = readme[readme.index("*Catalogue size*") :][:1200]
    assert f"HEADs {HEAD_CONCURRENCY} tags at a time" in claim
    assert f"copies run on {runcontext.IMAGE_CONCURRENCY} workers" in claim
    assert f"for the {lru.RUN_MEMORY:,} most recently" in claim
    assert f"cached within {manifestcache.MANIFEST_CACHE_BYTES // 2**20} MiB" in claim
