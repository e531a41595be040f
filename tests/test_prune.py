"""Prune against real registries: what goes, and every safety rail that keeps the rest."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import pytest
from aiohttp import web

from regsync import runner
from regsync.backends.layout import Layout
from regsync.backends.registry.retry import RetryPolicy
from regsync.blobindex import BlobIndex
from regsync.config import Config, parse_config
from regsync.events import NoEvents
from regsync.runner import run
from tests.policy_helpers import image, planned
from tests.support import (
    FAST_RETRIES,
    Blob,
    Image,
    Index,
    Manifest,
    Registry,
    RegistryFactory,
    mirror_config,
    only_rule,
    push,
    registries_yaml,
    regsync_json,
    write_config,
)
from tests.support.observe import parse_metrics, sample
from tests.support.scripted import ScriptedRegistry, error

SCOPED = r"""
tags:
  include: ['\d.*']
prune: true
"""


def seed(src: Registry, tags: list[str], repo: str = "diamol/app") -> dict[str, str]:
    return {t: image(src, repo, t).digest for t in tags}


def test_prune_deletes_tags_the_source_lost_and_leaves_foreign_tags(
    tmp_path: Path, source_registry: Registry, dest_registry: Registry
) -> None:
    digests = seed(source_registry, ["1.0", "1.1", "1.2", "1.3"])
    cfg = mirror_config(tmp_path, source_registry, dest_registry, "diamol/app", SCOPED)
    assert regsync_json("once", cfg, env=FAST_RETRIES).code == 0
    image(dest_registry, "diamol/app", "local-1")  # hand-pushed: outside the rule's filters
    source_registry.delete_manifest("diamol/app", digests["1.3"])

    code, plan, _ = regsync_json("check", cfg, env=FAST_RETRIES)
    assert code == 1 and planned(plan, "prune") == ["1.3"]
    code, dry, _ = regsync_json("once", cfg, "--dry-run", env=FAST_RETRIES)
    assert code == 0 and planned(dry, "prune") == ["1.3"] and only_rule(dry)["tags"]["pruned"] == 0
    assert "1.3" in dest_registry.tags("diamol/app")

    code, summary, _ = regsync_json("once", cfg, env=FAST_RETRIES)

    assert code == 0, summary
    assert only_rule(summary)["tags"] == {"copied": 0, "up_to_date": 3, "pruned": 1, "failed": 0}
    assert dest_registry.tags("diamol/app") == ["1.0", "1.1", "1.2", "local-1"]
    assert dest_registry.manifest_digest("diamol/app", "1.3") is None
    assert regsync_json("check", cfg, env=FAST_RETRIES).code == 0


def test_tags_falling_out_of_latest_are_pruned(
    tmp_path: Path, source_registry: Registry, dest_registry: Registry
) -> None:
    seed(source_registry, ["1.0", "1.1", "1.2", "1.3"])
    first = mirror_config(tmp_path, source_registry, dest_registry, "diamol/app")
    assert regsync_json("once", first, env=FAST_RETRIES).code == 0
    cfg = mirror_config(
        tmp_path, source_registry, dest_registry, "diamol/app", "tags: {latest: 3}\nprune: true"
    )

    code, summary, _ = regsync_json("once", cfg, env=FAST_RETRIES)

    assert code == 0, summary
    assert only_rule(summary)["tags"]["pruned"] == 1
    assert dest_registry.tags("diamol/app") == ["1.1", "1.2", "1.3"]


def test_source_down_never_prunes(
    tmp_path: Path, source_registry: Registry, dest_registry: Registry
) -> None:
    seed(source_registry, ["1.0", "1.1"])
    cfg = mirror_config(tmp_path, source_registry, dest_registry, "diamol/app", SCOPED)
    assert regsync_json("once", cfg, env=FAST_RETRIES).code == 0
    source_registry.stop()

    code, summary, _ = regsync_json("once", cfg, env=FAST_RETRIES)

    assert code == 1
    assert only_rule(summary)["tags"]["pruned"] == 0 and only_rule(summary)["errors"]
    assert dest_registry.tags("diamol/app") == ["1.0", "1.1"]


def test_empty_source_never_prunes_unless_allow_empty(
    tmp_path: Path, source_registry: Registry, dest_registry: Registry
) -> None:
    digests = seed(source_registry, ["1.0", "1.1"])
    cfg = mirror_config(tmp_path, source_registry, dest_registry, "diamol/app", SCOPED)
    assert regsync_json("once", cfg, env=FAST_RETRIES).code == 0
    for d in digests.values():
        source_registry.delete_manifest("diamol/app", d)

    code, summary, _ = regsync_json("once", cfg, env=FAST_RETRIES)

    assert code == 1
    (error,) = only_rule(summary)["errors"]
    assert "the source listed no tags" in error and "prune.allow_empty" in error
    assert dest_registry.tags("diamol/app") == ["1.0", "1.1"]
    allowed = mirror_config(
        tmp_path,
        source_registry,
        dest_registry,
        "diamol/app",
        "prune: {allow_empty: true, max_fraction: 1}",
    )
    code, summary, _ = regsync_json("once", allowed, env=FAST_RETRIES)
    assert code == 0 and only_rule(summary)["tags"]["pruned"] == 2
    assert dest_registry.tags("diamol/app") == []


def test_over_max_fraction_is_refused_with_a_clear_message(
    tmp_path: Path, source_registry: Registry, dest_registry: Registry
) -> None:
    digests = seed(source_registry, ["1.0", "1.1", "1.2", "1.3"])
    cfg = mirror_config(tmp_path, source_registry, dest_registry, "diamol/app", SCOPED)
    assert regsync_json("once", cfg, env=FAST_RETRIES).code == 0
    for tag in ("1.1", "1.2", "1.3"):
        source_registry.delete_manifest("diamol/app", digests[tag])

    code, summary, stderr = regsync_json("once", cfg, env=FAST_RETRIES)

    assert code == 1
    assert only_rule(summary)["errors"] == [
        f"{'diamol/app'}: prune refused: it would delete 3 of 4 tags (75%), over "
        "prune.max_fraction 0.5; raise max_fraction or delete them by hand"
    ]
    assert "prune refused" in stderr
    assert dest_registry.tags("diamol/app") == ["1.0", "1.1", "1.2", "1.3"]


def test_a_tag_sharing_its_digest_goes_alone_and_kept_tags_keep_theirs(
    tmp_path: Path, source_registry: Registry, dest_registry: Registry
) -> None:
    """dist 2.8 deletes by digest only: 1.8/1.9 go through a placeholder, 1.0/local-9 stay."""
    seed(source_registry, ["1.0", "1.1", "1.2"])
    cfg = mirror_config(
        tmp_path,
        source_registry,
        dest_registry,
        "diamol/app",
        SCOPED.replace("true", "{max_fraction: 1}"),
    )
    assert regsync_json("once", cfg, env=FAST_RETRIES).code == 0
    kept = source_registry.manifest_digest("diamol/app", "1.0")
    push(dest_registry, "diamol/app", "1.9", _manifest_of(source_registry, "1.0"))
    foreign = image(dest_registry, "diamol/app", "local-9", seed="x")
    push(dest_registry, "diamol/app", "1.8", _manifest_of(dest_registry, "local-9"))
    image(dest_registry, "diamol/app", "1.7", seed="gone")
    metrics = tmp_path / "metrics.prom"

    code, summary, stderr = regsync_json("once", cfg, "--metrics-file", metrics, env=FAST_RETRIES)

    r = only_rule(summary)
    assert code == 0, summary
    assert r["tags"]["pruned"] == 3 and r["notes"] == [] and r["errors"] == []
    assert sorted(dest_registry.tags("diamol/app")) == ["1.0", "1.1", "1.2", "local-9"]
    for gone in ("1.7", "1.8", "1.9"):
        assert dest_registry.manifest_digest("diamol/app", gone) is None
    assert dest_registry.manifest_digest("diamol/app", "1.0") == kept
    assert dest_registry.manifest_digest("diamol/app", "local-9") == foreign.digest
    samples = parse_metrics(metrics.read_text())
    assert sample(samples, "regsync_out_of_sync_tags", rule="mirror") == 0
    assert "Traceback" not in stderr
    assert regsync_json("check", cfg, env=FAST_RETRIES).code == 0


def test_prune_into_a_layout_removes_exactly_the_tag_sharing_a_kept_digest(
    tmp_path: Path, source_registry: Registry
) -> None:
    """The layout used to filter by digest when given a tag: 'pruned' and still there."""
    digests = seed(source_registry, ["1.0", "1.1", "1.2"])
    layout = tmp_path / "layout"
    cfg = write_config(
        tmp_path,
        registries_yaml(source_registry)
        + "version: 1\nrules:\n  - name: mirror\n"
        + f"    source: {source_registry.host}/diamol/app\n    destination: oci:{layout}\n"
        + "    tags: {include: ['\\d.*']}\n    prune: {max_fraction: 1}\n",
    )
    assert regsync_json("once", cfg, env=FAST_RETRIES).code == 0
    kept = source_registry.manifest_digest("diamol/app", "1.0")
    asyncio.run(_tag_in_layout(layout, "1.9", "1.0"))
    source_registry.delete_manifest("diamol/app", digests["1.1"])

    code, summary, _ = regsync_json("once", cfg, env=FAST_RETRIES)

    assert code == 0, summary
    assert only_rule(summary)["tags"]["pruned"] == 2
    refs = _layout_refs(layout)
    assert sorted(refs) == ["diamol/app:1.0", "diamol/app:1.2"]
    assert refs["diamol/app:1.0"] == kept
    assert regsync_json("check", cfg, env=FAST_RETRIES).code == 0
    code, again, _ = regsync_json("once", cfg, env=FAST_RETRIES)
    assert code == 0 and only_rule(again)["tags"]["pruned"] == 0


def test_deletes_disabled_gives_one_clear_error_per_rule(
    tmp_path: Path, source_registry: Registry, registry_factory: RegistryFactory
) -> None:
    dest = registry_factory(delete_enabled=False)
    digests = {
        repo: seed(source_registry, ["1.0", "1.1", "1.2"], repo) for repo in ("ns/a", "ns/b")
    }
    cfg = mirror_config(tmp_path, source_registry, dest, "ns/*", SCOPED)
    assert regsync_json("once", cfg, env=FAST_RETRIES).code == 0
    for repo, tags in digests.items():
        source_registry.delete_manifest(repo, tags["1.2"])
    media_type, raw = dest.manifest("ns/a", "1.0")
    push(dest, "ns/a", "1.9", Manifest(media_type, raw))  # shares 1.0's digest: a tag delete

    code, summary, stderr = regsync_json("once", cfg, env=FAST_RETRIES)

    assert code == 1
    assert only_rule(summary)["errors"] == [
        f"prune: {dest.host} refuses deletes (405 UNSUPPORTED); enable deletion there "
        "(distribution: storage.delete.enabled) or set prune: false"
    ]
    assert "Traceback" not in stderr
    assert dest.tags("ns/a") == ["1.0", "1.1", "1.2", "1.9"]
    assert dest.tags("ns/b") == ["1.0", "1.1", "1.2"]
    assert dest.manifest_digest("ns/a", "1.9") == dest.manifest_digest("ns/a", "1.0")


async def _tag_in_layout(layout: Path, tag: str, like: str) -> None:
    """Point ``tag`` at the manifest of ``like`` in the layout, as another writer might."""
    backend = Layout(layout)
    await backend.manifest_put("diamol/app", tag, await backend.manifest_get("diamol/app", like))


def _layout_refs(layout: Path) -> dict[str, str]:
    index = json.loads((layout / "index.json").read_text())
    return {
        m["annotations"]["org.opencontainers.image.ref.name"]: m["digest"]
        for m in index["manifests"]
    }


def _manifest_of(reg: Registry, tag: str) -> Manifest:
    media_type, raw = reg.manifest("diamol/app", tag)
    return Manifest(media_type, raw)


def scripted_rule(src: ScriptedRegistry, dst: ScriptedRegistry, prune: str) -> Config:
    """One rule mirroring ``src``'s diamol/app to ``dst`` (both scripted, plain HTTP)."""
    return parse_config(
        f'registries:\n  "{src.host}": {{tls: http}}\n  "{dst.host}": {{tls: http}}\n'
        f"version: 1\nrules:\n  - name: app\n    source: {src.host}/diamol/app\n"
        f"    destination: {dst.host}\n    prune: {prune}\n"
    )


