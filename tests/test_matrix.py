"""The combination matrix: features crossed, as real sites combine them, not one at a time.

1. {no auth, htpasswd over TLS, token} x {one repository, a glob of 3 repositories sharing
   layers, two rules sharing both registries} x {once, check, one serve cycle, verify};
2. {registry, OCI layout} destinations x {prune of a tag sharing its digest with a kept tag,
   a platform subset, referrers, referrers of a platform subset}.

Every cell asserts destination digests, exit codes and the JSON summary counts, and that `check`
settles: right after a successful `once`, `check` exits 0 and `regsync_out_of_sync_tags` is 0.
One registry pair per auth kind (module-scoped); each cell writes its own repository namespace.
"""

from __future__ import annotations

import json
import shutil
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
    push,
    regsync_json,
    write_config,
)
from tests.support.matrix import (
    AUTH_KINDS,
    LayoutView,
    Pair,
    RegistryView,
    cosign_signature,
    expected_blobs,
    out_of_sync,
    sig_tag,
    start_pair,
    untag,
)
from tests.support.observe import Served, sample, wait_for
from tests.support.servers import TokenServer

pytestmark = pytest.mark.integration

SHAPES = ("one", "glob", "two-rules")
COMMANDS = ("once", "check", "serve", "verify")


@pytest.fixture(scope="module")
def tokens(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TokenServer]:
    from tests.support.matrix import PASSWORD, USER

    server = TokenServer(tmp_path_factory.mktemp("tokens"), {USER: PASSWORD})
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module", params=AUTH_KINDS)
def pair(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    tls_ca: TlsFiles,
    tokens: TokenServer,
) -> Iterator[Pair]:
    workdir = tmp_path_factory.mktemp(f"pair-{request.param}")
    started = start_pair(request.param, workdir, tls_ca, tokens)
    yield started
    started.stop()
    shutil.rmtree(workdir, ignore_errors=True)


# -- what one cell mirrors ---------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    """One rule of a cell: its name, source text, and what it must place where."""

    name: str
    source: str  # repository or glob under the source host
    images: dict[tuple[str, str], Manifest]  # (source repo, tag) -> image

    def placements(self) -> list[tuple[str, Manifest]]:
        return [(dest_repo(repo), image) for (repo, _), image in sorted(self.images.items())]


def dest_repo(source_repo: str) -> str:
    return f"mirror/{source_repo}"


def seed_cell(pair: Pair, ns: str, shape: str) -> list[Rule]:
    """Push this cell's images (small, sharing a base layer) and return its rules."""
    base = Blob.random(4_000, seed=f"{ns}/base")

    def image(repo: str, tag: str) -> Manifest:
        own = Blob.random(1_500, seed=f"{ns}/{repo}/{tag}")
        return Image.docker([base, own], labels={"repo": repo, "tag": tag})

    def repo_images(*repos: str) -> dict[tuple[str, str], Manifest]:
        return {(r, t): image(r, t) for r in repos for t in ("1.0", "2.0")}

    if shape == "one":
        rules = [Rule("one", f"{ns}/app", repo_images(f"{ns}/app"))]
    elif shape == "glob":
        rules = [Rule("glob", f"{ns}/*", repo_images(f"{ns}/a", f"{ns}/b", f"{ns}/c"))]
    else:
        rules = [
            Rule("web", f"{ns}/web", repo_images(f"{ns}/web")),
            Rule("api", f"{ns}/api", repo_images(f"{ns}/api")),
        ]
    for rule in rules:
        for (repo, tag), manifest in rule.images.items():
            push(pair.src, repo, tag, manifest)
    return rules


def cell_config(tmp_path: Path, pair: Pair, rules: list[Rule], interval: str = "") -> Path:
    body = "".join(
        f"  - name: {r.name}\n    source: {pair.src.host}/{r.source}\n"
        f"    destination: {pair.dst.host}/mirror\n"
        + (f"    interval: {interval}\n" if interval else "")
        for r in rules
    )
    return write_config(tmp_path, pair.registries_yaml() + "version: 1\nrules:\n" + body)


