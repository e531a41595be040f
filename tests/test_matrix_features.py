"""The combination matrix, part 2: {registry, OCI layout} destinations x {prune of a tag sharing
its digest with a kept tag, a platform subset, referrers, referrers of a platform subset}
(part 1, auth x shape x command, is tests/test_matrix.py).

Every cell asserts destination digests (for a platform subset: the recorded
`io.regsync.source.digest` and the child digests), exit codes and the JSON summary counts, and
that `check` settles after each successful `once` (exit 0, `regsync_out_of_sync_tags` 0). One
plain registry pair for the module; each cell writes its own repository namespace and layout.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support import (
    Artifact,
    Blob,
    Image,
    Index,
    Manifest,
    TlsFiles,
    attach,
    only_rule,
    push,
    regsync_json,
    write_config,
)
from tests.support.matrix import (
    LayoutView,
    Pair,
    RegistryView,
    cosign_signature,
    expected_blobs,
    out_of_sync,
    running_pair,
    sig_tag,
    untag,
)

pytestmark = pytest.mark.integration

# -- destinations x features -----------------------------------------------------------------

FEATURES = (
    "prune-shared",
    "platforms",
    "referrers",
    "referrers-platforms",
    "backup-prune",
    "backup-platforms",
)
PLATFORMS = ("linux/amd64", "linux/arm64/v8", "linux/arm/v7")
NO_BLOBS = {"copied": 0, "mounted": 0, "present": 0}


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory, tls_ca: TlsFiles) -> Iterator[Pair]:
    with running_pair("none", tmp_path_factory.mktemp("pair-plain"), tls_ca, None) as started:
        yield started


@dataclass(frozen=True)
class Dest:
    """Where a feature cell writes: the rule's destination text and a view to inspect it."""

    text: str
    view: RegistryView | LayoutView


def multi_arch(ns: str, tag: str) -> tuple[Manifest, Manifest]:
    """An OCI index of three platforms sharing a base layer, and its linux/amd64 child."""
    base = Blob.random(3_000, seed=f"{ns}/base")
    children = [Image.oci([base, Blob.random(1_000, seed=f"{ns}/{tag}/{p}")], p) for p in PLATFORMS]
    return Index.oci(children), children[0]


def feature_once(tmp_path: Path, config: Path, rule: str, run: int) -> dict[str, Any]:
    """`once` with a metrics file: exit 0, a clean result, the out-of-sync gauge 0."""
    metrics = tmp_path / f"once-{run}.prom"
    code, summary, stderr = regsync_json("once", config, "--metrics-file", metrics)
    assert code == 0, stderr
    r = only_rule(summary)
    assert r["name"] == rule, r
    assert r["result"] == "success" and r["errors"] == [], r
    gauge = out_of_sync(metrics.read_text(), rule)
    assert gauge == 0, f"regsync_out_of_sync_tags{{rule={rule!r}}} is {gauge}; notes: {r['notes']}"
    return dict(r)


def feature_check(config: Path, settled: bool) -> list[dict[str, Any]]:
    """`check`: exit 0 with every tag up to date once settled, else exit 1; the tag actions."""
    code, plan, stderr = regsync_json("check", config)
    tags = [t for r in plan["plan"] for p in r["repos"] for t in p["tags"]]
    if settled:
        assert code == 0 and plan["ok"] is True, stderr
        assert {t["action"] for t in tags} == {"up_to_date"}, tags
    else:
        assert code == 1, stderr
    return tags