async def test_a_repository_whose_copy_failed_keeps_every_destination_tag() -> None:
    """Invariant 4: the source lost 0.9, but 1.0 failed to copy: nothing is pruned."""
    fails = Image.docker([Blob.random(300, seed="unreadable")])
    async with ScriptedRegistry() as src, ScriptedRegistry() as dst:
        kept = src.add("diamol/app", "0.8", Image.docker([Blob.random(300, seed="0.8")]))
        src.add("diamol/app", "1.0", fails)
        dst.add("diamol/app", "0.8", Image.docker([Blob.random(300, seed="0.8")]))
        lost = dst.add("diamol/app", "0.9", Image.docker([Blob.random(300, seed="0.9")]))

        async def gone(request: web.Request, match: re.Match[str]) -> web.Response:
            return error(404, "BLOB_UNKNOWN", "lost from storage")

        src.override("GET", f"/blobs/{fails.blobs[-1].digest}$", gone)
        config = scripted_rule(src, dst, "{max_fraction: 1}")
        result = (await run(config, config.rules, retry=RetryPolicy(attempts=1))).rules[0]
        assert result.failed == 1 and result.pruned == 0, result.errors
        assert dst.tags["diamol/app"] == {"0.8": kept, "0.9": lost}
        assert dst.count("DELETE", "/manifests/") == 0

        src.overrides.clear()  # the source serves the blob again: the next run prunes
        result = (await run(config, config.rules, retry=RetryPolicy(attempts=1))).rules[0]
        assert (result.copied, result.pruned, result.failed) == (1, 1, 0), result.errors
        assert sorted(dst.tags["diamol/app"]) == ["0.8", "1.0"]