def by_name(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in summary["rules"]}


def assert_mirrored(pair: Pair, rules: list[Rule]) -> None:
    """Every destination tag's digest is the source's, and the mirror holds nothing else."""
    for rule in rules:
        repos = {repo for repo, _ in rule.images}
        for repo in repos:
            want = {tag: m.digest for (r, tag), m in rule.images.items() if r == repo}
            got = {tag: pair.dst.manifest_digest(dest_repo(repo), tag) for tag in want}
            assert got == want, repo
            assert sorted(pair.dst.tags(dest_repo(repo))) == sorted(want), repo
            for tag, digest in want.items():
                assert pair.src.manifest_digest(repo, tag) == digest


def assert_copied_all(summary: dict[str, Any], rules: list[Rule], one_run: bool = True) -> None:
    """The summary of a first sync: every tag copied once, one source GET per image, and every
    distinct blob streamed once per run (mounted or present wherever else it is needed)."""
    results = by_name(summary)
    assert sorted(results) == sorted(r.name for r in rules)
    totals = {"copied": 0, "mounted": 0, "present": 0}
    for rule in rules:
        r = results[rule.name]
        n = len(rule.images)
        assert r["result"] == "success" and r["errors"] == [], r
        assert r["tags"] == {"copied": n, "up_to_date": 0, "pruned": 0, "failed": 0}, r
        assert r["source_manifest_gets"] == n and r["manifests_pushed"] == n, r
        assert r["repos"] == len({repo for repo, _ in rule.images}), r
        own = expected_blobs(rule.placements())
        assert sum(r["blobs"].values()) == sum(own.values()), r
        assert one_run or r["blobs"] == own, r  # a rule on its own schedule: a run of its own
        totals = {k: totals[k] + r["blobs"][k] for k in totals}
    if one_run:  # one destination ledger across the rules: who streams a shared blob, who mounts
        assert totals == expected_blobs(p for rule in rules for p in rule.placements())
    assert summary["ok"] is True


def once_settled(tmp_path: Path, config: Path, rules: list[Rule]) -> dict[str, Any]:
    """`once` with a metrics file: exit 0, and the out-of-sync gauge 0 for every rule."""
    metrics = tmp_path / "once.prom"
    code, summary, stderr = regsync_json("once", config, "--metrics-file", metrics)
    assert code == 0, stderr
    text = metrics.read_text()
    assert {r.name: out_of_sync(text, r.name) for r in rules} == {r.name: 0 for r in rules}
    return summary


def assert_check_settles(config: Path, rules: list[Rule]) -> None:
    """`check` right after a successful run: exit 0, ok, every selected tag up to date."""
    code, plan, stderr = regsync_json("check", config)
    assert code == 0, stderr
    assert plan["ok"] is True
    for rule in plan["plan"]:
        names = {
            (rule["rule"], p["destination"], t["tag"]): t["action"]
            for p in rule["repos"]
            for t in p["tags"]
        }
        assert set(names.values()) == {"up_to_date"}, names
    results = by_name(plan)
    for rule in rules:
        assert results[rule.name]["tags"]["up_to_date"] == len(rule.images), results[rule.name]
        assert results[rule.name]["source_manifest_gets"] == 0


