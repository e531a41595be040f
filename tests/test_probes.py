"""Probes of hostile answers and crossed features that no other module covers.

What an attacker or a demanding operator tries against a released mirror: userinfo in an upload
Location or a redirect, an unusable token realm, duplicate and over-long names, malformed
layout descriptors and manifests, absurd RateLimit numbers, index chains, error text that would
forge log lines; and htpasswd + glob + `{path}` + prune + shards settling. Each asserts digests,
counts and exit codes against scripted registries (or real ones for the crossed case).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from aiohttp import web

from regsync.backends.registry.ratelimit import MAX_PAUSE, parse_quota
from tests.support import (
    Blob,
    Image,
    Summary,
    TlsFiles,
    layout_import_yaml,
    plain_config,
    plain_mirror_config,
    push,
    regsync_json,
    regsync_json_async,
    write_config,
)
from tests.support.images import Index
from tests.support.matrix import start_pair
from tests.support.scripted import ScriptedRegistry
from tests.test_secrets import DST_CANARY, DST_WRITER, FAST, assert_clean, forms, guard_with


async def once(
    tmp_path: Path,
    src: ScriptedRegistry,
    dst: ScriptedRegistry,
    source: str,
    dest: str = "",
    *,
    src_keys: str = "",
    dst_keys: str = "",
    env: dict[str, str] = FAST,
) -> Summary:
    """``regsync once --json`` of one rule ``p`` from ``src/source`` to ``dst`` (plus ``dest``)."""
    config = plain_mirror_config(
        tmp_path, src, dst, source, dest, src_keys=src_keys, dst_keys=dst_keys
    )
    return await regsync_json_async("once", config, env=env)


@pytest.mark.parametrize("userinfo", ["attacker@", "attacker:pw@", "writer:other@"])
async def test_userinfo_in_an_own_origin_upload_location(tmp_path: Path, userinfo: str) -> None:
    """An upload Location on the registry's own origin carrying userinfo: the URL's userinfo is
    never sent as credentials (nor combined with ours), and the run ends with a summary."""
    image = Image.oci([Blob.random(3000, seed="probe-userinfo")])
    async with ScriptedRegistry() as src, ScriptedRegistry() as dst:
        src.add("team/app", "1", image)
        accepted = guard_with(dst, "basic", "writer", DST_CANARY)
        sent: list[str] = []

        async def record(request: web.Request, match: re.Match[str]) -> None:
            sent.append(request.headers.get("Authorization", ""))
            return None

        async def with_userinfo(request: web.Request, match: re.Match[str]) -> web.Response | None:
            if request.headers.get("Authorization") != accepted:
                return None  # the guard answers
            response = await dst._default(request)
            location = response.headers["Location"]
            response.headers["Location"] = f"http://{userinfo}{dst.host}{location}"
            return response

        dst.override("*", r"^/v2/mirror/team/app/blobs/uploads/", record)
        dst.override("POST", r"^/v2/mirror/team/app/blobs/uploads/$", with_userinfo)
        code, summary, stderr = await once(
            tmp_path,
            src,
            dst,
            "team/*",
            "/mirror",
            dst_keys=DST_WRITER,
            env={**FAST, "DST_PASSWORD": DST_CANARY},
        )
    (rule,) = summary["rules"]
    assert "Traceback" not in stderr, stderr
    assert sent and set(sent) <= {accepted, ""}, sent  # never the URL's userinfo
    assert code in (0, 1), stderr
    if code == 0:
        assert dst.tags["mirror/team/app"]["1"] == image.digest
    else:
        assert rule["tags"]["failed"] == 1 and "Location" in rule["errors"][0], rule
    assert_clean(json.dumps(summary) + stderr, forms("writer", DST_CANARY))


async def test_duplicate_names_in_listings_are_one_repository_and_one_tag(tmp_path: Path) -> None:
    """A catalog listing a repository twice and a tag list naming a tag twice (an attacker's
    or a buggy registry's paging): one plan per repository, one copy per tag, prune counts
    right, and `check` right after settles."""
    one = Image.oci([Blob.random(1500, seed="probe-dup-1")])
    two = Image.oci([Blob.random(1500, seed="probe-dup-2")])
    async with ScriptedRegistry() as src, ScriptedRegistry() as dst:
        dst.tag_deletes = True
        src.add("team/app", "1", one)
        src.add("team/app", "2", two)
        dst.add("mirror/team/app", "old", Image.oci([Blob.random(1500, seed="probe-dup-old")]))

        async def catalog(request: web.Request, match: re.Match[str]) -> web.Response:
            return web.json_response({"repositories": ["team/app", "team/app"]})

        async def tags(request: web.Request, match: re.Match[str]) -> web.Response:
            return web.json_response({"name": "team/app", "tags": ["1", "2", "1", "2"]})

        src.override("GET", r"^/v2/_catalog$", catalog)
        src.override("GET", r"^/v2/team/app/tags/list$", tags)
        config = plain_config(
            tmp_path,
            src,
            dst,
            f"""
            - name: p
              source: "{src.host}/team/*"
              destination: "{dst.host}/mirror"
              prune: {{max_fraction: 1}}
            """,
        )
        code, summary, stderr = await regsync_json_async("once", config, env=FAST)
        check = await regsync_json_async("check", config, env=FAST)
        puts = dst.count("PUT", r"^/v2/mirror/team/app/manifests/")
    (rule,) = summary["rules"]
    assert code == 0, stderr
    assert rule["repos"] == 1, rule
    assert rule["tags"] == {"copied": 2, "up_to_date": 0, "pruned": 1, "failed": 0}, rule
    assert dst.tags["mirror/team/app"] == {"1": one.digest, "2": two.digest}
    assert puts == 2
    assert check.code == 0 and check.data["ok"] is True, check.stderr


async def test_a_source_name_too_long_once_mapped_is_skipped_and_the_rest_mirror(
    tmp_path: Path,
) -> None:
    """A valid source repository whose destination (host + prefix + name) passes the 255
    character limit: that repository is skipped with an error naming it, the others mirror,
    the run exits 1, and nothing is sent for the long name."""
    good = Image.oci([Blob.random(1500, seed="probe-long-good")])
    long_repo = "team/" + "a" * 231  # 15 (host) + 1 + 236 = 252 at the source; 259 mapped
    async with ScriptedRegistry() as src, ScriptedRegistry() as dst:
        src.add("team/app", "1", good)
        src.add(long_repo, "1", Image.oci([Blob.random(1500, seed="probe-long-bad")]))
        code, summary, stderr = await once(tmp_path, src, dst, "team/*", "/mirror")
        sent = [p for _, p in dst.requests if "aaaa" in p]
    (rule,) = summary["rules"]
    assert code == 1, stderr
    assert dst.tags["mirror/team/app"] == {"1": good.digest}
    assert rule["tags"]["copied"] == 1, rule
    (error,) = rule["errors"]
    assert "aaaa" in error and "not a valid name" in error, error
    assert sent == []
    assert "Traceback" not in stderr


async def test_layout_index_entries_with_broken_descriptors_fail_only_their_tag(
    tmp_path: Path,
) -> None:
    """A layout ``index.json`` whose entries carry a short digest, a negative size, a number
    as media type, a list as annotations, non-object entries: each bad tag fails (or is
    ignored) with its own error, the good tag is imported, no traceback."""
    good = Image.oci([Blob.random(1500, seed="probe-layout-good")])
    layout = tmp_path / "layout"
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    for m in good.walk():
        (blobs / m.digest[7:]).write_bytes(m.raw)
        for blob in m.blobs:
            (blobs / blob.digest[7:]).write_bytes(blob.data)
    desc = good.descriptor()

    def named(tag: str) -> dict[str, object]:
        return {"org.opencontainers.image.ref.name": f"good/app:{tag}", "x": 1}

    entries: list[object] = [
        {**desc, "annotations": named("v1")},
        {**desc, "digest": "sha256:abc", "annotations": named("short")},
        {**desc, "size": -1, "annotations": named("negative")},
        {**desc, "mediaType": 7, "annotations": named("mediatype")},
        {**desc, "annotations": ["good/app:list"]},
        "good/app:string",
        17,
        None,
    ]
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": entries}))
    async with ScriptedRegistry() as dst:
        config = write_config(tmp_path, layout_import_yaml(layout, dst, name="i"))
        code, summary, stderr = await regsync_json_async("once", config, env=FAST)
    (rule,) = summary["rules"]
    assert "Traceback" not in stderr, stderr
    assert code == 1, (stderr, summary)
    assert dst.tags["mirror/good/app"]["v1"] == good.digest
    assert rule["tags"]["copied"] >= 1, rule
    for tag in ("short", "negative"):
        assert tag not in dst.tags["mirror/good/app"], dst.tags
        assert any(tag in e for e in rule["errors"]), rule["errors"]


async def test_one_malformed_source_manifest_fails_only_its_tag(tmp_path: Path) -> None:
    """A source tag whose HEAD carries no digest and whose manifest is not JSON: that tag is
    reported, the repository's other tags are still copied (it used to fail the repository)."""
    good = Image.oci([Blob.random(1500, seed="probe-malformed-good")])
    async with ScriptedRegistry() as src, ScriptedRegistry() as dst:
        src.add("team/app", "1", good)
        src.put_raw("team/app", "bad", "application/vnd.oci.image.manifest.v1+json", b"{no")

        async def no_digest(request: web.Request, match: re.Match[str]) -> web.Response:
            return web.Response(headers={"Content-Type": "application/json"})

        src.override("HEAD", r"^/v2/team/app/manifests/bad$", no_digest)
        code, summary, stderr = await once(tmp_path, src, dst, "team/*", "/mirror")
    (rule,) = summary["rules"]
    assert code == 1, stderr
    assert dst.tags["mirror/team/app"] == {"1": good.digest}
    assert rule["tags"]["copied"] == 1, rule
    (error,) = rule["errors"]
    assert error.startswith("team/app: skipped source tag 'bad': "), error


async def test_a_redirect_with_userinfo_fails_its_tag_cleanly(tmp_path: Path) -> None:
    """A source behind Basic auth redirects a blob GET to its own origin with userinfo in the
    URL: aiohttp refuses to combine that with our Authorization; the tag fails with an error
    naming the GET (it used to name the upload it fed), and the other repository is copied."""
    good = Image.oci([Blob.random(1500, seed="probe-redirect-good")])
    bad = Image.oci([Blob.random(1500, seed="probe-redirect-bad")])
    async with ScriptedRegistry() as src, ScriptedRegistry() as dst:
        src.add("team/good", "1", good)
        src.add("team/bad", "1", bad)
        guard_with(src, "basic", "reader", DST_CANARY)
        layer = bad.blobs[0].digest

        async def redirect(request: web.Request, match: re.Match[str]) -> web.Response | None:
            if "Authorization" not in request.headers:
                return None
            target = f"http://x:y@{src.host}/v2/team/bad/blobs/{layer}?again=1"
            return web.Response(status=307, headers={"Location": target})

        src.override("GET", rf"^/v2/team/bad/blobs/{layer}$", redirect)
        code, summary, stderr = await once(
            tmp_path,
            src,
            dst,
            "team/*",
            "/mirror",
            src_keys='credentials: {username: reader, password: "${DST_PASSWORD}"}',
            env={**FAST, "DST_PASSWORD": DST_CANARY},
        )
    (rule,) = summary["rules"]
    assert code == 1, stderr
    assert "Traceback" not in stderr and "internal error" not in stderr, stderr
    assert dst.tags["mirror/team/good"] == {"1": good.digest}
    assert "mirror/team/bad" not in dst.tags
    (error,) = rule["errors"]
    # The error names the request that failed (the redirected GET), not the upload it fed.
    assert error.startswith("team/bad:1: ") and f"GET /v2/team/bad/blobs/{layer}" in error, error
    assert_clean(json.dumps(summary) + stderr, forms("reader", DST_CANARY))


@pytest.mark.parametrize(
    "realm", ["http://[bad/token", "http://h:99999/token", "/token", "ftp://h/t"]
)
async def test_an_unusable_token_realm_fails_the_rule_with_one_clear_error(
    tmp_path: Path, realm: str
) -> None:
    """A source's Bearer challenge names a realm that is no usable URL: the rule fails with
    an error naming the registry (no internal error, no traceback), exit 1, JSON intact."""
    async with ScriptedRegistry() as src, ScriptedRegistry() as dst:
        src.add("team/app", "1", Image.oci([Blob.random(1500, seed="probe-realm")]))

        async def challenge(request: web.Request, match: re.Match[str]) -> web.Response:
            header = f'Bearer realm="{realm}",service="s"'
            return web.Response(status=401, headers={"WWW-Authenticate": header})

        src.override("*", r"^/v2/", challenge)
        code, summary, stderr = await once(tmp_path, src, dst, "team/app", "/mirror")
    (rule,) = summary["rules"]
    assert code == 1 and summary["ok"] is False, stderr
    assert "Traceback" not in stderr and "internal error" not in stderr, stderr
    assert rule["errors"] and src.host in rule["errors"][0] and "realm" in rule["errors"][0], rule
    assert dst.tags == {}


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"RateLimit-Remaining": "9" * 5000}, None),
        ({"RateLimit-Remaining": "7;w=" + "9" * 400}, (7, 60.0)),
        ({"RateLimit-Remaining": "7;w=999999999999"}, (7, MAX_PAUSE)),
        ({"RateLimit-Remaining": "7", "RateLimit-Reset": "9" * 5000}, (7, 60.0)),
        ({"RateLimit-Remaining": "0;w=21600"}, (0, 21600.0)),
    ],
)
def test_quota_headers_with_absurd_numbers(
    headers: dict[str, str], expected: tuple[int, float] | None
) -> None:
    """A registry's RateLimit numbers are bounded where they are read: a count too long for
    int() is no count (it was a ValueError on every response), and no window or reset pauses
    pulls for more than a day (an endless `w=` made `once` wait forever)."""
    quota = parse_quota(headers)
    assert (quota and (quota.remaining, quota.pause)) == expected