class Outcomes(NoEvents):
    """Records each tag's outcome as the run reports it (what the metrics count)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def tag_done(self, rule: str, outcome: str) -> None:
        self.seen.append((rule, outcome))


async def lost_tag_pair(src: ScriptedRegistry, dst: ScriptedRegistry) -> str:
    """``src`` holds 1.0 and 1.1, ``dst`` those and 0.9, which the source lost: 0.9's digest."""
    for tag in ("1.0", "1.1"):
        image = Image.docker([Blob.random(300, seed=tag)])
        src.add("diamol/app", tag, image)
        dst.add("diamol/app", tag, image)
    return dst.add("diamol/app", "0.9", Image.docker([Blob.random(300, seed="0.9")]))


async def test_a_pruned_tag_is_counted_once_as_pruned_and_its_record_dropped(
    tmp_path: Path,
) -> None:
    index = BlobIndex(tmp_path)
    async with ScriptedRegistry() as src, ScriptedRegistry() as dst:
        await lost_tag_pair(src, dst)
        # Every tag recorded and the repository fully checked: a run between full checks,
        # which keeps the rows it does not replace (a full check would drop 0.9's anyway).
        index.checked(dst.host, "diamol/app")  # forgets the rows: the puts after it stand
        for tag, digest in dst.tags["diamol/app"].items():
            index.put_tag(dst.host, "diamol/app", tag, digest, "")
        index.flush()
        config = scripted_rule(src, dst, "{max_fraction: 1}")
        events = Outcomes()
        result = (await run(config, config.rules, events=events, index=index)).rules[0]
        recorded = index.tags_of(dst.host, "diamol/app").digests

    assert (result.pruned, result.up_to_date) == (1, 2) and "0.9" not in dst.tags["diamol/app"]
    assert sorted(events.seen) == [("app", "pruned"), ("app", "up_to_date"), ("app", "up_to_date")]
    assert "0.9" not in recorded  # the next run does not take it for still there
    index.close()