@pytest.mark.parametrize("feature", FEATURES)
@pytest.mark.parametrize("kind", ["registry", "layout"])
def test_destination_by_feature(tmp_path: Path, plain: Pair, kind: str, feature: str) -> None:
    ns = f"{kind}-{feature}"
    if kind == "registry":
        dest = Dest(plain.dst.host, RegistryView(plain.dst))
    else:
        dest = Dest(f"oci:{tmp_path / 'layout'}", LayoutView(tmp_path / "layout"))
    extra = {
        "prune-shared": "    prune: true\n",
        "platforms": "    platforms: [linux/amd64]\n    prune: {max_fraction: 1}\n",
        "referrers": "    referrers: true\n    prune: {max_fraction: 1}\n",
        "referrers-platforms": (
            "    referrers: true\n    platforms: [linux/amd64]\n    prune: {max_fraction: 1}\n"
        ),
        "backup-prune": (
            "    tags: {include: ['v\\d+']}\n    backup: '{tag}-prev'\n"
            "    prune: {max_fraction: 1}\n"
        ),
        "backup-platforms": "    platforms: [linux/amd64]\n    backup: '{tag}-{digest12}'\n",
    }[feature]
    config = write_config(
        tmp_path,
        plain.registries_yaml()
        + f"version: 1\nrules:\n  - name: {feature}\n    source: {plain.src.host}/{ns}/app\n"
        + f"    destination: {dest.text}\n"
        + extra,
    )
    cell = {
        "prune-shared": prune_shared_cell,
        "platforms": platforms_cell,
        "referrers": referrers_cell,
        "referrers-platforms": referrers_cell,
        "backup-prune": backup_prune_cell,
        "backup-platforms": backup_platforms_cell,
    }[feature]
    cell(tmp_path, plain, dest, config, f"{ns}/app", feature)


def prune_shared_cell(
    tmp_path: Path, plain: Pair, dest: Dest, config: Path, repo: str, rule: str
) -> None:
    """`old` shares 1.0's digest; the source drops `old`: the mirror drops it too, keeps 1.0."""
    src = plain.src
    images = {t: Image.docker([Blob.random(2_000, seed=f"{repo}/{t}")]) for t in ("1.0", "1.1")}
    images["1.2"] = Image.oci([Blob.random(2_000, seed=f"{repo}/1.2")])
    images["old"] = images["1.0"]
    for tag, image in images.items():
        push(src, repo, tag, image)

    r = feature_once(tmp_path, config, rule, 1)
    assert r["tags"] == {"copied": 4, "up_to_date": 0, "pruned": 0, "failed": 0}, r
    assert r["blobs"]["copied"] == 6 and r["blobs"]["mounted"] == 0, r  # 3 distinct images
    first_gets = r["source_manifest_gets"]  # asserted last: the prune says more
    assert {t: dest.view.digest(repo, t) for t in images} == {
        t: m.digest for t, m in images.items()
    }
    feature_check(config, settled=True)

    untag(src, repo, "old")
    assert sorted(src.tags(repo)) == ["1.0", "1.1", "1.2"]
    planned = [t["tag"] for t in feature_check(config, settled=False) if t["action"] == "prune"]
    assert planned == ["old"]

    r = feature_once(tmp_path, config, rule, 2)
    assert r["tags"] == {"copied": 0, "up_to_date": 3, "pruned": 1, "failed": 0}, r
    assert r["source_manifest_gets"] == 0 and r["blobs"] == NO_BLOBS, r
    assert dest.view.tags(repo) == ["1.0", "1.1", "1.2"]
    assert {t: dest.view.digest(repo, t) for t in ("1.0", "1.1", "1.2")} == {
        t: images[t].digest for t in ("1.0", "1.1", "1.2")
    }
    feature_check(config, settled=True)
    assert first_gets == 3, "one source manifest GET per distinct digest, not per tag"


def platforms_cell(
    tmp_path: Path, plain: Pair, dest: Dest, config: Path, repo: str, rule: str
) -> None:
    """`platforms: [linux/amd64]` of a 3-platform index: the subset records the source digest
    and holds the source's amd64 child; a tag the source drops is pruned."""
    src = plain.src
    indexes = {t: multi_arch(repo, t) for t in ("1.0", "2.0")}
    for tag, (index, _) in indexes.items():
        push(src, repo, tag, index)

    r = feature_once(tmp_path, config, rule, 1)
    assert r["tags"] == {"copied": 2, "up_to_date": 0, "pruned": 0, "failed": 0}, r
    assert r["platform_subsets"] == 2 and r["source_manifest_gets"] == 4, r
    assert r["blobs"] == expected_blobs((repo, amd64) for _, amd64 in indexes.values()), r
    for tag, (index, amd64) in indexes.items():
        assert_subset(dest, repo, tag, index, amd64)
    tags = feature_check(config, settled=True)
    assert {t["tag"]: t["source_digest"] for t in tags} == {
        t: index.digest for t, (index, _) in indexes.items()
    }
    assert {t["platforms"] for t in tags} == {"linux/amd64"}

    src.delete_manifest(repo, indexes["2.0"][0].digest)
    planned = [t["tag"] for t in feature_check(config, settled=False) if t["action"] == "prune"]
    assert planned == ["2.0"]

    r = feature_once(tmp_path, config, rule, 2)
    assert r["tags"] == {"copied": 0, "up_to_date": 1, "pruned": 1, "failed": 0}, r
    assert r["source_manifest_gets"] == 0 and r["blobs"] == NO_BLOBS, r
    assert dest.view.tags(repo) == ["1.0"]
    assert_subset(dest, repo, "1.0", *indexes["1.0"])
    feature_check(config, settled=True)


