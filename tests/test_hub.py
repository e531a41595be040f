"""Docker Hub: names, namespace listing through the Hub API, and what a no-op run costs."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from regsync.oci.manifest import Descriptor
from regsync.oci.ref import DestinationSpec, SourceSpec, api_host, split_name
from tests.support import (
    DOCKER_MANIFEST,
    OCI_INDEX,
    Blob,
    Image,
    Index,
    Registry,
    push,
    regsync_json,
    write_config,
)
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
        listing = [r for r in hub.requests() if not r[0].endswith("/tags")]  # tags: below
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


def _hub_tags_config(tmp_path: Path, proxy: RateLimitProxy, hub: HubApi, dest: Registry) -> Path:
    return write_config(
        tmp_path,
        f"""
        version: 1
        registries:
          "{proxy.host}": {{tls: http, hub_api: "{hub.url}", rate_limit: {{min_remaining: 1}}}}
          "{dest.host}": {{tls: http}}
        rules:
          - {{name: bulk, source: "{proxy.host}/diamol/app", destination: "{dest.host}/hub"}}
        """,
    )


def _manifest_requests(proxy: RateLimitProxy, since: int) -> Counter[str]:
    return Counter(m for m, p, _ in proxy.state().log[since:] if "/manifests/" in p)


def test_hub_source_digests_come_from_the_tags_api_pages_not_a_head_per_tag(
    tmp_path: Path, source_registry: Registry, dest_registry: Registry, source_proxy: RateLimitProxy
) -> None:
    """The tags API names each tag's digest (a multi-arch tag: its index's), 2 a page here: no
    source HEAD for those, one GET per distinct digest to copy; the entry without a digest
    (an old schema-1 push) is HEADed; a failing API means HEADs for every tag, with a warning."""
    single = push(source_registry, "diamol/app", "1.0", Image.docker([Blob.random(800, seed="h1")]))
    arm = Image.oci([Blob.random(700, seed="harm")], platform="linux/arm64")
    multi = push(source_registry, "diamol/app", "multi", Index.oci([Image.oci([]), arm]))
    old = push(source_registry, "diamol/app", "old", Image.docker([Blob.random(600, seed="hold")]))
    entries = [
        {"name": "1.0", "digest": single.digest, "media_type": DOCKER_MANIFEST},
        {
            "name": "multi",
            "digest": multi.digest,
            "media_type": OCI_INDEX,
            "images": [
                {"architecture": a, "os": "linux", "digest": d}
                for a, d in (("amd64", "x"), ("arm64", "y"))
            ],
        },
        {"name": "old", "images": []},  # no digest: HEAD it
    ]
    hub = HubApi({"diamol": ["app"]}, tags={"diamol/app": entries}, tag_page_size=2)
    hub.start()
    try:
        config = _hub_tags_config(tmp_path, source_proxy, hub, dest_registry)
        seen = len(source_proxy.state().log)
        cold = regsync_json("once", config, env=FAST)
        cold_manifests = _manifest_requests(source_proxy, seen)
        pages = [q for p, q, _ in hub.requests() if p.endswith("/tags")]
        seen = len(source_proxy.state().log)
        full = regsync_json("once", config, "--full", env=FAST)
        full_manifests = _manifest_requests(source_proxy, seen)
        hub.call(lambda: setattr(hub, "tags_status", 503))
        seen = len(source_proxy.state().log)
        failed = regsync_json("once", config, "--full", env=FAST)
        failed_manifests = _manifest_requests(source_proxy, seen)
    finally:
        hub.stop()

    assert cold.code == 0 and cold.rule["tags"]["copied"] == 3, cold.stderr
    assert dest_registry.manifest_digest("hub/diamol/app", "multi") == multi.digest
    assert dest_registry.manifest_digest("hub/diamol/app", "1.0") == single.digest
    assert dest_registry.manifest_digest("hub/diamol/app", "old") == old.digest
    assert len(pages) == 2 and "page_size=100" in pages[0]
    distinct = 1 + len(multi.manifests) + 1  # 1.0; the index and its children; old
    assert cold_manifests == Counter({"GET": distinct, "HEAD": 1}), cold_manifests
    assert full.code == 0 and full.rule["tags"]["up_to_date"] == 3, full.stderr
    assert full_manifests == Counter({"HEAD": 1})  # only the entry without a digest
    assert failed.code == 0 and failed.rule["tags"]["up_to_date"] == 3, failed.stderr
    assert failed_manifests == Counter({"HEAD": 3})
    assert "Hub tags API failed, HEADing tags" in failed.stderr


def test_hub_tag_entries_with_a_bad_name_or_digest_are_left_to_a_head() -> None:
    """The tags API is outside data: a name off the tag grammar, a malformed digest, an
    unknown media type, or an entry that is not an object gives no digest to trust."""
    from regsync.backends.registry.hub import _tag_entry

    good = "sha256:" + "a" * 64
    assert _tag_entry({"name": "1.0", "digest": good, "media_type": OCI_INDEX}) == (
        "1.0",
        Descriptor(OCI_INDEX, good, 0),
    )
    assert _tag_entry({"name": "1.0", "digest": good, "media_type": "text/html"}) == (
        "1.0",
        Descriptor("", good, 0),
    )
    for bad in (
        {"name": "../x", "digest": good},
        {"name": "1.0", "digest": "sha256:zz"},
        {"name": "1.0", "digest": None},
        {"name": 5, "digest": good},
        ["1.0", good],
    ):
        assert _tag_entry(bad) is None, bad
