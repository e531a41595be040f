"""The contenders: regsync, skopeo sync, and the raw GET->PUT copier, as subprocess commands.

Each writes its own input files into a work dir and returns the argv; ``bench.measure`` runs it.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from tests.support import Registry, registries_yaml

REPO_ROOT = Path(__file__).resolve().parent.parent


def regsync_argv(
    work: Path,
    src: Registry,
    dst: Registry,
    namespace: str,
    state: Path | None = None,
    mode: str = "once",
    rule_keys: str = "",
) -> list[str]:
    """``regsync once`` mirroring ``namespace/*`` to the same names on ``dst``.

    The content index lives in ``state`` (S6 keeps one across its days), else in the run's own
    work dir: a cold copy into an emptied destination must not try mounts a previous round's
    index suggests. ``mode``: ``once``; ``full`` (``once --full``: HEAD every tag); ``serve``
    (``bench/warm.py``: the second of two cycles in one process, as a warm ``serve``).
    ``rule_keys``: more keys of the rule, YAML flow style (``tags: {immutable: ['.*']}``)."""
    config = work / "sync.yaml"
    config.write_text(
        registries_yaml(src, dst)
        + f"""version: 1
rules:
  - name: bench
    source: {src.host}/{namespace}/*
    destination: {dst.host}
"""
        + (f"    {rule_keys}\n" if rule_keys else "")
    )
    state_dir = state or work / "state"
    if mode == "serve":
        return [sys.executable, str(REPO_ROOT / "bench" / "warm.py"), str(config), str(state_dir)]
    return [
        *(sys.executable, "-m", "regsync", "once", "-c", str(config), "--json", "-q"),
        *("--state-dir", str(state_dir)),
        *(["--full"] if mode == "full" else []),
    ]


def skopeo_available() -> bool:
    return shutil.which("skopeo") is not None


def skopeo_argv(
    work: Path, src: Registry, dst: Registry, namespace: str, repos: list[str]
) -> list[str]:
    """``skopeo sync --all`` of every tag of ``repos``; unscoped, so ``dst/namespace/<name>``.

    skopeo sync has no catalog globbing: the YAML source lists the repositories (an empty tag
    list means every tag), which is what a user of it writes by hand.
    """
    spec = {src.host: {"tls-verify": False, "images": {repo: [] for repo in repos}}}
    yaml_path = work / "skopeo.yaml"
    yaml_path.write_text(json.dumps(spec, indent=2))  # JSON is YAML
    return [
        "skopeo",
        "sync",
        "--all",
        "--preserve-digests",
        "--src",
        "yaml",
        "--dest",
        "docker",
        "--dest-tls-verify=false",
        str(yaml_path),
        f"{dst.host}/{namespace}",
    ]


def raw_argv(
    work: Path, src: Registry, dst: Registry, jobs: list[tuple[str, str, str]], parallel: int
) -> list[str]:
    """The raw copier over ``jobs`` (src_repo, digest, dst_repo)."""
    spec = {"src": src.url, "dst": dst.url, "parallel": parallel, "jobs": [list(j) for j in jobs]}
    path = work / "raw.json"
    path.write_text(json.dumps(spec))
    return [sys.executable, str(REPO_ROOT / "bench" / "raw.py"), str(path)]
