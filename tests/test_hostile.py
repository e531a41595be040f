"""Hostile registry responses: each is a clear per-tag, per-repo or per-rule error, never a crash.

A scripted registry (aiohttp on 127.0.0.1) serves two repositories, `good/app` and `bad/app`;
each case breaks one answer about `bad/app` (or the catalog, or the destination) and asserts
the outcome: which error, at which level, and that `good/app` was still copied (graceful
degradation) while nothing half-made appeared in the destination.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from aiohttp import web

from regsync.backends.registry.retry import RetryPolicy, Timeouts
from regsync.config import parse_config
from regsync.result import RuleResult
from regsync.runner import run
from tests.support import DOCKER_MANIFEST, Blob, Image, mirror_rule, plain_yaml
from tests.support.scripted import ScriptedRegistry, json_body

FAST = RetryPolicy(attempts=2, initial=0.01, maximum=0.02, max_retry_after=5)
TIMEOUTS = Timeouts(connect=2, read=2)

GOOD = Image.docker([Blob.random(3000, seed="good")])
BAD = Image.docker([Blob.random(3000, seed="bad")], labels={"bad": "yes"})


def answer(make: Callable[[], web.StreamResponse]) -> Callable[..., object]:
    async def handler(request: web.Request, match: re.Match[str]) -> web.StreamResponse:
        await request.read()
        return make()

    return handler


@dataclass
class Case:
    id: str
    side: str  # which registry the override goes on: source | destination
    method: str
    path: str
    respond: Callable[[ScriptedRegistry], Callable[..., object]]
    level: str  # rule (nothing copied) | repo (bad/app skipped) | tag (bad/app:1 failed)
    message: str  # regex the error must match
    setup: Callable[[ScriptedRegistry], None] | None = None


def raw_manifest(media_type: str, raw: bytes) -> Callable[[ScriptedRegistry], None]:
    def setup(src: ScriptedRegistry) -> None:
        src.put_raw("bad/app", "1", media_type, raw)

    return setup


def bad_blob(data: bytes) -> Callable[[ScriptedRegistry], Callable[..., object]]:
    def respond(src: ScriptedRegistry) -> Callable[..., object]:
        return answer(lambda: web.Response(body=data))

    return respond


BAD_LAYER = BAD.blobs[-1].digest
BIG = 5 * 1024 * 1024


def _index_with(child: dict[str, object]) -> bytes:
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [child],
        }
    ).encode()


def _with_layer_type(media_type: str) -> bytes:
    body = BAD.json
    body["layers"][0]["mediaType"] = media_type
    return json.dumps(body).encode()


CASES = [
    Case(
        "catalog-bad-json",
        "source",
        "GET",
        r"^/v2/_catalog$",
        lambda s: answer(lambda: web.Response(text="{not json")),
        "rule",
        "invalid JSON",
    ),
    Case(
        "catalog-not-a-list",
        "source",
        "GET",
        r"^/v2/_catalog$",
        lambda s: answer(lambda: json_body({"repositories": "good/app"})),
        "rule",
        "malformed repositories list",
    ),
    Case(
        "catalog-endless-link-loop",
        "source",
        "GET",
        r"^/v2/_catalog$",
        lambda s: answer(
            lambda: json_body(
                {"repositories": ["good/app"]}, Link='</v2/_catalog?n=1000&last=x>; rel="next"'
            )
        ),
        "rule",
        "pagination (loops|repeats itself)",
    ),
    Case(
        "tags-endless-pages-with-changing-urls",
        "source",
        "GET",
        r"^/v2/bad/app/tags/list$",
        lambda s: answer(
            lambda: json_body(
                {"tags": ["1"]},
                Link=f'</v2/bad/app/tags/list?n=1&last={len(s.requests)}>; rel="next"',
            )
        ),
        "repo",
        "pagination repeats itself",
    ),
    Case(
        "catalog-link-to-other-host",
        "source",
        "GET",
        r"^/v2/_catalog$",
        lambda s: answer(
            lambda: json_body(
                {"repositories": ["good/app"]},
                Link='<http://198.51.100.7/v2/_catalog?last=a>; rel="next"',
            )
        ),
        "rule",
        "another host",
    ),
    Case(
        "catalog-link-not-a-url",
        "source",
        "GET",
        r"^/v2/_catalog$",
        lambda s: answer(
            lambda: json_body(
                {"repositories": ["good/app"]},
                Link='<http://[::1/v2/_catalog?last=a>; rel="next"',
            )
        ),
        "rule",
        "pagination link .* is not a URL",
    ),
    Case(
        "tags-bad-json",
        "source",
        "GET",
        r"^/v2/bad/app/tags/list$",
        lambda s: answer(lambda: web.Response(text='{"tags": [')),
        "repo",
        "invalid JSON",
    ),
    Case(
        "tags-not-strings",
        "source",
        "GET",
        r"^/v2/bad/app/tags/list$",
        lambda s: answer(lambda: json_body({"tags": [1, {"x": 2}]})),
        "repo",
        "malformed tags list",
    ),
    Case(
        "tags-oversized-body",
        "source",
        "GET",
        r"^/v2/bad/app/tags/list$",
        lambda s: answer(
            lambda: web.Response(body=b'{"tags": ["' + b"a" * (17 * 1024 * 1024) + b'"]}')
        ),
        "repo",
        "response body over",
    ),
    Case(
        "manifest-oversized",
        "source",
        "GET",
        r"^/v2/bad/app/manifests/",
        lambda s: answer(
            lambda: web.Response(body=b" " * BIG, headers={"Content-Type": DOCKER_MANIFEST})
        ),
        "tag",
        "response body over 4194304 bytes",
    ),
    Case(
        "manifest-bad-json",
        "source",
        "GET",
        r"^/nothing$",
        lambda s: answer(web.Response),
        "tag",
        "not valid JSON",
        setup=raw_manifest(DOCKER_MANIFEST, b'{"schemaVersion": 2,'),
    ),
    Case(
        "manifest-unknown-media-type",
        "source",
        "GET",
        r"^/nothing$",
        lambda s: answer(web.Response),
        "tag",
        "unsupported manifest media type",
        setup=raw_manifest(
            "application/x-mystery", b'{"schemaVersion": 2, "mediaType": "application/x-mystery"}'
        ),
    ),
    Case(
        "manifest-schema1",
        "source",
        "GET",
        r"^/nothing$",
        lambda s: answer(web.Response),
        "tag",
        "schema1",
        setup=raw_manifest(
            "application/vnd.docker.distribution.manifest.v1+prettyjws",
            b'{"schemaVersion": 1, "name": "bad/app", "fsLayers": []}',
        ),
    ),
    Case(
        "manifest-wrong-digest",
        "source",
        "GET",
        r"^/v2/bad/app/manifests/",
        lambda s: answer(
            lambda: web.Response(
                body=GOOD.raw,
                headers={"Content-Type": DOCKER_MANIFEST, "Docker-Content-Digest": BAD.digest},
            )
        ),
        "tag",
        "does not match",
    ),
    Case(
        "index-child-invalid-digest",
        "source",
        "GET",
        r"^/nothing$",
        lambda s: answer(web.Response),
        "tag",
        "invalid digest",
        setup=raw_manifest(
            "application/vnd.oci.image.index.v1+json",
            _index_with({"mediaType": DOCKER_MANIFEST, "digest": "sha256:xyz", "size": 10}),
        ),
    ),
    Case(
        "descriptor-negative-size",
        "source",
        "GET",
        r"^/nothing$",
        lambda s: answer(web.Response),
        "tag",
        "invalid size",
        setup=raw_manifest(
            "application/vnd.oci.image.index.v1+json",
            _index_with({"mediaType": DOCKER_MANIFEST, "digest": GOOD.digest, "size": -1}),
        ),
    ),
    Case(
        "layer-media-type-off-the-grammar",
        "source",
        "GET",
        r"^/nothing$",
        lambda s: answer(web.Response),
        "tag",
        r"has an invalid mediaType 'application/x\\r\\nX-Evil: 1'",
        setup=raw_manifest(DOCKER_MANIFEST, _with_layer_type("application/x\r\nX-Evil: 1")),
    ),
    Case(
        "blob-wrong-bytes",
        "source",
        "GET",
        rf"^/v2/bad/app/blobs/{BAD_LAYER}$",
        bad_blob(b"x" * 3000),
        "tag",
        "does not match its digest",
    ),
    Case(
        "blob-too-long",
        "source",
        "GET",
        rf"^/v2/bad/app/blobs/{BAD_LAYER}$",
        bad_blob(b"x" * 9000),
        "tag",
        "more than the expected",
    ),
    Case(
        "head-without-digest-header",
        "source",
        "HEAD",
        r"^/v2/bad/app/manifests/1$",
        lambda s: answer(lambda: web.Response(headers={"Content-Type": DOCKER_MANIFEST})),
        "ok",
        "",
    ),
    Case(
        "rate-limited-for-an-hour",
        "source",
        "GET",
        r"^/v2/bad/app/manifests/",
        lambda s: answer(
            lambda: web.Response(status=429, headers={"Retry-After": "3600"}, text="slow down")
        ),
        "tag",
        "429",
    ),
    Case(
        "error-body-not-json",
        "source",
        "GET",
        rf"^/v2/bad/app/blobs/{BAD_LAYER}$",
        lambda s: answer(lambda: web.Response(status=500, text="<html>oops</html>")),
        "tag",
        "-> 500",
    ),
    Case(
        "unauthorized-garbage-challenge",
        "source",
        "GET",
        r"^/v2/bad/app/manifests/",
        lambda s: answer(
            lambda: web.Response(status=401, headers={"WWW-Authenticate": "Weird ,,, ==="})
        ),
        "tag",
        "401|authenticat",
    ),
    Case(
        "upload-without-location",
        "destination",
        "POST",
        r"^/v2/mirror/bad/app/blobs/uploads",
        lambda s: answer(lambda: web.Response(status=202)),
        "tag",
        "no Location header",
    ),
    Case(
        "upload-location-bad-scheme",
        "destination",
        "POST",
        r"^/v2/mirror/bad/app/blobs/uploads",
        lambda s: answer(lambda: web.Response(status=202, headers={"Location": "ftp://x/y"})),
        "tag",
        "not usable",
    ),
    Case(
        "manifest-put-echoes-other-digest",
        "destination",
        "PUT",
        r"^/v2/mirror/bad/app/manifests/",
        lambda s: answer(
            lambda: web.Response(status=201, headers={"Docker-Content-Digest": GOOD.digest})
        ),
        "tag",
        "registry stored",
    ),
    Case(
        "dest-tags-bad-json",
        "destination",
        "GET",
        r"^/v2/mirror/bad/app/tags/list$",
        lambda s: answer(lambda: web.Response(text="]")),
        "repo",
        "invalid JSON",
    ),
]


def rule_result(summary: list[RuleResult]) -> RuleResult:
    (only,) = summary
    return only


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
async def test_hostile_response_is_a_clear_scoped_error(case: Case) -> None:
    async with ScriptedRegistry() as src, ScriptedRegistry() as dst:
        src.add("good/app", "1", GOOD)
        src.add("bad/app", "1", BAD)
        if case.setup is not None:
            case.setup(src)
        target = src if case.side == "source" else dst
        target.override(case.method, case.path, case.respond(target))  # type: ignore[arg-type]
        config = parse_config(
            plain_yaml(src, dst, mirror_rule(src, dst, "*/app", "/mirror", name="h"))
        )
        result = await run(config, config.rules, retry=FAST, timeouts=TIMEOUTS)
    r = rule_result(result.rules)
    errors = "\n".join(r.errors)
    good_copied = dst.tags.get("mirror/good/app", {}).get("1") == GOOD.digest
    bad_tag = dst.tags.get("mirror/bad/app", {}).get("1")
    if case.level == "ok":
        assert r.result == "success" and good_copied and bad_tag == BAD.digest, errors
        return
    assert re.search(case.message, errors), errors
    assert bad_tag is None, "a tag was pushed despite the error"
    if case.level == "rule":
        assert r.result == "failed" and r.copied == 0
        return
    assert r.result == "partial" and good_copied, (r.result, errors)
    assert r.copied == 1
    assert len(r.errors) == 1 and r.errors[0].startswith("bad/app"), errors
    if case.level == "tag":
        assert r.failed == 1
    else:
        assert r.failed == 0  # the repo was skipped before any tag was tried


def test_there_are_at_least_fifteen_hostile_cases() -> None:
    assert len({c.id for c in CASES}) == len(CASES) >= 15


def test_the_platforms_an_index_offers_are_shown_escaped_and_few() -> None:
    """A tag failing a platform subset names what the index has: from the source, so each
    escaped and only a few, however many it lists (one error could otherwise be megabytes)."""
    from regsync.errors import ManifestError
    from regsync.oci.manifest import parse_manifest
    from regsync.platforms import PlatformFilter, subset_index

    entries = [
        {
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": "sha256:" + f"{n:064x}",
            "size": 1,
            "platform": {"os": f"os{n}\n2026 ERROR forged" + "x" * 500, "architecture": "a"},
        }
        for n in range(2000)
    ]
    raw = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": entries,
        }
    ).encode()
    index = parse_manifest(raw, "application/vnd.oci.image.index.v1+json")
    with pytest.raises(ManifestError) as caught:
        subset_index(index, PlatformFilter.parse(["linux/amd64"]))
    text = str(caught.value)
    assert text.isprintable() and len(text) < 2000, len(text)
    assert text.endswith("and 1990 more)"), text[-80:]


@pytest.mark.parametrize(
    "field",
    [
        {"digest": "x" * 1_000_000, "size": 1},
        {"digest": "sha256:" + "0" * 64, "size": ["y" * 1_000_000]},
    ],
)
def test_a_bad_descriptor_is_quoted_short(field: dict[str, object]) -> None:
    """A manifest's bad digest or size is quoted cut short (its log line and error stay
    small), however long the manifest made it."""
    from regsync.errors import ManifestError
    from regsync.oci.manifest import parse_manifest

    kind = "application/vnd.oci.image.manifest.v1+json"
    raw = json.dumps({"schemaVersion": 2, "mediaType": kind, "config": field, "layers": []})
    with pytest.raises(ManifestError) as caught:
        parse_manifest(raw.encode(), kind)
    assert len(str(caught.value)) < 500


def test_an_unknown_media_type_is_quoted_short() -> None:
    from regsync.errors import ManifestError
    from regsync.oci.manifest import parse_manifest

    raw = json.dumps({"schemaVersion": 2, "mediaType": "z" * 1_000_000}).encode()
    with pytest.raises(ManifestError) as caught:
        parse_manifest(raw)
    assert len(str(caught.value)) < 500
