"""Deployment files: Dockerfile, docker-compose, Kubernetes manifests, systemd unit.

No Docker engine or cluster is needed: the Dockerfile is checked structurally and its build and
run commands are executed from the same files in this venv; the compose file goes through
`docker-compose config`; Kubernetes manifests through kubernetes-validate's bundled schemas
(offline); the unit through `systemd-analyze verify`; alert rules through promtool.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import tomllib
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from regsync.cliparser import build_parser
from regsync.config import load_config
from regsync.healthcheck import health_url
from regsync.shard import Shard
from tests.support import REPO_ROOT, free_port, run_regsync, write_config

DEPLOY = REPO_ROOT / "deploy"
K8S = DEPLOY / "kubernetes"
METRICS_PORT = 9469
UID = 10001
K8S_VERSIONS = ("1.28.0", kubernetes_validate.latest_version())
CRDS = {"ServiceMonitor", "PrometheusRule"}

# -- Dockerfile ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str

    def exec_form(self) -> list[str]:
        """The JSON (exec) form of CMD / ENTRYPOINT / HEALTHCHECK CMD."""
        text = self.args.split("CMD", 1)[1] if self.keyword == "HEALTHCHECK" else self.args
        value = json.loads(text.strip())
        assert isinstance(value, list) and all(isinstance(v, str) for v in value), self
        return value


def dockerfile_stages() -> list[list[Instruction]]:
    """Instructions per stage (line continuations joined, comments dropped)."""
    text = re.sub(r"\\\n", " ", (REPO_ROOT / "Dockerfile").read_text())
    stages: list[list[Instruction]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, args = line.partition(" ")
        instruction = Instruction(keyword.upper(), " ".join(args.split()))
        if instruction.keyword == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(instruction)
    return stages


def only(stage: list[Instruction], keyword: str) -> Instruction:
    found = [i for i in stage if i.keyword == keyword]
    assert len(found) == 1, f"want one {keyword}, found {found}"
    return found[0]


def image_command() -> list[str]:
    final = dockerfile_stages()[-1]
    return only(final, "ENTRYPOINT").exec_form() + only(final, "CMD").exec_form()


def test_dockerfile_is_multi_stage_slim_and_unprivileged() -> None:
    stages = dockerfile_stages()
    assert len(stages) >= 2
    build, final = stages[0], stages[-1]
    assert only(build, "FROM").args.endswith(" AS build")
    arg = next(
        i for i in dockerfile_stages_preamble() if i.keyword == "ARG" and "PYTHON_IMAGE" in i.args
    )
    assert re.fullmatch(r"PYTHON_IMAGE=python:3\.1[1-9]-slim(-\w+)?", arg.args)
    assert only(final, "FROM").args == "${PYTHON_IMAGE}"
    assert any(i.keyword == "COPY" and i.args.startswith("--from=build ") for i in final)
    assert not any(i.keyword == "COPY" and "--from" not in i.args for i in final)
    user = only(final, "USER").args
    assert user.split(":")[0] not in ("root", "0") and int(user.split(":")[0]) == UID
    assert only(final, "EXPOSE").args == str(METRICS_PORT)
    env = only(final, "ENV").args
    assert "REGSYNC_CONFIG=/etc/regsync/sync.yaml" in env


def dockerfile_stages_preamble() -> list[Instruction]:
    """Instructions before the first FROM (global ARGs)."""
    text = re.sub(r"\\\n", " ", (REPO_ROOT / "Dockerfile").read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("FROM"):
            break
        if line and not line.startswith("#"):
            keyword, _, args = line.partition(" ")
            out.append(Instruction(keyword.upper(), args))
    return out


def image_env_vars() -> dict[str, str]:
    """The final stage's ENV, as a dict."""
    pairs = shlex.split(only(dockerfile_stages()[-1], "ENV").args)
    return dict(pair.split("=", 1) for pair in pairs)


