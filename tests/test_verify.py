"""`regsync verify [--repair]`: missing blobs and child manifests are found, reported, repaired."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from regsync.backends.registry.observer import NullObserver
from regsync.config import load_config
from regsync.verify import TAG_CONCURRENCY, verify
from tests.support import (
    FAST_RETRIES,
    Blob,
    Image,
    Index,
    Registry,
    dead_port,
    mirror_config,
    mirrored_config,
    plain_config,
    push,
    push_manifest,
    registries_yaml,
    regsync_json,
    run_regsync,
    write_config,
)
from tests.support.servers import HubApi, ProxyScript, RateLimitProxy


def setup(tmp_path: Path, src: Registry, dst: Registry) -> tuple[Path, dict[str, str]]:
    base = Blob.random(9000, seed="v-base")
    amd = Image.oci([base, Blob.random(5000, seed="v-amd")], platform="linux/amd64")
    arm = Image.oci([base, Blob.random(5000, seed="v-arm")], platform="linux/arm64")
    pushed = [
        push(src, "vf/app", "1", Image.docker([base, Blob.random(6000, seed="v-1")])),
        push(src, "vf/app", "skip-me", Image.docker([Blob.random(100, seed="v-x")])),
        push(src, "vf/multi", "1", Index.oci([amd, arm])),
    ]
    config = mirror_config(tmp_path, src, dst, "vf/*", "tags: {exclude: ['skip-.*']}", name="vf")
    proc = run_regsync("once", "-c", config)
    assert proc.returncode == 0, proc.stderr
    return config, {p.ref: p.digest for p in pushed}


def remove_blob_data(reg: Registry, digest: str) -> None:
    """Delete a blob's bytes behind the registry's back (what a bad GC or disk loss does)."""
    hexa = digest.split(":")[1]
    data = reg.storage / "docker/registry/v2/blobs/sha256" / hexa[:2] / hexa / "data"
    data.unlink()


def test_verify_passes_on_a_complete_mirror_and_checks_only_tags_in_scope(
    tmp_path: Path, source_registry: Registry, dest_registry: Registry
) -> None:
    config, _ = setup(tmp_path, source_registry, dest_registry)
    code, report, _ = regsync_json("verify", config)
    assert code == 0, report
    (rule,) = report["rules"]
    assert rule["ok"] and rule["missing"] == [] and rule["errors"] == []
    assert rule["repos"] == 2 and rule["tags_checked"] == 2  # skip-me is out of scope
    assert rule["manifests_checked"] == 4  # app:1, the index and its two children
    assert rule["blobs_checked"] == 3 + 5  # app: config+2 layers; multi: 2 configs+3 layers


def test_verify_reports_missing_blob_and_child_then_repair_restores_them(
    tmp_path: Path, source_registry: Registry, dest_registry: Registry
) -> None:
    config, expected = setup(tmp_path, source_registry, dest_registry)
    _, raw = dest_registry.manifest("vf/app", "1")
    layer = json.loads(raw)["layers"][1]["digest"]
    remove_blob_data(dest_registry, layer)
    _, index_raw = dest_registry.manifest("vf/multi", "1")
    child = json.loads(index_raw)["manifests"][1]["digest"]
    dest_registry.delete_manifest("vf/multi", child)

    code, report, _ = regsync_json("verify", config)
    assert code == 1, report
    (rule,) = report["rules"]
    assert not rule["ok"]
    missing = {(m["ref"], m["digest"], m["kind"]) for m in rule["missing"]}
    assert missing == {("vf/app:1", layer, "blob"), ("vf/multi:1", child, "manifest")}

    code, report, _ = regsync_json("verify", config, "--repair")
    assert code == 0, report
    assert sorted(report["rules"][0]["repaired"]) == ["vf/app:1", "vf/multi:1"]
    code, report, _ = regsync_json("verify", config)
    assert code == 0 and report["rules"][0]["missing"] == [], report
    assert dest_registry.blob("vf/app", layer) == source_registry.blob("vf/app", layer)
    assert dest_registry.manifest_digest("vf/multi", child) == child
    for ref, digest in expected.items():
        if "skip-" not in ref:
            assert dest_registry.manifest_digest(*ref.split(":")) == digest


def test_verify_without_repair_changes_nothing_and_bad_config_exits_2(
    tmp_path: Path, source_registry: Registry, dest_registry: Registry
) -> None:
    config, _ = setup(tmp_path, source_registry, dest_registry)
    _, raw = dest_registry.manifest("vf/app", "1")
    layer = json.loads(raw)["layers"][0]["digest"]
    remove_blob_data(dest_registry, layer)
    for _ in range(2):
        code, report, _ = regsync_json("verify", config)
        assert code == 1 and report["rules"][0]["repaired"] == []
    assert not dest_registry.blob_exists("vf/app", layer)
    bad = write_config(tmp_path, "version: 1\nrules: []\n", "bad.yaml")
    proc = run_regsync("verify", "-c", bad)
    assert proc.returncode == 2 and "rules" in proc.stderr and not proc.stdout


def test_repair_of_a_platform_subset_copies_the_missing_pieces(
    tmp_path: Path, source_registry: Registry, dest_registry: Registry
) -> None:
    """The destination index of a platform subset exists nowhere in the source, so repair
    copies what is missing piece by piece instead of the whole tag."""
    amd = Image.oci([Blob.random(7000, seed="s-amd")], platform="linux/amd64")
    arm = Image.oci([Blob.random(7000, seed="s-arm")], platform="linux/arm64")
    source_digest = push(source_registry, "sub/multi", "1", Index.oci([amd, arm])).digest
    config = write_config(
        tmp_path,
        registries_yaml(source_registry, dest_registry)
        + f"""
