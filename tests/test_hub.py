"""Docker Hub: names, namespace listing through the Hub API, and what a no-op run costs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from regsync.oci.ref import DestinationSpec, SourceSpec, api_host, split_name
from tests.support import Blob, Image, Registry, push, regsync_json, write_config
from tests.support.servers import HubApi, ProxyScript, RateLimitProxy

FAST = {"REGSYNC_RETRY_INITIAL": "0.01", "REGSYNC_RETRY_MAX": "0.05"}


@pytest.mark.parametrize(
    ("source", "registry", "pattern", "destination_repo"),
    [
        ("nginx", "docker.io", "library/nginx", "library/nginx"),
        ("docker.io/nginx", "docker.io", "library/nginx", "library/nginx"),
        ("index.docker.io/library/nginx", "docker.io", "library/nginx", "library/nginx"),
        ("registry-1.docker.io/diamol/base", "docker.io", "diamol/base", "diamol/base"),
        ("Docker.IO/diamol/*", "docker.io", "diamol/*", None),
    ],
)
def test_docker_hub_names_and_the_destination_path(
    source: str, registry: str, pattern: str, destination_repo: str | None
) -> None:
    spec = SourceSpec.parse(source)
    assert (spec.registry, spec.pattern) == (registry, pattern)
    assert api_host(spec.registry) == "registry-1.docker.io"
    if destination_repo is not None:
        dest = DestinationSpec.parse("registry.local:5000")
        assert dest.repo_for(split_name(source)[1]) == destination_repo


@pytest.fixture
def source_proxy(source_registry: Registry) -> Iterator[RateLimitProxy]:
    proxy = RateLimitProxy(source_registry.url, ProxyScript(ratelimit=(100, 21600)))
    proxy.start()
    yield proxy
    proxy.stop()


def test_namespace_glob_pages_through_the_hub_api_and_a_noop_costs_zero_pulls(
    tmp_path: Path, source_registry: Registry, dest_registry: Registry, source_proxy: RateLimitProxy
) -> None:
    """`diamol/*` lists the namespace through the Hub API (3 pages, private repos with the
    login), not the catalog; a second run only HEADs: zero manifest GETs, zero pulls."""
    public = ["app", "web", "tool", "extra"]
    pushed = {
        name: push(
            source_registry, f"diamol/{name}", "1.0", Image.docker([Blob.random(900, seed=name)])
        )
        for name in [*public, "secret", "unlisted"]
    }
    hub = HubApi({"diamol": public}, private={"diamol": ["secret"]}, users={"hubuser": "hubpw"})
    hub.start()
    try:
        config = write_config(
            tmp_path,
            f"""
            version: 1
            registries:
              "{source_proxy.host}":
                tls: http
                hub_api: {hub.url}
                credentials: {{username: hubuser, password: hubpw}}
                rate_limit: {{min_remaining: 10}}
              "{dest_registry.host}": {{tls: http}}
            rules:
              - name: diamol
                source: "{source_proxy.host}/diamol/*"
                destination: "{dest_registry.host}/hub"
            """,
        )
        code, summary, stderr = regsync_json("once", config, env=FAST)
        listing = hub.requests()
        pulls, seen = source_proxy.state().pulls, len(source_proxy.state().log)
        second = regsync_json("once", config, env=FAST)
    finally:
        hub.stop()

    assert code == 0, stderr
    (rule,) = summary["rules"]
    assert rule["repos"] == 5 and rule["tags"]["copied"] == 5
    for name in [*public, "secret"]:
        assert dest_registry.manifest_digest(f"hub/diamol/{name}", "1.0") == pushed[name].digest
    assert dest_registry.tags("hub/diamol/unlisted") == []  # in the registry, not on the Hub
    assert [path for path, _, _ in listing] == ["/v2/users/login"] + [
        "/v2/namespaces/diamol/repositories"
    ] * 3
    assert "page_size=100" in listing[1][1] and all(auth for _, _, auth in listing[1:])
    assert rule["source_manifest_gets"] == pulls == 5
    assert "hubpw" not in stderr

    code, summary, stderr = second
    assert code == 0, stderr
    (rule,) = summary["rules"]
    assert rule["tags"]["copied"] == 0 and rule["tags"]["up_to_date"] == 5
    assert rule["source_manifest_gets"] == 0
    after = source_proxy.state()
    assert after.pulls == 5  # the no-op run cost no pulls
    manifest_requests = [m for m, p, _ in after.log[seen:] if "/manifests/" in p]
    assert manifest_requests and set(manifest_requests) == {"HEAD"}
    assert "pausing" not in stderr  # 95 of 100 left, above min_remaining


def test_listing_problems_are_one_clear_line_each(
    tmp_path: Path, dest_registry: Registry, source_proxy: RateLimitProxy
) -> None:
    """No catalog and no Hub API; an unknown Hub namespace."""
    source_proxy.call(lambda: setattr(source_proxy.script, "no_catalog", True))
    hub = HubApi({"diamol": ["app"]})
    hub.start()
    plain = f"localhost:{source_proxy.port}"  # the same server, configured without hub_api
    try:
        config = write_config(
            tmp_path,
            f"""
            version: 1
            registries:
              "{source_proxy.host}": {{tls: http, hub_api: "{hub.url}/"}}
              "{plain}": {{tls: http}}
              "{dest_registry.host}": {{tls: http}}
            rules:
              - {{name: nocatalog, source: "{plain}/team/*", destination: "{dest_registry.host}"}}
              - name: nobody
                source: "{source_proxy.host}/nobody/*"
                destination: "{dest_registry.host}"
            """,
        )
        code, summary, _ = regsync_json("once", config, env=FAST)
    finally:
        hub.stop()

    assert code == 1
    errors = {r["name"]: r["errors"] for r in summary["rules"]}
    assert all(len(e) == 1 for e in errors.values()), errors
    assert errors["nocatalog"][0].startswith(f"{plain} cannot list its repositories (catalog:")
    assert "name them in the rule instead of a glob" in errors["nocatalog"][0]
    assert errors["nobody"] == [f"{source_proxy.host}: namespace 'nobody' not found on Docker Hub"]
    # A glob with no namespace is refused at load: tests/test_validate_sources.py.