# -- the cells ---------------------------------------------------------------------------------


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("shape", SHAPES)
def test_auth_by_shape_by_command(tmp_path: Path, pair: Pair, shape: str, command: str) -> None:
    ns = f"{pair.auth}-{shape}-{command}"
    rules = seed_cell(pair, ns, shape)
    total = sum(len(r.images) for r in rules)
    drift_ok: bool | None = None

    if command == "serve":
        config = cell_config(tmp_path, pair, rules, interval="1h")
        serve_cycle(tmp_path, config, rules)
    else:
        config = cell_config(tmp_path, pair, rules)
        if command == "check":
            code, plan, stderr = regsync_json("check", config)
            assert code == 1, stderr
            drift_ok = plan["ok"]  # asserted last: the rest of the cell says more
            actions = [t["action"] for r in plan["plan"] for p in r["repos"] for t in p["tags"]]
            assert actions == ["copy"] * total, plan["plan"]
            for r in plan["rules"]:  # planned with HEADs only: nothing fetched, nothing done
                assert r["errors"] == [] and r["source_manifest_gets"] == 0, r
                assert r["tags"] == {"copied": 0, "up_to_date": 0, "pruned": 0, "failed": 0}, r
            assert all(pair.dst.tags(dest_repo(repo)) == [] for r in rules for repo, _ in r.images)
        summary = once_settled(tmp_path, config, rules)
        assert_copied_all(summary, rules)
        if command == "verify":
            assert_verified(config, rules)
    assert_mirrored(pair, rules)
    assert_check_settles(config, rules)
    if command == "check":
        assert drift_ok is False, "check --json: drift is not ok, whatever else went right"


def assert_verified(config: Path, rules: list[Rule]) -> None:
    code, report, stderr = regsync_json("verify", config)
    assert code == 0, stderr
    assert report["ok"] is True
    results = by_name(report)
    for rule in rules:
        r = results[rule.name]
        repos = {repo for repo, _ in rule.images}
        blobs = {(repo, b.digest) for (repo, _), m in rule.images.items() for b in m.blobs}
        assert r["ok"] and r["missing"] == [] and r["errors"] == [], r
        assert r["repos"] == len(repos) and r["tags_checked"] == len(rule.images), r
        assert r["manifests_checked"] == len(rule.images), r
        assert r["blobs_checked"] == len(blobs), r


def serve_cycle(tmp_path: Path, config: Path, rules: list[Rule]) -> None:
    """`regsync serve`: its first run of every rule, read from /metrics and /status."""
    with Served(config, tmp_path) as served:
        wait_for(served.ready, "the first run of every rule")
        metrics = served.metrics()
        status = {r["name"]: r for r in served.status()["rules"]}
        assert served.stop() == 0, served.log()

    for rule in rules:
        n = len(rule.images)

        def m(name: str, **labels: str) -> float | None:
            return sample(metrics, name, rule=rule.name, **labels)  # noqa: B023

        assert m("regsync_out_of_sync_tags") == 0, rule.name
        assert m("regsync_sync_runs_total", result="success") == 1, rule.name
        assert m("regsync_tags_total", outcome="copied") == n, rule.name
        assert m("regsync_tags_total", outcome="failed") == 0, rule.name
        last = status[rule.name]["last_run"]
        assert status[rule.name]["last_error"] is None, last
        assert status[rule.name]["runs"] == 1, status[rule.name]
    last_runs = [status[rule.name]["last_run"] for rule in rules]
    assert_copied_all({"rules": last_runs, "ok": True}, rules, one_run=False)


# -- destinations x features -----------------------------------------------------------------

FEATURES = ("prune-shared", "platforms", "referrers", "referrers-platforms")
PLATFORMS = ("linux/amd64", "linux/arm64/v8", "linux/arm/v7")
NO_BLOBS = {"copied": 0, "mounted": 0, "present": 0}


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory, tls_ca: TlsFiles) -> Iterator[Pair]:
    workdir = tmp_path_factory.mktemp("pair-plain")
    started = start_pair("none", workdir, tls_ca, None)
    yield started
    started.stop()
    shutil.rmtree(workdir, ignore_errors=True)


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
    r = by_name(summary)[rule]
    assert r["result"] == "success" and r["errors"] == [] and r["notes"] == [], r
    assert out_of_sync(metrics.read_text(), rule) == 0
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