async def test_a_registry_sending_a_huge_remaining_count_still_mirrors(tmp_path: Path) -> None:
    image = Image.oci([Blob.random(1500, seed="probe-quota")])
    async with ScriptedRegistry() as src, ScriptedRegistry() as dst:
        src.add("team/app", "1", image)

        async def quota(request: web.Request, match: re.Match[str]) -> web.StreamResponse:
            response = await src._default(request)
            response.headers["RateLimit-Remaining"] = "9" * 5000
            return response

        src.override("*", r"^/v2/", quota)
        code, summary, stderr = await once(
            tmp_path, src, dst, "team/app", src_keys="rate_limit: {min_remaining: 5}"
        )
    assert code == 0, (stderr, summary)
    assert dst.tags["team/app"] == {"1": image.digest}


async def test_indexes_nested_deeper_than_any_image_are_refused_not_walked(tmp_path: Path) -> None:
    """A source tag whose index nests an index nesting an index ... 30 deep: copied whole
    (no platform filter), the walk stops at the nesting bound the platform filter already
    has, instead of one source GET per level; the other tag is copied."""
    good = Image.oci([Blob.random(1500, seed="probe-nest-good")])
    chain = Image.oci([Blob.random(1500, seed="probe-nest-leaf")])
    for _ in range(30):
        chain = Index.oci([chain])
    async with ScriptedRegistry() as src, ScriptedRegistry() as dst:
        src.add("team/app", "good", good)
        src.add("team/app", "deep", chain)
        code, summary, stderr = await once(tmp_path, src, dst, "team/app")
        gets = src.count("GET", r"/manifests/")
    (rule,) = summary["rules"]
    assert code == 1, stderr
    assert dst.tags["team/app"] == {"good": good.digest}
    (error,) = rule["errors"]
    assert error.startswith("team/app:deep: ") and "nested" in error, error
    assert gets <= 12, gets


