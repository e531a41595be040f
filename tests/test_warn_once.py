"""A standing fact is logged once per process (issue "tell the truth", item 8): the plain-HTTP
warning of a registry, however many rules and daemon cycles open a run against it."""

from __future__ import annotations

from pathlib import Path

from tests.support import Blob, Image, Registry, push, registries_yaml, write_config
from tests.support.observe import Served, wait_for


def test_plain_http_warning_once_per_registry_per_process(
    tmp_path: Path, source_registry: Registry, dest_registry: Registry
) -> None:
    """README "Credentials and TLS": logged once at start, not once per rule and cycle."""
    push(source_registry, "team/app", "1.0", Image.docker([Blob.random(2000, seed="w")]))
    rules = "".join(
        f"  - {{name: {name}, source: {source_registry.host}/team/app, "
        f"destination: {dest_registry.host}/{name}, interval: 1s}}\n"
        for name in ("a", "b")
    )
    config = write_config(
        tmp_path, registries_yaml(source_registry, dest_registry) + "version: 1\nrules:\n" + rules
    )

    with Served(config, tmp_path) as served:
        wait_for(
            lambda: all(served.rule(n)["runs"] >= 3 for n in ("a", "b")), "three cycles per rule"
        )
        assert served.stop() == 0
        log = served.log()

    for reg in (source_registry, dest_registry):
        line = f"registry {reg.host}: plain HTTP, no TLS (tls: http, as configured)"
        assert log.count(line) == 1, log