async def test_a_run_told_to_stop_before_its_deletes_deletes_nothing() -> None:
    """A shutdown starts no new work: the copies left are reported, the deletes not begun."""
    async with ScriptedRegistry() as src, ScriptedRegistry() as dst:
        lost = await lost_tag_pair(src, dst)
        src.add("diamol/app", "1.2", Image.docker([Blob.random(300, seed="1.2")]))
        config = scripted_rule(src, dst, "{max_fraction: 1}")
        stop = asyncio.Event()
        stop.set()
        result = (await run(config, config.rules, stop=stop)).rules[0]

    assert (result.pruned, result.copied, result.interrupted) == (0, 0, 1)
    assert dst.tags["diamol/app"]["0.9"] == lost and dst.count("DELETE", "/manifests/") == 0


async def test_a_shutdown_during_the_deletes_starts_no_further_delete() -> None:
    """SIGTERM after the prune began: the delete in flight ends, no further one starts."""
    async with ScriptedRegistry() as src, ScriptedRegistry() as dst:
        lost = await lost_tag_pair(src, dst)
        also_lost = dst.add("diamol/app", "0.8", Image.docker([Blob.random(300, seed="0.8")]))
        config = scripted_rule(src, dst, "{max_fraction: 1}")
        stop = asyncio.Event()

        async def signalled(request: web.Request, match: re.Match[str]) -> None:
            stop.set()  # the shutdown arrives while this delete is served
            return None  # served as usual

        dst.override("DELETE", "/manifests/", signalled)
        result = (await run(config, config.rules, stop=stop)).rules[0]

    assert dst.count("DELETE", "/manifests/") == 1 and result.pruned == 1, result
    left = {dst.tags["diamol/app"].get(tag) for tag in ("0.8", "0.9")}
    assert left & {lost, also_lost} and None in left  # one deleted, the other kept
    assert any("shutting down: 1 prunes left" in note for note in result.notes), result.notes