async def test_a_registry_error_message_cannot_forge_log_lines(tmp_path: Path) -> None:
    """An error body whose message and code hold newlines and terminal escapes: every line the
    run prints is still one of regsync's own (the text is escaped), in the log, the text
    summary and the JSON errors."""
    forged = "2026-01-01T00:00:00 INFO    rule p: success FORGED"
    async with ScriptedRegistry() as src, ScriptedRegistry() as dst:
        src.add("team/app", "1", Image.oci([Blob.random(1500, seed="probe-forge")]))

        async def hostile(request: web.Request, match: re.Match[str]) -> web.Response:
            body = {"errors": [{"code": "DENIED\n" + forged, "message": f"no\n{forged}\x1b[2J"}]}
            return web.json_response(body, status=403)

        src.override("GET", r"^/v2/team/app/tags/list$", hostile)
        code, summary, stderr = await once(tmp_path, src, dst, "team/app")
    (rule,) = summary["rules"]
    assert code == 1, stderr
    assert "FORGED" in stderr  # the text is shown, escaped ...
    assert not [line for line in stderr.splitlines() if line.startswith(forged[:19])], stderr
    assert "\x1b" not in stderr  # ... and no terminal escape reaches the terminal
    assert rule["errors"] and all("\n" not in e and "\x1b" not in e for e in rule["errors"])


