"""Small helpers shared by the tag policy, prune, platform and referrer integration tests."""

from __future__ import annotations

import json
import subprocess
import textwrap
from pathlib import Path
from typing import Any

from tests.support import (
    Blob,
    Image,
    Pushed,
    Registry,
    push,
    registries_yaml,
    run_regsync,
    write_config,
)

# A registry that is down should fail the run quickly, not after the default backoff.
FAST_RETRIES = {
    "REGSYNC_RETRY_ATTEMPTS": "2",
    "REGSYNC_RETRY_INITIAL": "0.05",
    "REGSYNC_RETRY_MAX": "0.1",
}


def config(
    tmp_path: Path, src: Registry, dst: Registry, source: str, extra: str = "", dest: str = ""
) -> Path:
    """One rule `mirror` from ``src/source`` to ``dst`` (plus ``dest`` path), with ``extra``
    rule keys (YAML, indented as rule keys)."""
    body = textwrap.indent(textwrap.dedent(extra).strip("\n"), "    ")
    return write_config(
        tmp_path,
        registries_yaml(src, dst)
        + f"version: 1\nrules:\n  - name: mirror\n    source: {src.host}/{source}\n"
        + f"    destination: {dst.host}{dest}\n"
        + (body + "\n" if body else ""),
    )


def regsync(command: str, cfg: Path, *args: str) -> tuple[int, dict[str, Any], str]:
    """Run `regsync <command> -c cfg --json`; (exit code, JSON summary, stderr)."""
    proc = run_regsync(command, "-c", cfg, "--json", *args, env=FAST_RETRIES)
    assert proc.stdout, proc.stderr
    return proc.returncode, json.loads(proc.stdout), proc.stderr


def rule(summary: dict[str, Any]) -> dict[str, Any]:
    (only,) = summary["rules"]
    return only


def image(reg: Registry, repo: str, tag: str, seed: str | None = None) -> Pushed:
    """A small distinct single-arch image (seeded by ``seed``, default the tag)."""
    return push(reg, repo, tag, Image.docker([Blob.random(300, seed=f"{repo}:{seed or tag}")]))


def planned(summary: dict[str, Any], action: str) -> list[str]:
    """Tags of every repo in the plan with ``action`` (copy | up_to_date | prune)."""
    return sorted(
        t["tag"]
        for repo in summary["plan"][0]["repos"]
        for t in repo["tags"]
        if t["action"] == action
    )


def skopeo_raw(reg: Registry, ref: str) -> bytes:
    return subprocess.run(
        ["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{reg.host}/{ref}"],
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout
