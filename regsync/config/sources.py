"""Checks of rule sources that need no network, so `validate` (and every command, at load)
refuses what a run would only refuse later.

A Docker Hub glob must start with its namespace: Docker Hub has no catalog, and its API lists
one namespace at a time (`docker.io/*` cannot be listed).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

from regsync.config.models import RegistryConfig, Rule
from regsync.oci.ref import DOCKER_HUB, Kind, is_repository, normalize_host


def source_problems(
    rules: Sequence[Rule], registries: Mapping[str, RegistryConfig]
) -> Iterator[tuple[int, str]]:
    """(rule index, message) for each rule whose source no run could list."""
    listed_by_api = {normalize_host(h) for h, r in registries.items() if r.hub_api} | {DOCKER_HUB}
    for at, rule in enumerate(rules):
        spec = rule.source
        if spec.kind is not Kind.REGISTRY or not spec.is_glob:
            continue
        namespace = spec.prefix.split("/")[0]
        if spec.registry in listed_by_api and not is_repository(namespace):
            yield (
                at,
                f"{spec} cannot be listed: Docker Hub lists one namespace at a time; start the "
                f"source with it, e.g. {spec.registry}/diamol/*",
            )
