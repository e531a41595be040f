"""Fault injection: a proxy in front of the source or the destination breaks requests.

For each fault on each side: the run ends (no hang: short timeouts), no destination tag ever
references missing content (checked after the faulty run), and after at most one clean re-run
every destination tag has its source digest and `regsync verify` passes.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import (
    Blob,
    Image,
    Index,
    Registry,
    RegistryClient,
    RegistryFactory,
    Summary,
    push,
    registries_yaml,
    regsync_json,
    run_regsync,
    write_config,
)
from tests.support.faults import Fault, FaultProxy, incomplete_tags
from tests.support.observe import parse_metrics

# Short everything: a fault test must end in seconds, never hang.
FAST = {
    "REGSYNC_RETRY_ATTEMPTS": "3",
    "REGSYNC_RETRY_INITIAL": "0.05",
    "REGSYNC_RETRY_MAX": "0.2",
    "REGSYNC_CONNECT_TIMEOUT": "2",
    "REGSYNC_READ_TIMEOUT": "1",
}


def seed(src: Registry) -> dict[str, str]:
    """Two repos: a Docker image in two tags sharing a base, and a two-platform OCI index."""
    base = Blob.random(48_000, seed="fx-base")
    amd = Image.oci([base, Blob.random(30_000, seed="fx-amd")], platform="linux/amd64")
    arm = Image.oci([base, Blob.random(30_000, seed="fx-arm")], platform="linux/arm64")
    pushed = [
        push(src, "fx/app", "1", Image.docker([base, Blob.random(40_000, seed="fx-1")])),
        push(src, "fx/app", "2", Image.docker([base, Blob.random(40_000, seed="fx-2")])),
        push(src, "fx/multi", "1", Index.oci([amd, arm])),
    ]
    return {p.ref: p.digest for p in pushed}


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Registry, dict[str, str]]]:
    """One seeded source for the module: the tests only read it."""
    reg = Registry(tmp_path_factory.mktemp("fault-source")).start()
    try:
        yield reg, seed(reg)
    finally:
        reg.cleanup()


def config_for(tmp_path: Path, src: RegistryClient, dst: RegistryClient) -> Path:
    src_host, dst_host = (r.url.split("://", 1)[1] for r in (src, dst))
    return write_config(
        tmp_path,
        registries_yaml(src, dst)
        + f"""
