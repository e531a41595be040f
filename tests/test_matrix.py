"""The combination matrix, part 1: {no auth, htpasswd over TLS, token} x {one repository, a
glob of 3 repositories sharing layers, two rules sharing both registries} x {once, check, one
serve cycle, verify} (part 2, destinations x features, is tests/test_matrix_features.py).

Every cell asserts destination digests, exit codes and the JSON summary counts, and that `check`
settles: right after a successful `once`, `check` exits 0 and `regsync_out_of_sync_tags` is 0.
One registry pair per auth kind (module-scoped); each cell writes its own repository namespace,
so cells never interfere and xdist may split them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support import Blob, Image, Manifest, TlsFiles, push, regsync_json, write_config
from tests.support.matrix import (
    AUTH_KINDS,
    PASSWORD,
    USER,
    Pair,
    expected_blobs,
    out_of_sync,
    running_pair,
)
from tests.support.observe import Served, sample, wait_for
from tests.support.servers import TokenServer

pytestmark = pytest.mark.integration

SHAPES = ("one", "glob", "two-rules")
COMMANDS = ("once", "check", "serve", "verify")


@pytest.fixture(scope="module")
def tokens(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TokenServer]:
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
    with running_pair(request.param, workdir, tls_ca, tokens) as started:
        yield started


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
        actions = {
            (p["destination"], t["tag"]): t["action"] for p in rule["repos"] for t in p["tags"]
        }
        assert set(actions.values()) == {"up_to_date"}, actions
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
            assert actions == ["copy"] * total, stderr
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
        wait_for(lambda: served.ready() or served.proc.poll() is not None, "the first runs")
        assert served.ready(), served.log()
        metrics = served.metrics()
        status = {r["name"]: r for r in served.status()["rules"]}
        assert served.stop() == 0, served.log()

    for rule in rules:
        name, n = rule.name, len(rule.images)
        gauge = sample(metrics, "regsync_out_of_sync_tags", rule=name)
        assert gauge == 0, f"regsync_out_of_sync_tags{{rule={name!r}}} is {gauge}"
        assert sample(metrics, "regsync_sync_runs_total", rule=name, result="success") == 1, name
        outcomes = {
            o: sample(metrics, "regsync_tags_total", rule=name, outcome=o)
            for o in ("copied", "failed")
        }
        assert outcomes == {"copied": n, "failed": 0}, name
        assert status[name]["runs"] == 1 and status[name]["last_error"] is None, status[name]
    last_runs = [status[rule.name]["last_run"] for rule in rules]
    assert_copied_all({"rules": last_runs, "ok": True}, rules, one_run=False)
