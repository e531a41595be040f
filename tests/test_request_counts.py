"""What a run costs in requests, counted from each registry's own access log (no timing).

These pin the performance contract of issue #7 that is deterministic: a no-op re-run makes zero
source manifest GETs and at most one manifest HEAD per tag per side plus the listings; a cold
copy moves each distinct blob once, mounts the rest, and asks nothing twice.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from regsync.runner import REPO_CONCURRENCY
from tests.support import (
    Blob,
    Catalogue,
    Image,
    Index,
    Registry,
    RegistryFactory,
    mirror_config,
    push,
    regsync_json,
    seed_catalogue,
)
from tests.support.accesslog import ACCESS_LOG, AccessLog

REPOS, TAGS, LAYERS = 3, 4, 3
WRITES = ("PUT", "POST", "PATCH", "DELETE")


def setup(tmp_path: Path, factory: RegistryFactory) -> tuple[Registry, Registry, Path, Catalogue]:
    src, dst = factory(extra_config=ACCESS_LOG), factory(extra_config=ACCESS_LOG)
    cat = seed_catalogue(
        src, repos=REPOS, tags=TAGS, layers=LAYERS, layer_size=2_000, namespace="cnt"
    )
    config = mirror_config(tmp_path, src, dst, "cnt/*", name="counted")
    return src, dst, config, cat


def pulls_counted(config: Path, src: Registry) -> Path:
    """``config`` with a `rate_limit` on ``src``: its manifest GETs count as pulls."""
    text = config.read_text()
    entry = f'"{src.host}":\n    tls: http\n'
    assert entry in text
    config.write_text(text.replace(entry, entry + "    rate_limit: {min_remaining: 0}\n"))
    return config


def writes(counts: Counter[str]) -> int:
    return sum(n for key, n in counts.items() if key.split()[0] in WRITES)


def test_full_check_no_op_heads_each_tag_once_per_side_and_gets_no_manifest(
    tmp_path: Path, registry_factory: RegistryFactory
) -> None:
    """A full check (`once --full`) of an unchanged mirror: listings plus one HEAD per tag per
    side; no GETs, no writes anywhere. (Between full checks: see tests/test_cycle.py.)"""
    src, dst, config, _ = setup(tmp_path, registry_factory)
    run = regsync_json("once", config)
    assert run.code == 0 and run.rule, run.stderr
    src_log, dst_log = AccessLog(src), AccessLog(dst)

    run = regsync_json("once", config, "--full")
    assert run.code == 0, run.stderr
    rule = run.rule

    tags = REPOS * TAGS
    assert rule["tags"]["up_to_date"] == tags and rule["source_manifest_gets"] == 0
    assert src_log.counts() == Counter({"HEAD manifest": tags, "GET tags": REPOS, "GET catalog": 1})
    # The destination's catalog, once per run: what the rule's scope holds that the source lost.
    assert dst_log.counts() == Counter({"HEAD manifest": tags, "GET tags": REPOS, "GET catalog": 1})


def test_cold_copy_moves_each_blob_once_and_mounts_shared_ones(
    tmp_path: Path, registry_factory: RegistryFactory
) -> None:
    """First run: one GET and one upload per distinct blob, mounts for the shared base, one
    manifest GET and PUT per tag; no HEADs into repositories that had no tags, and no
    per-upload auth probes."""
    src, dst, config, cat = setup(tmp_path, registry_factory)
    src_log, dst_log = AccessLog(src), AccessLog(dst)

    run = regsync_json("once", config)
    assert run.code == 0, run.stderr
    rule = run.rule

    tags = REPOS * TAGS
    distinct = {d for repo in cat.repos for p in cat.images[repo].values() for d in p.blobs}
    per_repo = sum(
        len({d for p in cat.images[repo].values() for d in p.blobs}) for repo in cat.repos
    )
    mounts = per_repo - len(distinct)  # the shared base layer, in every repo but the first
    refs = sum(len(p.blobs) for repo in cat.repos for p in cat.images[repo].values())
    present = refs - per_repo  # placed earlier in this run for another tag of the repo
    assert rule["blobs"] == {"copied": len(distinct), "mounted": mounts, "present": present}
    got, put = src_log.counts(), dst_log.counts()
    assert got["GET blob"] == len(distinct)
    assert got["GET manifest"] == tags == rule["source_manifest_gets"]
    # Planned before the destination accepted a copy: HEADed first (a destination refusing
    # writes then costs one GET at most), never both HEADed and fetched twice.
    assert got["HEAD manifest"] <= tags
    assert put["PUT upload"] == len(distinct)
    assert put["POST upload"] == len(distinct) + mounts
    assert put["PUT manifest"] == tags
    assert put["HEAD blob"] == 0 and put["HEAD manifest"] == 0
    assert put["GET ping"] <= 1  # an open registry is probed once, not before every upload
    assert writes(src_log.counts()) == 0


def test_tags_sharing_a_digest_cost_one_source_manifest_get(
    tmp_path: Path, registry_factory: RegistryFactory
) -> None:
    """On a source whose GETs are pulls (`rate_limit` set, as Docker Hub): `latest`, `1`,
    `1.2`, `1.2.3` on one image, and two tags on one multi-arch index: one source GET per
    distinct manifest digest (children included), one upload per blob, every tag pushed with
    the same bytes."""
    src, dst = registry_factory(extra_config=ACCESS_LOG), registry_factory(extra_config=ACCESS_LOG)
    single = Image.docker([Blob.random(3_000, seed="one"), Blob.random(2_000, seed="two")])
    for tag in ("latest", "1", "1.2", "1.2.3"):
        one = push(src, "same/app", tag, single)
    arm = Image.oci([Blob.random(1_000, seed="arm")], platform="linux/arm64")
    amd = Image.oci([Blob.random(1_000, seed="amd")])
    for tag in ("multi", "multi-1"):
        multi = push(src, "same/app", tag, Index.oci([amd, arm]))
    config = pulls_counted(mirror_config(tmp_path, src, dst, "same/app", name="same"), src)
    src_log, dst_log = AccessLog(src), AccessLog(dst)

    run = regsync_json("once", config)

    assert run.code == 0, run.stderr
    assert run.rule["tags"]["copied"] == 6
    distinct = 1 + len(multi.manifests)  # the image; the index and its two children
    assert run.rule["source_manifest_gets"] == distinct
    got, put = src_log.counts(), dst_log.counts()
    assert got["GET manifest"] == distinct
    assert got["GET blob"] == len(one.blobs) + len(multi.blobs)
    assert put["PUT manifest"] == 6 + len(multi.manifests) - 1  # tags, children by digest
    for tag in ("latest", "1", "1.2", "1.2.3", "multi", "multi-1"):
        assert dst.manifest_digest("same/app", tag) == src.manifest_digest("same/app", tag)


def test_an_alias_of_a_digest_the_destination_holds_costs_no_source_pull(
    tmp_path: Path, registry_factory: RegistryFactory
) -> None:
    """`latest` moving to a digest the destination has under `2.0`, and a new tag `stable` on
    the digest of `1.0` (source GETs are pulls): the manifests are read from the destination,
    verified, and put under the tags; the source serves only HEADs."""
    src, dst = registry_factory(extra_config=ACCESS_LOG), registry_factory(extra_config=ACCESS_LOG)
    one = push(src, "al/app", "1.0", Image.docker([Blob.random(900, seed="al1")]))
    two = push(src, "al/app", "2.0", Image.docker([Blob.random(900, seed="al2")]))
    push(src, "al/app", "latest", Image.docker([Blob.random(900, seed="al1")]))
    config = pulls_counted(mirror_config(tmp_path, src, dst, "al/app", name="al"), src)
    assert regsync_json("once", config).code == 0
    push(src, "al/app", "latest", Image.docker([Blob.random(900, seed="al2")]))
    push(src, "al/app", "stable", Image.docker([Blob.random(900, seed="al1")]))
    src_log, dst_log = AccessLog(src), AccessLog(dst)

    run = regsync_json("once", config)

    assert run.code == 0 and run.rule["tags"]["copied"] == 2, run.stderr
    assert run.rule["source_manifest_gets"] == 0
    got, put = src_log.counts(), dst_log.counts()
    assert got["GET manifest"] == 0 and got["GET blob"] == 0
    assert put["GET manifest"] == 2 and put["PUT manifest"] == 2
    assert put["HEAD blob"] == 0 and put["POST upload"] == 0
    assert dst.manifest_digest("al/app", "latest") == two.digest
    assert dst.manifest_digest("al/app", "stable") == one.digest


def test_a_tag_the_destination_lacks_is_fetched_without_a_head_once_it_accepted_a_copy(
    tmp_path: Path, registry_factory: RegistryFactory
) -> None:
    """Repositories planned after the destination accepted a copy in this run GET a missing
    tag directly (the copy needs the manifest anyway): with more repositories than are
    planned at once, the later ones cost no source HEAD."""
    src, dst = registry_factory(extra_config=ACCESS_LOG), registry_factory()
    repos = REPO_CONCURRENCY + 3
    seed_catalogue(src, repos=repos, tags=1, layers=1, layer_size=500, namespace="cnt")
    config = mirror_config(tmp_path, src, dst, "cnt/*", name="counted")
    src_log = AccessLog(src)

    run = regsync_json("once", config)

    assert run.code == 0 and run.rule["tags"]["copied"] == repos, run.stderr
    got = src_log.counts()
    assert got["GET manifest"] == repos == run.rule["source_manifest_gets"]
    # At most the first REPO_CONCURRENCY repositories were planned before a copy succeeded.
    assert got["HEAD manifest"] <= REPO_CONCURRENCY, got
