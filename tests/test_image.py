"""The container image, built and run: `make image-test` (scripts/image.sh) builds the
Dockerfile and runs this file against the result. Skipped unless REGSYNC_IMAGE names the image,
so `make test` does not run it.

Containers run with podman as the image defines them (user, entrypoint, environment), on the host
network so they reach the `docker-registry` processes on loopback, hardened as a site would run
them: read-only root, every capability dropped, no-new-privileges.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from regsync import __version__
from tests.policy_helpers import skopeo_raw
from tests.support import REPO_ROOT, Registry, free_port, seed_samples, write_config
from tests.test_deploy import METRICS_PORT, UID, dockerfile_stages, image_command, only

IMAGE = os.environ.get("REGSYNC_IMAGE", "")
STORE = os.environ.get("REGSYNC_IMAGE_STORE", "")
DRIVER = os.environ.get("REGSYNC_IMAGE_STORAGE_DRIVER", "vfs")
BUILD_LOG = os.environ.get("REGSYNC_IMAGE_BUILD_LOG", "")
STATE_DIR = "/var/lib/regsync/state"
# This machine's limits (scripts/image.sh): runc, rlimits runc may set, no systemd timers.
RUN = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096", "--no-healthcheck"]
HARDENED = ["--read-only", "--cap-drop", "ALL", "--security-opt", "no-new-privileges"]

# Collected only when `make image-test` names a built image (tests/conftest.py): never
# skipped quietly, and without an image there is nothing here to run.
if not IMAGE:
    raise RuntimeError("REGSYNC_IMAGE is not set: `make image-test` builds the image and runs this")


def podman(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    store = ["--root", f"{STORE}/root", "--runroot", f"{STORE}/run"] if STORE else []
    command = ["podman", *store, "--storage-driver", DRIVER, "--runtime", "runc", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)


def run(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """`podman run` of the image, hardened, on the host network."""
    return podman("run", "--rm", "--network", "host", *RUN, *HARDENED, *args, timeout=timeout)


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    """The image's config; podman reports the (docker-format) healthcheck beside it."""
    (inspect,) = json.loads(podman("image", "inspect", IMAGE).stdout)
    return {**inspect["Config"], "Healthcheck": inspect["Healthcheck"]}


@pytest.fixture(scope="module")
def rootfs() -> Iterator[Path]:
    """The image's filesystem, mounted read-only on the host (no container runs)."""
    mounted = podman("image", "mount", IMAGE)
    assert mounted.returncode == 0, mounted.stderr
    try:
        yield Path(mounted.stdout.strip())
    finally:
        podman("image", "unmount", IMAGE)


def test_image_config_is_the_dockerfiles(config: dict[str, Any]) -> None:
    final = dockerfile_stages()[-1]
    assert config["User"] == f"{UID}:{UID}"
    assert [*config["Entrypoint"], *config["Cmd"]] == image_command()
    assert config["Cmd"] == ["serve", "--config", "/etc/regsync/sync.yaml"]
    assert set(config["ExposedPorts"]) == {f"{METRICS_PORT}/tcp"}
    assert set(config["Volumes"]) == {STATE_DIR}
    assert config["WorkingDir"] == "/var/lib/regsync"
    env = dict(e.split("=", 1) for e in config["Env"])
    assert env["REGSYNC_LISTEN"] == f"0.0.0.0:{METRICS_PORT}"
    assert env["REGSYNC_CONFIG"] == "/etc/regsync/sync.yaml"
    assert env["REGSYNC_STATE_DIR"] == STATE_DIR
    health = config["Healthcheck"]
    assert health["Test"] == ["CMD", *only(final, "HEALTHCHECK").exec_form()]
    assert health["Interval"] == 30 * 10**9 and health["Retries"] == 3