async def test_a_renamed_multi_arch_tag_keeps_its_platform_subset_when_the_old_name_goes() -> None:
    """Source 1.0 became 2.0 (same index): copying 2.0 makes the very subset 1.0 points at at
    the destination, so 1.0 goes by tag alone (by digest it would take 2.0 along)."""
    base = Blob.random(2000, seed="base")
    index = Index.oci(
        [
            Image.oci([base, Blob.random(1500, seed=p)], platform=p)
            for p in ("linux/amd64", "linux/arm64/v8", "linux/arm/v7")
        ]
    )
    async with ScriptedRegistry() as src, ScriptedRegistry() as dst:
        src.add("diamol/app", "1.0", index)
        dst.tag_deletes = True
        config = parse_config(
            f'registries:\n  "{src.host}": {{tls: http}}\n  "{dst.host}": {{tls: http}}\n'
            f"version: 1\nrules:\n  - name: app\n    source: {src.host}/diamol/app\n"
            f"    destination: {dst.host}\n    prune: {{max_fraction: 1}}\n"
            "    platforms: [linux/amd64, linux/arm64]\n"
        )
        first = (await run(config, config.rules)).rules[0]
        subset = dst.tags["diamol/app"]["1.0"]
        src.tags["diamol/app"] = {"2.0": index.digest}

        result = (await run(config, config.rules)).rules[0]

    assert first.copied == 1 and subset != index.digest, first.errors
    assert (result.copied, result.pruned, result.failed) == (1, 1, 0), result.errors
    assert dst.tags["diamol/app"] == {"2.0": subset}
    assert dst.count("DELETE", f"/manifests/{subset}$") == 0


async def test_a_registry_refusing_deletes_is_reported_once_by_each_rule_naming_it() -> None:
    async with ScriptedRegistry() as src, ScriptedRegistry() as dst:
        for tag in ("1.0", "1.1"):
            image = Image.docker([Blob.random(300, seed=tag)])
            src.add("diamol/app", tag, image)
            for path in ("one", "two"):
                dst.add(f"{path}/diamol/app", tag, image)
        for path in ("one", "two"):
            dst.add(f"{path}/diamol/app", "0.9", Image.docker([Blob.random(300, seed="0.9")]))

        async def refuse(request: web.Request, match: re.Match[str]) -> web.Response:
            return error(405, "UNSUPPORTED", "The operation is unsupported.")

        dst.override("DELETE", r"/manifests/", refuse)
        rules = "".join(
            f"  - name: {path}\n    source: {src.host}/diamol/app\n"
            f"    destination: {dst.host}/{path}\n    prune: {{max_fraction: 1}}\n"
            for path in ("one", "two")
        )
        config = parse_config(
            f'registries:\n  "{src.host}": {{tls: http}}\n  "{dst.host}": {{tls: http}}\n'
            f"version: 1\nrules:\n{rules}"
        )
        result = await run(config, config.rules)

    refusal = (
        f"prune: {dst.host} refuses deletes (405 UNSUPPORTED); enable deletion there "
        "(distribution: storage.delete.enabled) or set prune: false"
    )
    assert [r.errors.count(refusal) for r in result.rules] == [1, 1], result.rules


