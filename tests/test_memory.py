"""Memory bounded by the work in flight, not the catalogue (issue #21): single-flight locks
are dropped after use, the manifest cache counts what parsed manifests cost and evicts the
least recently used, and a copying run's result keeps no per-tag record of up-to-date tags."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from regsync import manifestcache
from regsync.backends.memory import MemoryBackend
from regsync.keyedlocks import KeyedLocks
from regsync.manifestcache import manifest_cost
from regsync.plan import Action
from regsync.survey import SyncPolicy, survey
from tests.support import Blob, Image, Index, RegistryFactory, mirror_config, push
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
    """`RuleResult.plans` of `once` keep the copies and prunes, not every tag in sync (the
    counts stay exact); `check` still gets every tag's action."""
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
    assert [(a.tag, a.action) for a in plan.actions] == [("4", Action.COPY)]
    assert plan.selected == ()
    assert [a.action for a in checked.plans[0].actions] == [Action.SKIP] * 4