def test_runtime_image_has_no_installer_no_build_secret_and_owns_its_state(rootfs: Path) -> None:
    """pip, setuptools and wheel are gone (base and virtualenv), nothing of the CA bundle pip
    trusted during the build is anywhere in the image, and uid 10001 owns its directories."""
    installed = sorted(
        p.relative_to(rootfs).as_posix()
        for pattern in ("pip-*.dist-info", "setuptools-*.dist-info", "wheel-*.dist-info")
        for p in rootfs.glob(f"**/site-packages/{pattern}")
    ) + sorted(
        p.relative_to(rootfs).as_posix()
        for pattern in ("pip-*.dist-info", "setuptools-*.dist-info", "wheel-*.dist-info")
        for p in rootfs.glob(f"**/dist-packages/{pattern}")
    )
    assert installed == []
    assert not [p for d in ("usr/local/bin", "opt/regsync/bin") for p in (rootfs / d).glob("pip*")]
    assert not (rootfs / "run/secrets").exists()
    for path in ("var/lib/regsync", "var/lib/regsync/state"):
        assert (rootfs / path).stat().st_uid == UID, path
    site = _site_only_certificates(rootfs)
    leaked = [p for p in _pem_files(rootfs) if _certificates(p.read_bytes()) & site]
    assert leaked == []


def _certificates(pem: bytes) -> set[bytes]:
    """The base64 bodies of the certificates in a PEM bundle, whitespace removed."""
    bodies = re.findall(rb"-----BEGIN CERTIFICATE-----(.*?)-----END CERTIFICATE-----", pem, re.S)
    return {b"".join(body.split()) for body in bodies}


def _site_only_certificates(rootfs: Path) -> set[bytes]:
    """The certificates of the build's CA bundle that neither Mozilla's set (this machine's or
    the image's) nor the image's own bundle has: the site's (a proxy's, a mirror's). Empty when
    the build trusted a stock bundle."""
    bundle = Path(os.environ.get("PIP_CA", "/etc/ssl/certs/ca-certificates.crt"))
    stock = _certificates((rootfs / "etc/ssl/certs/ca-certificates.crt").read_bytes())
    for mozilla in (Path("/usr/share/ca-certificates"), rootfs / "usr/share/ca-certificates"):
        for crt in mozilla.glob("mozilla/*.crt"):
            stock |= _certificates(crt.read_bytes())
    return _certificates(bundle.read_bytes()) - stock


def _pem_files(root: Path) -> Iterator[Path]:
    """Every regular file under ``root`` holding a PEM certificate."""
    for dirpath, _, names in os.walk(root):
        for name in names:
            path = Path(dirpath, name)
            if path.is_file() and not path.is_symlink():
                with path.open("rb") as f:
                    if b"-----BEGIN CERTIFICATE-----" in f.read():
                        yield path


def test_build_adds_users_without_warnings() -> None:
    """`useradd`/`groupadd` of uid/gid 10001 print no SYS_UID/SYS_GID range warning."""
    log = Path(BUILD_LOG).read_text() if BUILD_LOG else ""
    assert "STEP" in log or "RUN" in log, "no build log"
    assert not re.findall(r"^.*(?:useradd|groupadd).*warning.*$", log, re.M | re.I)


def test_version_through_the_entrypoint() -> None:
    proc = run(IMAGE, "--version")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"regsync {__version__}"


