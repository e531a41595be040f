"""`validate` refuses what a run would refuse without asking any registry (issue "tell the
truth", item 7): a Docker Hub glob that does not start with a namespace cannot be listed."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import run_regsync, write_config


@pytest.mark.parametrize("source", ["docker.io/*", "docker.io/**", "index.docker.io/*"])
def test_validate_refuses_a_hub_glob_without_namespace(tmp_path: Path, source: str) -> None:
    """README "Mirroring Docker Hub": `docker.io/*` is refused, at load, in every command."""
    config = write_config(
        tmp_path,
        f"""
        version: 1
        rules:
          - name: hub
            source: {source}
            destination: registry.local:5000
        """,
    )
    for command in ("validate", "once", "check"):
        proc = run_regsync(command, "-c", config)
        assert proc.returncode == 2, (command, proc.stderr)
        assert proc.stderr.strip() == (
            f"regsync: rules[0].source (sync.yaml:4): docker.io/{source.split('/', 1)[1]} "
            "cannot be listed: Docker Hub lists one namespace at a time; start the source "
            "with it, e.g. docker.io/diamol/*"
        )


def test_hub_api_registries_need_a_namespace_and_others_do_not(tmp_path: Path) -> None:
    """A registry listed through a Hub-style API (`hub_api:`) is held to the same rule; a
    registry with a catalog may be globbed from its root."""
    config = write_config(
        tmp_path,
        """
        version: 1
        registries:
          hubproxy.example: {hub_api: "https://hubapi.example"}
        rules:
          - {name: proxy, source: "hubproxy.example/*", destination: "mirror.example/p"}
          - {name: fine, source: "registry.example/*", destination: "mirror.example/r"}
          - {name: ns, source: "docker.io/diamol/*", destination: "mirror.example/h"}
        """,
    )
    proc = run_regsync("validate", "-c", config)
    assert proc.returncode == 2
    assert "rules[0].source (sync.yaml:5): hubproxy.example/* cannot be listed" in proc.stderr
    assert "rules[1]" not in proc.stderr and "rules[2]" not in proc.stderr