def test_dockerfile_command_is_serve_on_all_interfaces_with_a_healthcheck(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`serve` listens on $REGSYNC_LISTEN (no --listen in the command), and the HEALTHCHECK
    probes that same address: set REGSYNC_LISTEN and both follow."""
    command = image_command()
    assert command[:2] == ["regsync", "serve"] and "--listen" not in command
    listen = image_env_vars()["REGSYNC_LISTEN"]
    assert listen == f"0.0.0.0:{METRICS_PORT}"
    monkeypatch.setenv("REGSYNC_LISTEN", listen)
    args = build_parser().parse_args(command[1:])
    assert args.command == "serve"
    assert args.config == "/etc/regsync/sync.yaml"
    assert args.listen == listen
    health = only(dockerfile_stages()[-1], "HEALTHCHECK").exec_form()
    assert health == ["python", "-m", "regsync.healthcheck"]
    assert health_url(listen) == f"http://127.0.0.1:{METRICS_PORT}/healthz"
    assert health_url("[::]:9000") == "http://[::1]:9000/healthz"
    assert health_url("10.1.2.3:9469") == "http://10.1.2.3:9469/healthz"


def test_serve_reads_its_address_from_regsync_listen(tmp_path: Path) -> None:
    """Without --listen, `serve` takes $REGSYNC_LISTEN; a bad value is a usage error naming it."""
    rule = f"{{name: r, source: 'oci:{tmp_path}/in', destination: 'oci:{tmp_path}/out'}}"
    config = write_config(tmp_path, f"version: 1\nrules:\n  - {rule}\n")
    proc = run_regsync("serve", "-c", config, env={"REGSYNC_LISTEN": "nowhere"}, timeout=60)
    assert proc.returncode == 2
    assert "$REGSYNC_LISTEN) 'nowhere': expected HOST:PORT" in proc.stderr


def build_context(tmp_path: Path) -> Path:
    """What the build stage's COPY instructions take from the repository, and nothing else."""
    context = tmp_path / "context"
    for copy in (i for i in dockerfile_stages()[0] if i.keyword == "COPY"):
        *sources, dest = shlex.split(copy.args)
        target = context / ("" if dest in ("./", ".") else dest.removeprefix("./"))
        for source in sources:
            origin = REPO_ROOT / source
            assert origin.exists(), f"COPY {source}: not in the repository"
            assert not _docker_ignored(source), f"COPY {source}: excluded by .dockerignore"
            if origin.is_dir():
                shutil.copytree(origin, target, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                target.mkdir(parents=True, exist_ok=True)
                shutil.copy2(origin, target / origin.name)
    return context


def _docker_ignored(path: str) -> bool:
    """Whether .dockerignore's last matching pattern excludes ``path`` (enough for ours)."""
    ignored = False
    for line in (REPO_ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate, pattern = line.startswith("!"), line.lstrip("!").rstrip("/")
        if pattern == "*" or pattern == path.rstrip("/"):
            ignored = not negate
    return ignored


@pytest.fixture(scope="module")
def built_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The build stage's `pip install .` from the copied context, into a target directory."""
    tmp = tmp_path_factory.mktemp("image")
    context = build_context(tmp)
    site = tmp / "site"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp / "dist"), str(context)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = (tmp / "dist").glob("regsync-*.whl")
    subprocess.run(
        [*pip, "install", "--no-deps", "--target", str(site), str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return site


def image_env(site: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(site), "PYTHONDONTWRITEBYTECODE": "1"}


def test_image_build_installs_a_working_regsync(built_image: Path) -> None:
    """The wheel built from the COPY'd files alone runs, and it is that code that runs."""
    env = image_env(built_image)
    where = subprocess.run(
        [sys.executable, "-c", "import regsync; print(regsync.__file__)"],
        env=env,
        cwd=built_image,  # not the repository: its regsync/ must not shadow the built one
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert where.startswith(str(built_image))
    version = subprocess.run(
        [str(built_image / "bin" / "regsync"), "--version"],
        env=env,
        cwd=built_image,
        capture_output=True,
        text=True,
    )
    assert version.returncode == 0 and version.stdout.startswith("regsync ")


def test_image_command_serves_healthz_and_the_healthcheck_passes(
    built_image: Path, tmp_path: Path
) -> None:
    """The ENTRYPOINT + CMD, run as the image would (config path and port swapped for the test):
    /healthz answers, the HEALTHCHECK command exits 0, SIGTERM stops it cleanly."""
    layout = tmp_path / "empty-layout"
    layout.mkdir()
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    (layout / "index.json").write_text('{"schemaVersion": 2, "manifests": []}')
    config = write_config(
        tmp_path,
        f"""
        version: 1
        rules:
          - name: local
            source: oci:{layout}
            destination: oci:{tmp_path / "out"}
        """,
    )
    port = free_port()
    command = [str(config) if arg == "/etc/regsync/sync.yaml" else arg for arg in image_command()]
    command[0] = str(built_image / "bin" / "regsync")
    env = {**image_env(built_image), "REGSYNC_LISTEN": f"127.0.0.1:{port}"}
    proc = subprocess.Popen(
        command,
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        assert _wait_healthy(f"http://127.0.0.1:{port}/healthz", proc), "no /healthz"
        health = only(dockerfile_stages()[-1], "HEALTHCHECK").exec_form()
        check = [sys.executable if health[0] == "python" else health[0], *health[1:]]
        assert subprocess.run(check, env=env, cwd=tmp_path, timeout=30).returncode == 0
        elsewhere = {**env, "REGSYNC_LISTEN": f"127.0.0.1:{free_port()}"}
        failed = subprocess.run(check, env=elsewhere, cwd=tmp_path, capture_output=True, timeout=30)
        assert failed.returncode == 1 and b"regsync healthcheck:" in failed.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err.decode()


def _wait_healthy(url: str, proc: subprocess.Popen[bytes]) -> bool:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                return bool(resp.status == 200)
        except OSError:
            time.sleep(0.1)
    return False


def build_stage_install() -> str:
    """The build stage's RUN that installs into the virtualenv."""
    (run,) = [i.args for i in dockerfile_stages()[0] if i.keyword == "RUN" and "-r " in i.args]
    return run


def test_image_installs_the_lock_by_hash_and_ships_no_installer() -> None:
    """Dependencies come from requirements.lock with --require-hashes (wheels only), regsync
    from the copied sources with no index, an index and a CA bundle / pip.conf can be given,
    and pip and setuptools leave both the virtualenv and the runtime image."""
    build, final = dockerfile_stages()[0], dockerfile_stages()[-1]
    run = build_stage_install()
    assert "--require-hashes --no-deps --only-binary :all: -r requirements.lock" in run
    assert "pip install --no-index --no-deps --no-build-isolation" in run
    assert "pip check" in run and "pip uninstall --yes setuptools pip" in run
    assert "--mount=type=secret,id=pip-ca" in run and "--mount=type=secret,id=pip-conf" in run
    args = {i.args for i in build if i.keyword == "ARG"}
    assert {"PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL"} <= args  # no default to override pip.conf
    assert not any(i.keyword == "ARG" for i in final)  # nothing of an index URL in its history
    (uninstall,) = [i.args for i in final if i.keyword == "RUN"]
    assert uninstall.startswith("python -m pip uninstall --yes --no-input pip setuptools wheel")


def test_the_image_ships_regsync_byte_compiled(built_image: Path) -> None:
    """The runtime writes no bytecode (PYTHONDONTWRITEBYTECODE, an unprivileged user): regsync
    is compiled at build time, or every start compiles its modules again (~0.1 s of CPU)."""
    install = next(c for c in build_stage_install().split("&&") if "--no-build-isolation" in c)
    assert "--no-compile" not in install
    compiled = list((built_image / "regsync" / "__pycache__").glob("runner.*.pyc"))
    assert compiled, "pip install of the wheel left regsync without bytecode"


def test_readme_names_the_dockerfiles_base_image() -> None:
    """The README's "Container image" section names the base the Dockerfile builds on, and no
    other python image."""
    (arg,) = [i.args for i in dockerfile_stages_preamble() if i.args.startswith("PYTHON_IMAGE=")]
    base = arg.removeprefix("PYTHON_IMAGE=")
    readme = (REPO_ROOT / "README.md").read_text()
    section = readme.split("### Container image\n", 1)[1].split("\n#", 1)[0]
    assert f"`{base}`" in section
    assert set(re.findall(r"python:[\w.-]+", readme)) == {base}


def test_useradd_makes_a_regular_account_so_uid_10001_raises_no_warning() -> None:
    """--system with uid/gid 10001 warns (outside SYS_UID_MAX / SYS_GID_MAX)."""
    (run,) = [i.args for i in dockerfile_stages()[-1] if i.keyword == "RUN"]
    commands = [c.strip() for c in run.split("&&")]
    useradd = next(shlex.split(c) for c in commands if c.startswith("useradd "))
    groupadd = next(shlex.split(c) for c in commands if c.startswith("groupadd "))
    for argv in (useradd, groupadd):
        assert "--system" not in argv and "-r" not in argv, argv
    assert useradd[useradd.index("--uid") + 1] == str(UID) and "--no-log-init" in useradd
    assert groupadd[groupadd.index("--gid") + 1] == str(UID)


LOCK = REPO_ROOT / "requirements.lock"


def lock_entries() -> dict[str, tuple[Requirement, list[str], list[str]]]:
    """requirements.lock: name -> (requirement, hashes, what it is there for (`# via`))."""
    entries: dict[str, tuple[Requirement, list[str], list[str]]] = {}
    current: str = ""
    via: list[str] = []
    for raw in LOCK.read_text().splitlines():
        line = raw.strip()
        if not line:
            current = ""  # what follows a blank line belongs to no entry
        elif not raw[0].isspace() and not line.startswith("#"):
            text, *hashes = line.rstrip(" \\").split(" --hash=")
            req = Requirement(text)
            current, via = canonicalize_name(req.name), []
            entries[current] = (req, hashes, via)
        elif line.startswith("--hash="):
            entries[current][1].append(line.rstrip(" \\").removeprefix("--hash="))
        elif current and line.startswith("#") and line.lstrip("# ") not in ("", "via"):
            via.append(line.lstrip("# ").removeprefix("via ").split(" (")[0])
    return entries


def test_lock_pins_exactly_pyprojects_dependencies_with_hashes() -> None:
    """Every dependency of pyproject.toml and its build backend is pinned (==) to a version its
    specifier allows, every pin has sha256 hashes, and nothing is pinned that no dependency
    needs. Refresh with `make lock` after editing the dependencies."""
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    wanted = [
        Requirement(r)
        for r in [*project["project"]["dependencies"], *project["build-system"]["requires"]]
    ]
    wanted = [r for r in wanted if r.marker is None or r.marker.evaluate()]
    entries = lock_entries()
    for req in wanted:
        name = canonicalize_name(req.name)
        assert name in entries, f"{req.name} is not in requirements.lock: run `make lock`"
        pinned, _, via = entries[name]
        (spec,) = pinned.specifier
        assert spec.operator == "==", pinned
        assert req.specifier.contains(spec.version, prereleases=True), f"{pinned} vs {req}"
        assert "regsync" in via, f"{name}: {via}"
    direct = {canonicalize_name(r.name) for r in wanted}
    for name, (pinned, hashes, via) in entries.items():
        assert hashes and all(re.fullmatch(r"sha256:[0-9a-f]{64}", h) for h in hashes), name
        assert not pinned.url and not pinned.extras, pinned
        assert via, f"{name}: no `# via`"
        if "regsync" in via:
            assert name in direct, f"{name}: pyproject.toml no longer needs it: run `make lock`"
        assert all(v == "regsync" or canonicalize_name(v) in entries for v in via), (name, via)
    header = LOCK.read_text().split("\n\n", 1)[0]
    assert "pip-compile" in header and "--generate-hashes" in header, header


# -- docker-compose --------------------------------------------------------------------------


def compose() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())


def test_compose_file_is_valid() -> None:
    proc = subprocess.run(
        ["docker-compose", "-f", str(DEPLOY / "docker-compose.yml"), "config", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "HUB_USERNAME": "", "HUB_TOKEN": ""},
    )
    assert proc.returncode == 0, proc.stderr


def test_compose_wires_registry_regsync_prometheus_and_grafana() -> None:
    services = compose()["services"]
    assert set(services) == {"registry", "regsync", "prometheus", "grafana"}
    regsync = services["regsync"]
    assert (DEPLOY / regsync["build"]["context"] / regsync["build"]["dockerfile"]).is_file()
    assert f"{METRICS_PORT}:{METRICS_PORT}" in regsync["ports"]
    for name, service in services.items():  # every bind-mounted file is in the repository
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name}: {source} is missing"
    mounts = dict(v.split(":")[:2] for v in regsync["volumes"])
    config = load_config(DEPLOY / _key_for(mounts, "/etc/regsync/sync.yaml"))
    assert "registry:5000" in {str(rule.destination) for rule in config.rules}
    scrape = yaml.safe_load((DEPLOY / "compose" / "prometheus.yml").read_text())
    targets = scrape["scrape_configs"][0]["static_configs"][0]["targets"]
    assert targets == [f"regsync:{METRICS_PORT}"]


def _seconds(duration: str) -> float:
    """A compose duration (``45s``, ``1m30s``) in seconds."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, duration
    return sum(float(n) * units[u] for n, u in parts)


def test_compose_stop_grace_period_covers_the_drain() -> None:
    """docker stops a container 10 s after SIGTERM unless told otherwise: regsync's compose
    service waits as long as Kubernetes and systemd do, beyond serve's 30 s drain."""
    drain = build_parser().parse_args(["serve"]).grace_period
    grace = _seconds(compose()["services"]["regsync"]["stop_grace_period"])
    assert grace >= drain + 10
    for workload in workloads():
        assert workload["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == grace
    assert unit_lines()["TimeoutStopSec"] == [f"{grace:g}s"]


def _key_for(mounts: dict[str, str], target: str) -> str:
    return next(source for source, dest in mounts.items() if dest == target)


def test_compose_prometheus_config_and_rules_pass_promtool(tmp_path: Path) -> None:
    """promtool checks the compose scrape config together with the rule file it mounts."""
    prometheus = compose()["services"]["prometheus"]
    mounts = dict(v.split(":")[:2] for v in prometheus["volumes"] if v.startswith("."))
    for source, target in mounts.items():  # lay the mounted files out as the container sees them
        if target.startswith("/etc/prometheus/"):
            shutil.copy(DEPLOY / source, tmp_path / target.removeprefix("/etc/prometheus/"))
    config = yaml.safe_load((tmp_path / "prometheus.yml").read_text())
    assert config["rule_files"] == ["regsync-alerts.yml"]
    proc = subprocess.run(
        ["promtool", "check", "config", str(tmp_path / "prometheus.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS: 1 rule files found" in proc.stdout + proc.stderr


# -- Kubernetes ------------------------------------------------------------------------------


def k8s_documents() -> Iterator[tuple[Path, dict[str, Any]]]:
    for path in sorted(K8S.rglob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                yield path, doc


def by_kind(kind: str, name: str = "") -> dict[str, Any]:
    (doc,) = [
        d
        for _, d in k8s_documents()
        if d["kind"] == kind and d["metadata"]["name"] == (name or d["metadata"]["name"])
    ]
    return doc


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_kubernetes_manifests_validate_offline(version: str) -> None:
    """Every built-in resource validates strictly against the bundled schemas (no network)."""
    checked = 0
    for path, doc in k8s_documents():
        if doc["kind"] in CRDS:
            continue
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{path.relative_to(REPO_ROOT)}: {exc.message} at {list(exc.path)}")
        checked += 1
    kinds = {d["kind"] for _, d in k8s_documents()}
    assert {"ConfigMap", "Secret", "Deployment", "StatefulSet", "Service"} <= kinds
    assert kinds >= CRDS and checked >= 6


def test_kustomizations_list_existing_files() -> None:
    for kustomization in K8S.rglob("kustomization.yaml"):
        for resource in yaml.safe_load(kustomization.read_text())["resources"]:
            assert (kustomization.parent / resource).exists(), f"{kustomization}: {resource}"


def workloads() -> list[dict[str, Any]]:
    return [by_kind("Deployment"), by_kind("StatefulSet")]


def container(workload: dict[str, Any]) -> dict[str, Any]:
    (only_container,) = workload["spec"]["template"]["spec"]["containers"]
    return only_container


def test_workloads_run_the_image_command_with_probes_as_the_image_user() -> None:
    config_map, secret, service = (
        by_kind("ConfigMap"),
        by_kind("Secret"),
        by_kind("Service", "regsync"),
    )
    for workload in workloads():
        pod = workload["spec"]["template"]
        c = container(workload)
        assert ["regsync", *c["args"]] == image_command()
        assert c["ports"] == [{"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"}]
        assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
        assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
        assert pod["spec"]["securityContext"]["runAsUser"] == UID
        assert c["securityContext"]["readOnlyRootFilesystem"] is True
        assert c["envFrom"] == [{"secretRef": {"name": secret["metadata"]["name"]}}]
        volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
        mount = next(m for m in c["volumeMounts"] if m["mountPath"] == "/etc/regsync")
        assert volumes[mount["name"]]["configMap"]["name"] == config_map["metadata"]["name"]
        labels = pod["metadata"]["labels"]
        assert workload["spec"]["selector"]["matchLabels"].items() <= labels.items()
        assert service["spec"]["selector"].items() <= labels.items()


def test_config_map_holds_a_valid_config_using_the_secret(tmp_path: Path) -> None:
    secret = by_kind("Secret")["stringData"]
    text = by_kind("ConfigMap")["data"]["sync.yaml"]
    assert all(f"${{{key}}}" in text for key in secret)
    path = tmp_path / "sync.yaml"
    path.write_text(text)
    config = load_config(path, env=secret)
    assert config.rules


def test_statefulset_pods_each_take_their_ordinal_as_shard() -> None:
    statefulset = by_kind("StatefulSet")
    replicas = statefulset["spec"]["replicas"]
    env = {e["name"]: e for e in container(statefulset)["env"]}
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    template = env["REGSYNC_SHARD"]["value"]
    name = statefulset["metadata"]["name"]
    shards = [Shard.parse(template.replace("$(POD_NAME)", f"{name}-{i}")) for i in range(replicas)]
    assert shards == [Shard(i, replicas) for i in range(replicas)]
    headless = [
        d for _, d in k8s_documents() if d["kind"] == "Service" and d["spec"].get("clusterIP")
    ]
    assert [s["metadata"]["name"] for s in headless] == [statefulset["spec"]["serviceName"]]


def test_service_monitor_scrapes_the_service_metrics_port() -> None:
    monitor, service = by_kind("ServiceMonitor"), by_kind("Service", "regsync")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= (
        service["metadata"]["labels"].items()
    )
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"


def test_prometheus_rule_matches_the_alert_rules_and_passes_promtool(tmp_path: Path) -> None:
    """The PrometheusRule carries exactly deploy/prometheus's rules (`make deploy-sync`)."""
    rule = by_kind("PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    source = yaml.safe_load((DEPLOY / "prometheus" / "regsync-alerts.yml").read_text())
    assert source["groups"] and rule["spec"]["groups"] == source["groups"]
    extracted = tmp_path / "rules.yml"
    extracted.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    proc = subprocess.run(
        ["promtool", "check", "rules", str(extracted)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


# -- systemd ---------------------------------------------------------------------------------


def unit_lines() -> dict[str, list[str]]:
    lines: dict[str, list[str]] = {}
    for line in (DEPLOY / "systemd" / "regsync.service").read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.startswith("#"):
            lines.setdefault(key, []).append(value)
    return lines


def test_systemd_unit_commands_parse_and_match_the_image() -> None:
    unit = unit_lines()
    (start,) = unit["ExecStart"]
    argv = shlex.split(start)
    assert argv[0].endswith("/regsync") and argv[1:] == image_command()[1:]
    listen = image_env_vars()["REGSYNC_LISTEN"]
    assert f"REGSYNC_LISTEN={listen}" in unit["Environment"]
    for command in unit["ExecStartPre"]:
        build_parser().parse_args(shlex.split(command)[1:])
    assert unit["User"] == ["regsync"] and unit["Restart"] == ["on-failure"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_systemd_unit_verifies(tmp_path: Path) -> None:
    """`systemd-analyze verify` finds nothing to say (binary path pointed at this venv)."""
    text = (DEPLOY / "systemd" / "regsync.service").read_text()
    regsync = Path(sys.executable).parent / "regsync"
    unit = tmp_path / "regsync.service"
    unit.write_text(text.replace("/opt/regsync/bin/regsync", str(regsync)))
    proc = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0 and not proc.stderr.strip(), proc.stderr


STATE_DIR = "/var/lib/regsync/state"


def test_content_index_lives_on_a_volume_everywhere() -> None:
    """The state dir (content index) is a volume: in the image, in compose, in every pod, and
    one claim per shard in the StatefulSet (shards never share one file)."""
    final = dockerfile_stages()[-1]
    assert f"REGSYNC_STATE_DIR={STATE_DIR}" in only(final, "ENV").args
    assert only(final, "VOLUME").exec_form() == [STATE_DIR]
    regsync = compose()["services"]["regsync"]
    mounts = dict(v.split(":")[:2] for v in regsync["volumes"])
    assert _key_for(mounts, STATE_DIR) in compose()["volumes"]
    for workload in workloads():
        c = container(workload)
        mount = next(m for m in c["volumeMounts"] if m["mountPath"] == STATE_DIR)
        assert not mount.get("readOnly")
        pod_volumes = {v["name"] for v in workload["spec"]["template"]["spec"]["volumes"]}
        claims = {t["metadata"]["name"] for t in workload["spec"].get("volumeClaimTemplates", [])}
        assert mount["name"] in pod_volumes | claims
        if workload["kind"] == "StatefulSet":
            assert mount["name"] in claims