def test_htpasswd_glob_path_template_prune_and_shards_settle(
    tmp_path: Path, tls_ca: TlsFiles
) -> None:
    """Crossed as a site runs it: htpasswd over TLS both sides, `ns/**` into `m/{path}` with
    prune and shared layers, two shards (`--shard 0/2`, `1/2`) each run once: together they
    mirror every repository exactly, prune the stale tag, and `check` (whole, and per shard)
    exits 0 right after."""
    pair = start_pair("htpasswd", tmp_path / "regs", tls_ca, None)
    try:
        base = Blob.random(4000, seed="probe-cross-base")
        images = {
            (repo, tag): Image.docker([base, Blob.random(1500, seed=f"probe-{repo}-{tag}")])
            for repo in ("ns/a", "ns/deep/b", "ns/deep/er/c")
            for tag in ("1", "2")
        }
        for (repo, tag), image in images.items():
            push(pair.src, repo, tag, image)
        stale = Image.docker([base, Blob.random(1500, seed="probe-cross-stale")])
        push(pair.dst, "m/ns/deep/b", "gone", stale)
        push(pair.dst, "m/ns/deep/b", "1", images[("ns/deep/b", "1")])  # 1 of 2 goes: allowed
        config = write_config(
            tmp_path,
            pair.registries_yaml()
            + f"version: 1\nrules:\n  - name: x\n    source: {pair.src.host}/ns/**\n"
            f"    destination: {pair.dst.host}/m/{{path}}\n    prune: true\n",
        )
        runs = [regsync_json("once", config, "--shard", f"{i}/2") for i in (0, 1)]
        for run in runs:
            assert run.code == 0, run.stderr
        repos = sum(r.rule["repos"] for r in runs)
        counts = [sum(r.rule["tags"][k] for r in runs) for k in ("copied", "up_to_date", "pruned")]
        assert (repos, counts) == (3, [5, 1, 1]), [r.rule for r in runs]
        for (repo, tag), image in images.items():
            assert pair.dst.manifest_digest(f"m/{repo}", tag) == image.digest
        assert pair.dst.manifest_digest("m/ns/deep/b", "gone") is None
        for args in ((), ("--shard", "0/2"), ("--shard", "1/2")):
            check = regsync_json("check", config, *args)
            assert check.code == 0 and check.data["ok"] is True, check.stderr
    finally:
        pair.stop()