async def test_a_registry_that_answers_202_but_keeps_the_tag_reports_no_prune() -> None:
    """A tag counts as pruned only once a HEAD shows it gone, by digest as by tag."""
    async with ScriptedRegistry() as src, ScriptedRegistry() as dst:
        dst.deletes_keep_tags = True
        for tag in ("1.0", "1.1"):
            image = Image.docker([Blob.random(300, seed=tag)])
            src.add("diamol/app", tag, image)
            dst.add("diamol/app", tag, image)
        lost = dst.add("diamol/app", "0.9", Image.docker([Blob.random(300, seed="0.9")]))
        config = scripted_rule(src, dst, "{max_fraction: 1}")
        result = (await run(config, config.rules, retry=RetryPolicy(attempts=1))).rules[0]

    assert dst.count("DELETE", f"/manifests/{lost}$") == 1  # by digest: nothing shares it
    assert (result.pruned, result.up_to_date) == (0, 2)
    assert any(
        e.startswith("diamol/app:0.9: prune: still tagged") and e.endswith(f"after deleting {lost}")
        for e in result.errors
    ), result.errors
    assert dst.tags["diamol/app"]["0.9"] == lost


async def test_cut_short_source_listing_never_prunes(dest_registry: Registry) -> None:
    """Page 1 of the source's tag list arrives, page 2 fails: the repo is not pruned at all."""
    async with ScriptedRegistry() as src:
        for tag in ("1.0", "1.1", "1.2", "1.3"):
            src.add("diamol/app", tag, Image.docker([Blob.random(300, seed=tag)]))
        config = parse_config(
            registries_yaml(dest_registry)
            + f'  "{src.host}": {{tls: http}}\nversion: 1\nrules:\n'
            + f"  - name: cut\n    source: {src.host}/diamol/app\n"
            + f"    destination: {dest_registry.host}\n    prune: {{max_fraction: 1}}\n"
        )
        assert (await run(config, config.rules)).rules[0].copied == 4

        async def first_page_only(request: web.Request, match: re.Match[str]) -> web.Response:
            if "last" in request.query:
                return error(500, "UNKNOWN", "storage backend gone")
            link = '</v2/diamol/app/tags/list?n=1000&last=1.0>; rel="next"'
            return web.json_response(
                {"name": "diamol/app", "tags": ["1.0"]}, headers={"Link": link}
            )

        src.override("GET", r"^/v2/diamol/app/tags/list$", first_page_only)
        result = (await run(config, config.rules)).rules[0]

    assert result.pruned == 0 and not result.plans
    assert any("500" in e and "tags/list" in e for e in result.errors), result.errors
    assert dest_registry.tags("diamol/app") == ["1.0", "1.1", "1.2", "1.3"]


async def test_no_repository_is_pruned_after_a_copy_of_the_rule_failed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """README "Pruning": a repository is pruned only if no copy of the rule failed. One
    repository at a time: diamol/a's copy fails first, so diamol/b keeps the tag it lost."""
    monkeypatch.setattr(runner, "REPO_CONCURRENCY", 1)
    fails = Image.docker([Blob.random(300, seed="unreadable")])
    async with ScriptedRegistry() as src, ScriptedRegistry() as dst:
        src.add("diamol/a", "1.0", fails)
        lost = await lost_tag_pair(src, dst)  # diamol/app: 0.9 gone from the source

        async def gone(request: web.Request, match: re.Match[str]) -> web.Response:
            return error(404, "BLOB_UNKNOWN", "lost from storage")

        src.override("GET", f"/blobs/{fails.blobs[-1].digest}$", gone)
        config = parse_config(
            f'registries:\n  "{src.host}": {{tls: http}}\n  "{dst.host}": {{tls: http}}\n'
            f"version: 1\nrules:\n  - name: app\n    source: {src.host}/diamol/*\n"
            f"    destination: {dst.host}\n    prune: {{max_fraction: 1}}\n"
        )
        result = (await run(config, config.rules, retry=RetryPolicy(attempts=1))).rules[0]
        assert result.failed == 1 and result.pruned == 0, result.errors
        assert dst.tags["diamol/app"]["0.9"] == lost
        assert dst.count("DELETE", "/manifests/") == 0
