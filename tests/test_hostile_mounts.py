"""Content is proven before it is reused (invariant 10): a source that only *knows* a digest
gets nothing through a mount or a "present at the destination" shortcut.

Tenant A's private layer is mirrored into ``dst/tenanta`` first (the run's content index
remembers where it lives). Then a hostile source lists that layer's digest and size in its
own manifest without holding the blob: the tag must fail naming the blob, and nothing of
tenant A's becomes readable under the hostile rule's destination.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from regsync.backends.layout import Layout
from tests.support import (
    Blob,
    Image,
    Registry,
    RegistryFactory,
    mirror_rule,
    plain_config,
    push,
    regsync_json,
    regsync_json_async,
    write_config,
)
from tests.support.accesslog import ACCESS_LOG, AccessLog
from tests.support.scripted import ScriptedRegistry
from tests.support.stored import store

SECRET = Blob.random(40_000, seed="tenant-a-secret")
PRIVATE = Image.docker([SECRET], labels={"tenant": "a"})
# The hostile image: its own config, and tenant A's layer by digest and size only.
EVIL = Image.docker([SECRET], labels={"tenant": "evil"})


def mirror_tenant_a(tmp_path: Path, src: Registry, dst: Registry) -> None:
    """Rule A: ``src/private/*`` -> ``dst/tenanta`` (the state dir keeps what it placed)."""
    push(src, "private/secret", "1", PRIVATE)
    config = plain_config(tmp_path, src, dst, mirror_rule(src, dst, "private/*", "/tenanta", "a"))
    day0 = regsync_json("once", config)
    assert day0.code == 0, day0.stderr
    assert dst.blob_exists("tenanta/private/secret", SECRET.digest)


def assert_nothing_leaked(dst: Registry, repo: str, summary_rule: dict[str, object]) -> None:
    blobs = summary_rule["blobs"]
    assert isinstance(blobs, dict) and blobs["mounted"] == blobs["present"] == 0, summary_rule
    assert SECRET.digest in str(summary_rule["errors"]), summary_rule
    assert dst.tags(repo) == []
    assert not dst.blob_exists(repo, SECRET.digest)


async def test_a_source_naming_a_digest_it_lacks_gets_no_mount_of_another_tenants_blob(
    tmp_path: Path, source_registry: Registry, registry_factory: RegistryFactory
) -> None:
    """The mount the content index suggests is not made: the source is asked for the blob
    (404), the tag fails naming it, and dst/public holds nothing of tenant A's."""
    src, dst = source_registry, registry_factory(extra_config=ACCESS_LOG)
    mirror_tenant_a(tmp_path, src, dst)
    dst_log = AccessLog(dst)
    async with ScriptedRegistry() as evil:
        evil.add("evil/app", "1", EVIL)
        del evil.blobs[SECRET.digest]  # listed by digest and size, never held
        rule = mirror_rule(evil, dst, "evil/*", "/public", "b")
        config = write_config(tmp_path, _two_hosts(evil, dst, rule), "evil.yaml")

        run = await regsync_json_async("once", config)

    assert run.code == 1, run.stderr
    assert_nothing_leaked(dst, "public/evil/app", run.rule)
    assert evil.count("HEAD", SECRET.digest) == 1  # the proof asked for, and not given
    assert not [r for r in dst_log.requests() if "mount=" in r.path]


def evil_layout_config(tmp_path: Path, dst: Registry) -> Path:
    """A rule copying a layout that lists tenant A's layer digest but lacks the file into
    ``dst``/public."""
    layout = tmp_path / "evil-layout"
    asyncio.run(store(Layout(layout), "evil/app", "1", EVIL))
    (layout / "blobs" / "sha256" / SECRET.digest.split(":")[1]).unlink()
    rule = f'- {{name: b, source: "oci:{layout}//evil/*", destination: "{dst.host}/public"}}'
    return write_config(
        tmp_path, f'version: 1\nregistries:\n  "{dst.host}": {{tls: http}}\nrules:\n  {rule}\n'
    )


def test_a_layout_listing_a_blob_it_lacks_gets_no_mount_of_another_tenants_blob(
    tmp_path: Path, source_registry: Registry, dest_registry: Registry
) -> None:
    src, dst = source_registry, dest_registry
    mirror_tenant_a(tmp_path, src, dst)
    config = evil_layout_config(tmp_path, dst)

    run = regsync_json("once", config)

    assert run.code == 1, run.stderr
    assert_nothing_leaked(dst, "public/evil/app", run.rule)


def test_a_blob_already_at_the_destination_still_needs_the_sources_proof(
    tmp_path: Path, dest_registry: Registry
) -> None:
    """Tenant A's layer is already in the hostile rule's destination repository (pushed there
    by someone else): the tag is not completed from it while the source lacks the blob."""
    dst = dest_registry
    push(dst, "public/evil/app", "other", PRIVATE)  # the destination has the layer already
    config = evil_layout_config(tmp_path, dst)

    run = regsync_json("once", config)

    assert run.code == 1, run.stderr
    assert SECRET.digest in str(run.rule["errors"]), run.rule
    assert dst.tags("public/evil/app") == ["other"]


def _two_hosts(a: ScriptedRegistry, b: Registry, rule: str) -> str:
    return (
        f'version: 1\nregistries:\n  "{a.host}": {{tls: http}}\n  "{b.host}": {{tls: http}}\n'
        f"rules:\n  {rule}\n"
    )
