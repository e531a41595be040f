"""Bounded in time and memory whatever a source sends: deep JSON, trickling bodies, hostile tags.

Each integration case runs ``regsync`` as a user would (a subprocess, in a thread) against a
scripted source in the test's own event loop, and asserts that the run ended (the pytest
timeout is the bound), exited 1 with the error named, printed its JSON summary, and that the
source's other repositories were still copied.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from regsync import boundedjson
from regsync.backends.registry.pace import at_least, destination_time
from regsync.backends.registry.retry import RetryPolicy, Timeouts
from regsync.config import parse_config
from regsync.errors import ConfigError, ManifestError, TransportError
from regsync.oci.manifest import parse_manifest
from regsync.runner import run
from tests.support import Blob, Image
from tests.support.cli import (
    FAST_RETRIES,
    Summary,
    layout_import_yaml,
    mirror_rule,
    plain_config,
    plain_yaml,
    regsync_json,
)
from tests.support.scripted import ScriptedRegistry

GOOD = Image.docker([Blob.random(3000, seed="good")])
BAD = Image.docker([Blob.random(3000, seed="bad")], labels={"bad": "yes"})
DEEP = b"[" * 100_000 + b"]" * 100_000
FAST = RetryPolicy(attempts=2, initial=0.01, maximum=0.02, max_retry_after=5)


# -- the JSON parse helper ----------------------------------------------------------------------


def test_bounded_json_refuses_deep_nesting_before_parsing() -> None:
    with pytest.raises(ValueError, match="JSON nested deeper than 64 levels"):
        boundedjson.loads(DEEP)
    with pytest.raises(ValueError, match="deeper than 64"):
        boundedjson.loads('{"a":' * 65 + "1" + "}" * 65)
    assert boundedjson.loads("[" * 64 + "]" * 64) == eval("[" * 63 + "[]" + "]" * 63)


def test_bounded_json_does_not_count_brackets_inside_strings() -> None:
    text = json.dumps({"s": "[" * 1000 + '\\"{' * 100, "t": ["]]]", "{{{"]})
    assert boundedjson.loads(text)["t"] == ["]]]", "{{{"]
    many = json.dumps([{"a": [1]} for _ in range(5000)])  # wide is fine, only depth is bounded
    assert len(boundedjson.loads(many)) == 5000


def test_bounded_json_refuses_a_text_denser_in_objects_than_real_documents() -> None:
    """`[{},{},...]` builds ~70 bytes of objects per 3 bytes of text (16 MiB: ~400 MiB of
    RSS): refused before parsing. Real documents (an index of 20,000 platform manifests, a
    page of 10,000 tags, small ones of any shape) parse as before."""
    dense = b"[" + b"{}," * 5_000_000 + b"{}]"
    with pytest.raises(boundedjson.JSONTooDenseError, match="objects and arrays in"):
        boundedjson.loads(dense)
    descriptor = {
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": "sha256:" + "a" * 64,
        "size": 1234,
        "platform": {"architecture": "arm64", "os": "linux"},
        "annotations": {},
    }
    index = json.dumps({"schemaVersion": 2, "manifests": [descriptor] * 20_000})
    assert len(boundedjson.loads(index)["manifests"]) == 20_000
    tags = json.dumps({"name": "team/app", "tags": [f"v{n}" for n in range(10_000)]})
    assert len(boundedjson.loads(tags)["tags"]) == 10_000
    assert boundedjson.loads("[" + "{}," * 9_000 + "{}]")[0] == {}


def test_deeply_nested_manifest_is_a_manifest_error() -> None:
    with pytest.raises(ManifestError, match="nested deeper than 64 levels"):
        parse_manifest(b'{"schemaVersion": 2, "x": ' + DEEP + b"}")


# -- a scripted source misbehaving about one repository -----------------------------------------


def two_rules(tmp_path: Path, src: ScriptedRegistry, dst: ScriptedRegistry) -> Path:
    """Rule `glob` lists the catalog; rule `good` names good/app and needs no listing."""
    return plain_config(
        tmp_path,
        src,
        dst,
        f"""
        - name: glob
          source: {src.host}/*/app
          destination: {dst.host}/mirror
        - name: good
          source: {src.host}/good/app
          destination: {dst.host}/single
        """,
    )


async def run_once(config: Path, **env: str) -> Summary:
    """``regsync once --json`` in a thread, so the scripted registries keep serving."""
    return await asyncio.to_thread(
        regsync_json, "once", config, env={**FAST_RETRIES, **env}, timeout=60
    )


def rules_by_name(summary: Summary) -> dict[str, dict[str, object]]:
    return {r["name"]: r for r in summary.data["rules"]}


@pytest.mark.timeout(60)
async def test_nested_catalog_fails_its_rule_and_the_good_rule_still_mirrors(
    tmp_path: Path,
) -> None:
    async with ScriptedRegistry() as src, ScriptedRegistry() as dst:
        src.add("good/app", "1", GOOD)

        async def deep(request: web.Request, match: re.Match[str]) -> web.StreamResponse:
            return web.Response(body=DEEP, content_type="application/json")

        src.override("GET", r"^/v2/_catalog$", deep)
        run = await run_once(two_rules(tmp_path, src, dst))
    rules = rules_by_name(run)
    assert run.code == 1, run.stderr
    assert "Traceback" not in run.stderr and "RecursionError" not in run.stderr
    assert rules["glob"]["result"] == "failed"
    assert any("nested deeper than 64 levels" in e for e in rules["glob"]["errors"])  # type: ignore[attr-defined]
    assert rules["good"]["result"] == "success"
    assert dst.tags["single/good/app"]["1"] == GOOD.digest


async def trickle(request: web.Request, body: bytes, pause: float) -> web.StreamResponse:
    """Answer 200 with the right length, then send one byte every ``pause`` seconds (at most
    300 bytes), stopping as soon as the client goes away."""
    response = web.StreamResponse(headers={"Content-Length": str(len(body))})
    response.content_type = "application/octet-stream"
    await response.prepare(request)
    for byte in body[:300]:
        try:
            await response.write(bytes([byte]))
        except (ConnectionError, RuntimeError):
            break
        await asyncio.sleep(pause)
    return response


TRICKLED = {
    # which request trickles: (path, the error it must end in)
    "blob": (rf"^/v2/bad/app/blobs/{BAD.blobs[-1].digest}$", r"slower than 100000 bytes/s"),
    "manifest": (r"^/v2/bad/app/manifests/", r"did not finish within 2s"),
    "tag-list": (r"^/v2/bad/app/tags/list$", r"did not finish within 2s"),
}


@pytest.mark.parametrize("what", list(TRICKLED))
@pytest.mark.timeout(90)
async def test_trickling_source_fails_that_repository_and_the_run_ends(
    tmp_path: Path, what: str
) -> None:
    path, message = TRICKLED[what]
    async with ScriptedRegistry() as src, ScriptedRegistry() as dst:
        src.add("good/app", "1", GOOD)
        src.add("bad/app", "1", BAD)

        async def slow(request: web.Request, match: re.Match[str]) -> web.StreamResponse | None:
            if request.method != "GET":
                return None
            if what == "blob":
                body = BAD.blobs[-1].data
            elif what == "manifest":
                body = BAD.raw
            else:
                body = json.dumps({"name": "bad/app", "tags": ["1"]}).encode() + b" " * 200
            return await trickle(request, body, 0.05)

        src.override("GET", path, slow)
        env = {
            "REGSYNC_REQUEST_TIMEOUT": "2",
            "REGSYNC_MIN_RATE": "100000",
            "REGSYNC_RATE_WINDOW": "1",
        }
        run = await run_once(two_rules(tmp_path, src, dst), **env)
    rules = rules_by_name(run)
    glob_errors = "\n".join(rules["glob"]["errors"])  # type: ignore[arg-type]
    assert run.code == 1, run.stderr
    assert rules["glob"]["result"] == "partial", glob_errors
    assert re.search(message, glob_errors), glob_errors
    assert glob_errors.startswith("bad/app"), glob_errors
    assert dst.tags["mirror/good/app"]["1"] == GOOD.digest
    assert "1" not in dst.tags.get("mirror/bad/app", {})
    assert rules["good"]["result"] == "success"
    assert src.count("GET", path) >= 2  # retried, then given up: the retry policy bounds it


@pytest.mark.timeout(60)
async def test_catastrophic_include_against_a_long_listed_tag_and_explain(tmp_path: Path) -> None:
    long_tag = "a" * 40 + "b"  # (a+)+ backtracks 2^40 times on this in Python's re
    async with ScriptedRegistry() as src, ScriptedRegistry() as dst:
        src.add("good/app", "a" * 40, GOOD)
        src.add("good/app", long_tag, GOOD)
        config = plain_config(
            tmp_path,
            src,
            dst,
            f"""
            - name: r
              source: {src.host}/good/app
              destination: {dst.host}/m
              tags: {{include: ['(a+)+']}}
            """,
        )
        run = await asyncio.to_thread(
            regsync_json, "check", config, "--explain", env=FAST_RETRIES, timeout=30
        )
    assert run.code == 1, run.stderr  # check: 1 = something would be copied
    (plan,) = run.data["plan"]
    text = json.dumps(plan)
    assert "a" * 40 in text and long_tag in text
    assert "matches no include pattern" in text


# -- the minimum rate, without sockets ----------------------------------------------------------


async def _source(chunks: int, size: int, pause: float) -> AsyncIterator[bytes]:
    for _ in range(chunks):
        await asyncio.sleep(pause)
        yield b"x" * size


async def _stalling(chunks: int, size: int) -> AsyncIterator[bytes]:
    """``chunks`` chunks at once, then nothing ever again (a server holding the body open)."""
    for _ in range(chunks):
        yield b"x" * size
    await asyncio.Event().wait()


async def test_min_rate_fails_a_source_averaging_under_it_over_a_window() -> None:
    paced = at_least(_stalling(5, 1), 1000, 0.2, "src", "GET /v2/a/blobs/x")
    got = 0
    with pytest.raises(
        TransportError, match=r"src: GET /v2/a/blobs/x is slower than 1000 bytes/s over 0.2s \(5 "
    ):
        async for chunk in paced:
            got += len(chunk)
    assert got == 5  # the window ran out on the stalled source, whatever the machine's load


async def test_min_rate_does_not_count_a_slow_consumer_against_the_source() -> None:
    chunks = [c async for c in _slow_consumer(at_least(_source(3, 300, 0), 1000, 0.2, "s", "x"))]
    assert chunks == [b"x" * 300] * 3


async def _slow_consumer(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    async for chunk in chunks:
        await asyncio.sleep(0.3)  # longer than the window, spent by us, not the source
        yield chunk


def test_request_deadline_and_min_rate_from_the_environment() -> None:
    env = {"REGSYNC_REQUEST_TIMEOUT": "30", "REGSYNC_MIN_RATE": "0", "REGSYNC_RATE_WINDOW": "5"}
    t = Timeouts.from_env(env)
    assert (t.total, t.min_rate, t.rate_window) == (30, 0, 5)
    assert t.for_body(0) == 30 and t.for_body(1) is None  # no minimum rate: no body deadline
    default = Timeouts()
    assert (default.total, default.min_rate, default.rate_window) == (300, 1024, 60)
    assert default.for_body(1024 * 1024) == 300 + 1024
    with pytest.raises(ConfigError, match="REGSYNC_RATE_WINDOW"):
        Timeouts.from_env({"REGSYNC_RATE_WINDOW": "0"})


# -- nested JSON in any answer fails just that repository or tag --------------------------------

NESTED = {
    # path answered with 100,000 nested brackets: (status, the bad repo's error must say)
    "tag-list": (r"^/v2/bad/app/tags/list$", 200, "invalid JSON from 127.0.0.1: JSON nested"),
    "manifest": ("", 200, "manifest is not valid JSON: JSON nested"),  # stored as the tag
    "error-body": (r"^/v2/bad/app/manifests/", 400, r"-> 400"),
}


@pytest.mark.parametrize("what", list(NESTED))
@pytest.mark.timeout(60)
async def test_nested_json_answer_fails_only_that_repository(what: str) -> None:
    path, status, message = NESTED[what]
    async with ScriptedRegistry() as src, ScriptedRegistry() as dst:
        src.add("good/app", "1", GOOD)
        src.add("bad/app", "1", BAD)

        async def deep(request: web.Request, match: re.Match[str]) -> web.StreamResponse:
            return web.Response(status=status, body=DEEP, content_type="application/json")

        if path:
            src.override("GET", path, deep)
        else:
            raw = b'{"schemaVersion": 2, "x": ' + DEEP + b"}"
            src.put_raw("bad/app", "1", "application/vnd.oci.image.manifest.v1+json", raw)
        config = parse_config(
            plain_yaml(src, dst, mirror_rule(src, dst, "*/app", "/mirror", name="h")),
            env={},
        )
        result = await run(config, config.rules, retry=FAST, timeouts=Timeouts(2, 2))
    (rule,) = result.rules
    errors = "\n".join(rule.errors)
    assert rule.result == "partial", errors
    assert len(rule.errors) == 1 and rule.errors[0].startswith("bad/app"), errors
    assert re.search(message, errors), errors
    assert dst.tags["mirror/good/app"]["1"] == GOOD.digest
    assert "1" not in dst.tags.get("mirror/bad/app", {})


@pytest.mark.timeout(60)
async def test_nested_layout_index_is_a_layout_error(tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    layout.mkdir()
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    (layout / "index.json").write_bytes(b'{"schemaVersion": 2, "manifests": ' + DEEP + b"}")
    async with ScriptedRegistry() as dst:
        config = parse_config(layout_import_yaml(layout, dst), env={})
        result = await run(config, config.rules, retry=FAST, timeouts=Timeouts(2, 2))
    (rule,) = result.rules
    assert rule.result == "failed"
    assert rule.errors == [
        f"oci:{layout}: cannot read index.json: JSON nested deeper than 64 levels"
    ]
    assert dst.tags == {}


async def test_upload_deadline_counts_the_destination_time_only() -> None:
    async with asyncio.timeout(0.2) as limit:  # a slow source (0.3s a chunk) is not charged
        got = [c async for c in destination_time(_source(3, 10, 0.3), limit)]
    assert got == [b"x" * 10] * 3
    with pytest.raises(TimeoutError):  # a slow destination is
        async with asyncio.timeout(0.2) as limit:
            async for _ in destination_time(_source(3, 10, 0), limit):
                await asyncio.sleep(0.3)
