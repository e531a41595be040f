"""Small helpers shared by the tag policy, prune, platform and referrer integration tests."""

from __future__ import annotations

import json
import subprocess
from typing import Any

from tests.support import (
    Blob,
    Image,
    Pushed,
    Registry,
    push,
)


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


def skopeo_digest(ref: str) -> str:
    """The digest skopeo reads for ``ref`` (any transport: docker://, oci-archive:, ...)."""
    proc = subprocess.run(
        ["skopeo", "inspect", "--tls-verify=false", ref], capture_output=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr.decode()
    digest: str = json.loads(proc.stdout)["Digest"]
    return digest