def assert_subset(dest: Dest, repo: str, tag: str, index: Manifest, amd64: Manifest) -> None:
    subset = json.loads(dest.view.raw(repo, tag))
    assert [m["digest"] for m in subset["manifests"]] == [amd64.digest]
    assert subset["annotations"]["io.regsync.source.digest"] == index.digest
    assert dest.view.digest(repo, amd64.digest) == amd64.digest
    assert dest.view.raw(repo, amd64.digest) == amd64.raw
    assert all(dest.view.has_blob(repo, b.digest) for b in amd64.blobs)
    for other in index.children[1:]:
        assert not dest.view.has_blob(repo, other.blobs[-1].digest), other.platform


def referrers_cell(
    tmp_path: Path, plain: Pair, dest: Dest, config: Path, repo: str, rule: str
) -> None:
    """Images with a cosign `.sig` tag and an SBOM in the `sha256-<hex>` fallback index: they
    travel with their images; a dropped image takes its referrers along, and so does a revoked
    signature of a kept image."""
    src = plain.src
    subset = rule == "referrers-platforms"
    images: dict[str, Manifest] = {}
    sigs: dict[str, Manifest] = {}
    sboms: dict[str, Manifest] = {}
    children: dict[str, Manifest] = {}
    for tag in ("1.0", "2.0"):
        if subset:
            images[tag], children[tag] = multi_arch(repo, tag)
        else:
            images[tag] = Image.oci([Blob.random(2_000, seed=f"{repo}/{tag}")])
        push(src, repo, tag, images[tag])
        sigs[tag] = cosign_signature(images[tag], f"{repo}/{tag}")
        push(src, repo, sig_tag(images[tag]), sigs[tag])
        payload = Blob(f'{{"sbom": "{repo}/{tag}"}}'.encode())
        sboms[tag] = Artifact.oci(images[tag], payloads=[payload])
        attach(src, repo, sboms[tag])
    refs = {t: [sig_tag(images[t]), sig_tag(images[t], "")] for t in images}

    r = feature_once(tmp_path, config, rule, 1)
    assert r["tags"] == {"copied": 6, "up_to_date": 0, "pruned": 0, "failed": 0}, r
    assert r["platform_subsets"] == (2 if subset else 0), r
    # Per tag: the image (and its amd64 child), its signature, fallback index and SBOM.
    assert r["source_manifest_gets"] == (5 if subset else 4) * 2, r
    placed = [children[t] if subset else images[t] for t in images]
    placed += [*sigs.values(), *sboms.values()]
    assert r["blobs"] == expected_blobs((repo, m) for m in placed), r
    for tag, image in images.items():
        if subset:
            assert_subset(dest, repo, tag, image, children[tag])
        else:
            assert dest.view.digest(repo, tag) == image.digest
        for ref in refs[tag]:  # signatures and fallback indexes: the source's exact bytes
            assert dest.view.raw(repo, ref) == src.manifest(repo, ref)[1], ref
        fallback = json.loads(src.manifest(repo, sig_tag(image, ""))[1])
        for listed in fallback["manifests"]:
            assert dest.view.digest(repo, listed["digest"]) == listed["digest"]
    feature_check(config, settled=True)

    src.delete_manifest(repo, images["2.0"].digest)  # its referrer tags linger at the source
    src.delete_manifest(repo, sigs["1.0"].digest)  # 1.0's signature is revoked
    gone = sorted([*refs["2.0"], "2.0", sig_tag(images["1.0"])])
    planned = [t["tag"] for t in feature_check(config, settled=False) if t["action"] == "prune"]
    assert sorted(planned) == gone

    r = feature_once(tmp_path, config, rule, 2)
    assert r["tags"] == {"copied": 0, "up_to_date": 2, "pruned": 4, "failed": 0}, r
    assert r["source_manifest_gets"] == 0 and r["blobs"] == NO_BLOBS, r
    assert dest.view.tags(repo) == sorted(["1.0", sig_tag(images["1.0"], "")])
    feature_check(config, settled=True)


def backup_prune_cell(
    tmp_path: Path, plain: Pair, dest: Dest, config: Path, repo: str, rule: str
) -> None:
    """`backup: '{tag}-prev'` with prune: v1 changes upstream while v2 (same digest as v1) is
    dropped. v1-prev keeps the old image although v2's prune removes a tag of that digest, and
    v1-prev, outside the `v\\d+` filter, is never in the prune scope."""
    src = plain.src
    old = Image.docker([Blob.random(2_000, seed=f"{repo}/old")])
    new = Image.oci([Blob.random(2_000, seed=f"{repo}/new")])
    push(src, repo, "v1", old)
    push(src, repo, "v2", old)
    r = feature_once(tmp_path, config, rule, 1)
    assert r["tags"] == {"copied": 2, "up_to_date": 0, "pruned": 0, "failed": 0}, r
    assert r["backups"] == 0, r  # nothing was overwritten

    push(src, repo, "v1", new)
    untag(src, repo, "v2")
    tags = feature_check(config, settled=False)
    assert {t["tag"]: (t["action"], t.get("backup")) for t in tags} == {
        "v1": ("copy", "v1-prev"),
        "v2": ("prune", None),
    }

    r = feature_once(tmp_path, config, rule, 2)
    assert r["tags"] == {"copied": 1, "up_to_date": 0, "pruned": 1, "failed": 0}, r
    assert r["backups"] == 1 and r["blobs"]["copied"] == 2, r  # the backup copies no blob
    assert dest.view.tags(repo) == ["v1", "v1-prev"]
    assert dest.view.digest(repo, "v1") == new.digest
    assert dest.view.digest(repo, "v1-prev") == old.digest
    assert dest.view.raw(repo, "v1-prev") == old.raw  # the exact bytes it had
    feature_check(config, settled=True)
    r = feature_once(tmp_path, config, rule, 3)
    assert r["tags"] == {"copied": 0, "up_to_date": 1, "pruned": 0, "failed": 0}, r
    assert dest.view.tags(repo) == ["v1", "v1-prev"]


def backup_platforms_cell(
    tmp_path: Path, plain: Pair, dest: Dest, config: Path, repo: str, rule: str
) -> None:
    """`backup: '{tag}-{digest12}'` with `platforms: [linux/amd64]`: the backup is the
    destination's subset as it was (its recorded origin the old source index), by digest."""
    src = plain.src
    first, first_amd64 = multi_arch(repo, "1.0")
    push(src, repo, "1.0", first)
    r = feature_once(tmp_path, config, rule, 1)
    assert r["backups"] == 0 and r["platform_subsets"] == 1, r
    subset = dest.view.digest(repo, "1.0")
    assert subset is not None and subset != first.digest
    backup = f"1.0-{subset.removeprefix('sha256:')[:12]}"

    second, second_amd64 = multi_arch(f"{repo}-next", "1.0")
    push(src, repo, "1.0", second)
    (planned,) = feature_check(config, settled=False)
    assert (planned["action"], planned["backup"]) == ("copy", backup), planned

    r = feature_once(tmp_path, config, rule, 2)
    assert r["tags"] == {"copied": 1, "up_to_date": 0, "pruned": 0, "failed": 0}, r
    assert r["backups"] == 1, r
    assert dest.view.tags(repo) == sorted(["1.0", backup])
    assert dest.view.digest(repo, backup) == subset
    assert_subset(dest, repo, backup, first, first_amd64)
    assert_subset(dest, repo, "1.0", second, second_amd64)
    feature_check(config, settled=True)