version: 1
rules:
  - name: sub
    source: {source_registry.host}/sub/multi
    destination: {dest_registry.host}
    platforms: [linux/amd64]
""",
    )
    assert run_regsync("once", "-c", config).returncode == 0
    subset = dest_registry.manifest_digest("sub/multi", "1")
    assert subset and subset != source_digest
    layer = amd.blobs[-1].digest
    remove_blob_data(dest_registry, layer)

    code, report, _ = regsync_json("verify", config, "--repair")
    assert code == 0, report
    (rule,) = report["rules"]
    assert [(m["digest"], m["kind"]) for m in rule["missing"]] == [(layer, "blob")]
    assert rule["repaired"] == ["sub/multi:1"]
    assert dest_registry.blob("sub/multi", layer) == amd.blobs[-1].data
    assert dest_registry.manifest_digest("sub/multi", "1") == subset  # still the subset


def test_once_verify_catches_what_a_digest_diff_cannot(
    tmp_path: Path, source_registry: Registry, dest_registry: Registry
) -> None:
    """A tag whose blob vanished still has the source digest, so `once` alone calls it up to
    date; `once --verify` reports it and exits 1."""
    config, _ = setup(tmp_path, source_registry, dest_registry)
    proc = run_regsync("once", "-c", config, "--json", "--verify")
    summary = json.loads(proc.stdout)
    assert proc.returncode == 0 and summary["ok"] and summary["verify"]["ok"], proc.stderr
    _, raw = dest_registry.manifest("vf/app", "1")
    layer = json.loads(raw)["layers"][1]["digest"]
    remove_blob_data(dest_registry, layer)

    proc = run_regsync("once", "-c", config, "--json", "--verify")
    summary = json.loads(proc.stdout)
    assert proc.returncode == 1, proc.stderr
    assert summary["rules"][0]["result"] == "success"  # the sync itself had nothing to do
    assert summary["ok"] is False and summary["rules"][0]["tags"]["up_to_date"] == 2
    (checked,) = summary["verify"]["rules"]
    assert not summary["verify"]["ok"]
    assert checked["missing"] == [{"ref": "vf/app:1", "digest": layer, "kind": "blob"}]
    assert f"missing blob {layer} in vf/app:1" in proc.stderr


def test_verify_lists_a_hub_namespace_through_the_hub_api(
    tmp_path: Path, source_registry: Registry, dest_registry: Registry
) -> None:
    """A Docker Hub-style glob has no catalog: verify lists it as `once` does (the Hub API),
    so it checks exactly the repositories `once` mirrored."""
    proxy = RateLimitProxy(source_registry.url, ProxyScript(no_catalog=True))
    proxy.start()
    hub = HubApi({"diamol": ["app", "web"]})
    hub.start()
    try:
        pushed = {
            name: push(source_registry, f"diamol/{name}", "1", Image.docker([Blob.random(700)]))
            for name in ("app", "web")
        }
        config = plain_config(
            tmp_path,
            proxy,
            dest_registry,
            f"""
            - name: hub
              source: "{proxy.host}/diamol/*"
              destination: "{dest_registry.host}/h"
            """,
            src_keys=f'hub_api: "{hub.url}"',
        )
        assert run_regsync("once", "-c", config, env=FAST_RETRIES).returncode == 0
        code, report, stderr = regsync_json("verify", config, env=FAST_RETRIES)
        listed = [path for path, _, _ in hub.requests()]
    finally:
        hub.stop()
        proxy.stop()

    assert code == 0, stderr
    (rule,) = report["rules"]
    assert rule["ok"] and rule["errors"] == [] and report["ok"] is True
    assert rule["repos"] == 2 and rule["tags_checked"] == 2
    namespace = "/v2/namespaces/diamol/repositories"
    assert listed.count(namespace) == 2  # once, then verify
    # Besides: `once` reads each repository's tag digests from the Hub tags API.
    assert {p for p in listed if p != namespace} <= {f"{namespace}/{n}/tags" for n in pushed}
    for name, image in pushed.items():
        assert dest_registry.manifest_digest(f"h/diamol/{name}", "1") == image.digest


def test_verify_reads_from_the_mirror_when_the_primary_is_down(
    tmp_path: Path, source_registry: Registry, dest_registry: Registry
) -> None:
    """`mirrors:` holds for verify as for once: the listing and a repair come from the mirror."""
    image = push(source_registry, "team/app", "1", Image.docker([Blob.random(3000, seed="m")]))
    primary = f"127.0.0.1:{dead_port()}"  # nothing listens there
    config = mirrored_config(tmp_path, primary, source_registry, dest_registry)
    assert run_regsync("once", "-c", config, env=FAST_RETRIES).returncode == 0
    _, raw = dest_registry.manifest("team/app", "1")
    layer = json.loads(raw)["layers"][0]["digest"]
    remove_blob_data(dest_registry, layer)

    code, report, stderr = regsync_json("verify", config, "--repair", env=FAST_RETRIES)

    assert code == 0, stderr
    (rule,) = report["rules"]
    assert rule["repos"] == 1 and rule["errors"] == []
    assert rule["missing"] == [{"ref": "team/app:1", "digest": layer, "kind": "blob"}]
    assert rule["repaired"] == ["team/app:1"]
    assert dest_registry.manifest_digest("team/app", "1") == image.digest
    assert dest_registry.blob("team/app", layer) == source_registry.blob("team/app", layer)


def test_tls_files_that_do_not_load_are_a_config_error_for_every_command(
    tmp_path: Path,
) -> None:
    # A ca_file that exists but holds no certificate is found when the config loads: exit 2
    # with the key path and line, before any request, in verify as in once and validate.
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate\n")
    config = write_config(
        tmp_path,
        f"""
        version: 1
        registries:
          127.0.0.1:9:
            ca_file: {bad}
        rules:
          - name: broken
            source: 127.0.0.1:9/a
            destination: 127.0.0.1:9/b
        """,
    )
    for command in ("verify", "once", "check"):
        code, report, stderr = regsync_json(command, config)
        assert code == 2 and "Traceback" not in stderr, stderr
        assert "registries.127.0.0.1:9 (sync.yaml:" in stderr and "cannot load TLS files" in stderr
        assert report["ok"] is False and report["rules"] == [], report


class _TaskCount(NullObserver):
    """Records the most asyncio tasks alive at any request the run made."""

    def __init__(self) -> None:
        self.most = 0
        self.requests = 0

    def request_done(self, registry: str, method: str, status: str, seconds: float) -> None:
        self.requests += 1
        self.most = max(self.most, len(asyncio.all_tasks()))


async def test_verify_walks_a_repository_of_many_tags_with_a_bounded_pool_of_tasks(
    tmp_path: Path, source_registry: Registry, dest_registry: Registry
) -> None:
    """200 destination tags are walked by 16 worker tasks, not one task per tag (a listing
    from outside may name up to a million): the tasks alive stay near the bound, and every
    tag is still checked."""
    image = Image.docker([Blob.random(500, seed="many")])
    push(source_registry, "team/app", "1", image)
    push(dest_registry, "team/app", "0", image)
    for n in range(1, 200):
        push_manifest(dest_registry, "team/app", str(n), image)
    config = load_config(mirror_config(tmp_path, source_registry, dest_registry, "team/*"))
    observer = _TaskCount()

    (result,) = await verify(config, config.rules, observer=observer)

    assert result.ok and result.tags == 200 and result.errors == [], result.errors
    assert observer.requests >= 200  # a HEAD per tag
    assert observer.most <= TAG_CONCURRENCY + 10, observer.most  # workers, the walk, the run
