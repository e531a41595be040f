"""Start-up cost: `--help`, `--version` and `validate` import nothing heavy (no timings here;
the benchmark measures them). A subprocess sees exactly what a user's shell would load."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import (
    REPO_ROOT,
    Blob,
    Image,
    Registry,
    mirror_config,
    push,
    write_config,
)

HEAVY = ("aiohttp", "asyncio", "prometheus_client", "rich", "croniter", "yarl", "multidict")
NOT_FOR_HELP = (*HEAVY, "pydantic", "yaml", "sqlite3")
VALID = """
version: 1
rules:
  - name: a
    source: docker.io/library/alpine
    destination: registry.local:5000
"""


def imported(*args: str, module: str = "regsync", full: bool = False) -> set[str]:
    """Top-level packages (``full``: modules) `python -X importtime -m MODULE *args` imported."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", module, *args],
        cwd=REPO_ROOT,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    names = set()
    for line in proc.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            name = line.rsplit("|", 1)[1].strip()
            names.add(name if full else name.split(".")[0])
    assert "regsync" in names or "regsync.cli" in names, proc.stderr[-2000:]
    return names


@pytest.mark.parametrize(
    "args", [("--help",), ("--version",), ("once", "--help"), ("copy", "--help"), ("ls", "--help")]
)
def test_help_and_version_import_nothing_heavy(args: tuple[str, ...]) -> None:
    assert imported(*args).isdisjoint(NOT_FOR_HELP)


def test_the_image_healthcheck_imports_nothing_heavy() -> None:
    """The container's HEALTHCHECK starts an interpreter every 30 s (no server here: exit 1)."""
    assert imported(module="regsync.healthcheck").isdisjoint(NOT_FOR_HELP)


def test_validate_loads_the_config_models_but_no_runtime(tmp_path: Path) -> None:
    config = write_config(tmp_path, VALID)
    names = imported("validate", "-c", str(config))
    assert "pydantic" in names  # it did validate
    assert names.isdisjoint(HEAVY)


def test_once_loads_metrics_and_croniter_only_to_export_them(
    tmp_path: Path, source_registry: Registry, dest_registry: Registry
) -> None:
    """A `once` whose metrics go nowhere builds none: prometheus-client (and croniter, which
    only the metrics' schedule period needs) stay unloaded; with --metrics-file they load and
    the file is written. Both runs copy the same tag to the same digest."""
    pushed = push(source_registry, "team/app", "1", Image.docker([Blob.random(900, seed=7)]))
    config = mirror_config(tmp_path, source_registry, dest_registry, "team/app")
    plain = imported("once", "-c", str(config), "-q")
    assert plain.isdisjoint({"prometheus_client", "croniter"})
    assert "aiohttp" in plain  # it did run
    assert dest_registry.manifest_digest("team/app", "1") == pushed.digest
    metrics = tmp_path / "run.prom"
    exported = imported("once", "-c", str(config), "-q", "--full", "--metrics-file", str(metrics))
    assert {"prometheus_client", "croniter"} <= exported
    text = metrics.read_text()  # the run's counts, requests included, still go out
    assert 'regsync_tags_total{outcome="up_to_date",rule="mirror"} 1.0' in text
    head = f'regsync_registry_requests_total{{method="HEAD",registry="{dest_registry.host}"'
    assert f'{head},status="200"}} 1.0' in text


def test_a_registry_to_registry_once_loads_no_layout_tar_or_server_modules(
    tmp_path: Path, source_registry: Registry, dest_registry: Registry
) -> None:
    """Start-up is most of a no-op `once`'s CPU: the OCI layout and tar backends load only for
    a spec naming one, and aiohttp's server only for `serve`."""
    pushed = push(source_registry, "team/app", "1", Image.docker([Blob.random(900, seed=8)]))
    config = mirror_config(tmp_path, source_registry, dest_registry, "team/app")
    names = imported("once", "-c", str(config), "-q", full=True)
    assert dest_registry.manifest_digest("team/app", "1") == pushed.digest  # it did run
    unused = {"regsync.backends.layout", "regsync.backends.tarball", "regsync.backends.bundle"}
    assert names.isdisjoint({*unused, "aiohttp.web", "regsync.daemon", "regsync.eventhttp"})


def test_the_collector_is_back_on_whichever_way_a_command_ends(tmp_path: Path) -> None:
    """Start-up runs with the cyclic collector off; every ending turns it back on (checked in
    a subprocess: the CLI sets up the root logger)."""
    good = write_config(tmp_path, VALID)
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nrules: [\n")
    script = f"""
import contextlib, gc, io
from regsync.cli import main
seen = [main(["validate", "-c", {str(good)!r}]), gc.isenabled()]
seen += [main(["once", "-c", {str(bad)!r}]), gc.isenabled()]
with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
    main(["--help"])
seen.append(gc.isenabled())
print(seen)
"""
    proc = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO_ROOT,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.stdout.strip() == "[0, True, 2, True, True]", proc.stderr[-2000:]