version: 1
rules:
  - name: fx
    source: {src_host}/fx/*
    destination: {dst_host}/mirror
""",
    )


def once(config: Path) -> Summary:
    """A run with the short timeouts, writing the metrics file ``retries_counted`` reads."""
    metrics = config.with_name("metrics.prom")
    return regsync_json("once", config, "--metrics-file", metrics, env=FAST, timeout=90)


def retries_counted(config: Path) -> float:
    """regsync_registry_retries_total summed over registries and reasons, from the last run."""
    samples = parse_metrics(config.with_name("metrics.prom").read_text())
    return sum(v for (name, _), v in samples.items() if name == "regsync_registry_retries_total")


def assert_never_dangling(dst: RegistryClient) -> None:
    """Every tag in the destination resolves, and all it references exists."""
    assert incomplete_tags(dst) == []


def assert_converged(dst: RegistryClient, expected: dict[str, str]) -> None:
    for ref, digest in expected.items():
        repo, tag = ref.split(":")
        assert dst.manifest_digest(f"mirror/{repo}", tag) == digest, ref


def converge(config: Path, proxy: FaultProxy, dst: Registry, expected: dict[str, str]) -> int:
    """The faulty run is done: check consistency, re-run clean if needed, verify. Returns
    the number of clean re-runs it took (0 or 1)."""
    assert_never_dangling(dst)
    proxy.clear()
    reruns = 0
    if any(
        dst.manifest_digest(f"mirror/{r.split(':')[0]}", r.split(":")[1]) != d
        for r, d in expected.items()
    ):
        reruns = 1
        code, summary, _ = once(config)
        assert code == 0, summary
    assert_converged(dst, expected)
    proc = run_regsync("verify", "-c", config, "--json", env=FAST)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["ok"] and report["rules"][0]["tags_checked"] == len(expected)
    return reruns


# (id, fault, whether retries must absorb it within the faulty run)
SOURCE_FAULTS = [
    ("reset-blob", Fault("reset", method="GET", path=r"/blobs/sha256", times=2), True),
    ("truncate-blob", Fault("truncate", method="GET", path=r"/blobs/sha256", times=2), True),
    ("stall-blob", Fault("stall", method="GET", path=r"/blobs/sha256", times=1), True),
    ("500-manifest", Fault("status", method="GET", path="/manifests/", status=500, times=1), False),
    ("502-blob", Fault("status", method="GET", path="/blobs/", status=502, times=2), True),
    ("503-tags", Fault("status", method="GET", path="/tags/list", status=503, times=2), True),
    ("429-head", Fault("status", method="HEAD", status=429, retry_after="0", times=2), True),
    ("corrupt-blob", Fault("corrupt", method="GET", path=r"/blobs/sha256", times=1), True),
    ("corrupt-manifest", Fault("corrupt", method="GET", path="/manifests/", times=1), False),
    ("reset-catalog", Fault("reset", method="GET", path="/_catalog", times=2), True),
]
DEST_FAULTS = [
    ("reset-upload", Fault("reset", method="PUT", path="/blobs/uploads/", times=2), True),
    ("truncate-upload", Fault("truncate", method="PUT", path="/blobs/uploads/", times=1), True),
    ("stall-upload", Fault("stall", method="PUT", path="/blobs/uploads/", times=1), True),
    (
        "500-manifest-put",
        Fault("status", method="PUT", path="/manifests/", status=500, times=1),
        False,
    ),
    (
        "502-upload-start",
        Fault("status", method="POST", path="/blobs/uploads/", status=502, times=2),
        True,
    ),
    ("503-tags", Fault("status", method="GET", path="/tags/list", status=503, times=2), True),
    (
        "429-manifest-put",
        Fault("status", method="PUT", path="/manifests/", status=429, retry_after="0", times=2),
        True,
    ),
    ("corrupt-upload", Fault("corrupt", method="PUT", path="/blobs/uploads/", times=1), True),
    ("reset-manifest-put", Fault("reset", method="PUT", path="/manifests/", times=1), True),
]


@pytest.mark.parametrize(
    ("side", "fault", "absorbed"),
    [pytest.param("source", f, a, id=f"source-{i}") for i, f, a in SOURCE_FAULTS]
    + [pytest.param("destination", f, a, id=f"destination-{i}") for i, f, a in DEST_FAULTS],
)
def test_fault(
    tmp_path: Path,
    source: tuple[Registry, dict[str, str]],
    dest_registry: Registry,
    side: str,
    fault: Fault,
    absorbed: bool,
) -> None:
    """The run ends; an absorbed fault is retried (and counted), any other fails only its tags;
    nothing references missing content and one clean run converges (see ``converge``)."""
    src, expected = source
    faulty = src if side == "source" else dest_registry
    with FaultProxy(faulty.url) as proxy:
        proxy.add(fault)
        if side == "source":
            config = config_for(tmp_path, proxy, dest_registry)
        else:
            config = config_for(tmp_path, src, proxy)
        code, summary, _ = once(config)
        assert fault.fired, f"fault never fired: {proxy.requests}"
        if absorbed:
            assert code == 0, summary
            # aiohttp itself re-sends an idempotent request (the manifest PUT) once when a
            # reused connection drops before the answer; only our own retries are counted.
            resent_by_aiohttp = side == "destination" and (fault.kind, fault.path) == (
                "reset",
                "/manifests/",
            )
            if not resent_by_aiohttp:
                assert retries_counted(config) >= 1
        else:
            assert code == 1 and summary["rules"][0]["errors"], summary
        assert converge(config, proxy, dest_registry, expected) == (0 if absorbed else 1)


def test_source_blob_resumes_with_range_instead_of_starting_over(
    tmp_path: Path, source: tuple[Registry, dict[str, str]], dest_registry: Registry
) -> None:
    """A download reset halfway continues with a Range request the registry answers 206."""
    src, expected = source
    with FaultProxy(src.url) as proxy:
        proxy.add(Fault("reset", method="GET", path=r"/blobs/sha256", times=1))
        config = config_for(tmp_path, proxy, dest_registry)
        code, summary, _ = once(config)
        assert code == 0, summary
        resumed = [r for r in proxy.requests if r[0] == "GET" and r[2] == 206]
        assert len(resumed) == 1, proxy.requests
        assert summary["rules"][0]["tags"]["copied"] == len(expected)
        assert converge(config, proxy, dest_registry, expected) == 0


@pytest.mark.parametrize("side", ["source", "destination"])
def test_random_faults_with_a_seed_converge_within_one_clean_run(
    tmp_path: Path,
    source: tuple[Registry, dict[str, str]],
    dest_registry: Registry,
    side: str,
) -> None:
    src, expected = source
    upstream = src if side == "source" else dest_registry
    with FaultProxy(upstream.url) as proxy:
        proxy.randomly(0.15, seed=6, stall=5.0)
        config = (
            config_for(tmp_path, proxy, dest_registry)
            if side == "source"
            else config_for(tmp_path, src, proxy)
        )
        code, summary, _ = once(config)
        assert code in (0, 1), summary
        assert proxy.fired, "no fault drawn: raise the probability or change the seed"
        converge(config, proxy, dest_registry, expected)


def test_destination_restart_mid_sync_converges(
    tmp_path: Path, source: tuple[Registry, dict[str, str]], dest_registry: Registry
) -> None:
    """SIGKILL the destination during the second blob upload; it comes back 0.5 s later."""
    src, expected = source
    uploads = 0
    restarted = threading.Event()

    def crash(method: str, path: str) -> None:
        nonlocal uploads
        if method == "PUT" and "/blobs/uploads/" in path:
            uploads += 1
            if uploads == 2:
                dest_registry.kill()
                threading.Timer(0.5, lambda: (dest_registry.start(), restarted.set())).start()

    with FaultProxy(dest_registry.url) as proxy:
        proxy.before_forward = crash
        config = config_for(tmp_path, src, proxy)
        code, _, _ = once(config)
        assert restarted.wait(20)
        assert code in (0, 1)
        converge(config, proxy, dest_registry, expected)


def test_source_killed_mid_sync_fails_cleanly_and_the_next_run_converges(
    tmp_path: Path, registry_factory: RegistryFactory, dest_registry: Registry
) -> None:
    """SIGKILL the source during the first blob download and keep it down for the run: the
    run ends with an error (no hang), nothing half-made is visible, the next run converges."""
    src = registry_factory()
    expected = seed(src)
    downloads = 0

    def crash(method: str, path: str) -> None:
        nonlocal downloads
        if method == "GET" and "/blobs/sha256:" in path:
            downloads += 1
            if downloads == 1:
                src.kill()

    with FaultProxy(src.url) as proxy:
        proxy.before_forward = crash
        config = config_for(tmp_path, proxy, dest_registry)
        code, summary, _ = once(config)
        assert code == 1 and summary["rules"][0]["errors"], summary
        assert_never_dangling(dest_registry)
        src.start()
        proxy.before_forward = None
        assert converge(config, proxy, dest_registry, expected) == 1