def test_shipped_configs_validate_in_the_image() -> None:
    """The repository's sync.yaml (at the image's default config path) and the compose one."""
    compose = REPO_ROOT / "deploy" / "compose" / "sync.yaml"
    proc = run(
        "-v",
        f"{REPO_ROOT / 'sync.yaml'}:/etc/regsync/sync.yaml:ro",
        "-v",
        f"{compose}:/etc/regsync/compose.yaml:ro",
        "--entrypoint",
        "sh",
        IMAGE,
        "-c",
        "regsync validate && regsync validate --config /etc/regsync/compose.yaml",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _mirror_config(tmp_path: Path, src: Registry, dst: Registry) -> Path:
    config = write_config(
        tmp_path,
        f"""
        version: 1
        registries:
          "{src.host}": {{tls: http}}
          "{dst.host}": {{tls: http}}
        rules:
          - name: diamol
            source: {src.host}/diamol/*
            destination: {dst.host}
        """,
    )
    config.chmod(0o644)  # the image's uid reads it through the bind mount
    return config


def test_once_json_mirrors_between_loopback_registries_hardened(
    source_registry: Registry, dest_registry: Registry, tmp_path: Path
) -> None:
    """`once --json` in a read-only, capability-less, no-new-privileges container copies every
    tag; skopeo reads each destination tag back with the source's digest."""
    pushed = seed_samples(source_registry)
    config = _mirror_config(tmp_path, source_registry, dest_registry)
    proc = run("-v", f"{config}:/etc/regsync/sync.yaml:ro", IMAGE, "once", "--json")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["ok"] is True
    (rule,) = summary["rules"]
    assert rule["name"] == "diamol"
    for image in pushed:
        raw = skopeo_raw(dest_registry, f"{image.repo}:{image.tag}")
        assert "sha256:" + hashlib.sha256(raw).hexdigest() == image.digest, image.ref


def test_serve_answers_passes_its_healthcheck_and_stops_on_sigterm(
    source_registry: Registry, dest_registry: Registry, tmp_path: Path, config: dict[str, Any]
) -> None:
    """The default command on $REGSYNC_LISTEN: /healthz, then /readyz after the first run; the
    image's HEALTHCHECK command exits 0 (1 when REGSYNC_LISTEN names another port); the
    process runs as 10001 with no capabilities and no-new-privileges; SIGTERM ends it with 0."""
    seed_samples(source_registry)
    sync = _mirror_config(tmp_path, source_registry, dest_registry)
    port = free_port()
    name = f"regsync-serve-{port}"
    started = podman(
        "run", "-d", "--name", name, "--network", "host", *RUN, *HARDENED,
        "-e", f"REGSYNC_LISTEN=127.0.0.1:{port}",
        "-v", f"{sync}:/etc/regsync/sync.yaml:ro",
        IMAGE,
    )  # fmt: skip
    assert started.returncode == 0, started.stderr
    try:
        base = f"http://127.0.0.1:{port}"
        assert _wait_status(f"{base}/healthz", name) == 200
        assert _wait_status(f"{base}/readyz", name) == 200
        health = config["Healthcheck"]["Test"][1:]
        assert podman("exec", name, *health).returncode == 0
        elsewhere = podman("exec", "-e", f"REGSYNC_LISTEN=127.0.0.1:{free_port()}", name, *health)
        assert elsewhere.returncode == 1 and "regsync healthcheck:" in elsewhere.stderr
        status = podman("exec", name, "cat", "/proc/1/status").stdout
        fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
        assert fields["Uid"].split()[:2] == [str(UID), str(UID)]
        assert int(fields["CapEff"], 16) == 0 and int(fields["CapBnd"], 16) == 0
        assert fields["NoNewPrivs"].strip() == "1"
        write = podman("exec", name, "touch", "/opt/regsync/written")
        assert write.returncode != 0 and "Read-only file system" in write.stderr
    finally:
        podman("kill", "--signal", "TERM", name)
        waited = podman("wait", name, timeout=90)
        logs = podman("logs", name).stderr
        podman("rm", "--force", name)
    assert waited.stdout.strip() == "0", logs
    assert "Traceback" not in logs


def _wait_status(url: str, container: str, timeout: float = 60) -> int:
    """Poll ``url`` until it answers 200 (or the container exits, or ``timeout``)."""
    deadline = time.monotonic() + timeout
    status = 0
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                return int(resp.status)
        except urllib.error.HTTPError as exc:
            status = exc.code
        except OSError:
            pass
        state = podman("inspect", "--format", "{{.State.Running}}", container).stdout.strip()
        if state != "true":
            break
        time.sleep(0.2)
    return status
