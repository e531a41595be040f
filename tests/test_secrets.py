"""Secrets stay secret: canary passwords and tokens never appear in any output of a run.

Checked: every log line at -vv (aiohttp's debug logging included), the JSON summaries of
`once`, `check` and `verify`, error text of failing runs, `serve`'s /metrics and /status (a
refused password among them); and the Authorization header is
never sent to another host when a registry redirects a blob download.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import re
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from regsync.backends.registry.client import RegistryClient
from regsync.backends.registry.retry import RetryPolicy, Timeouts
from regsync.backends.registry.transport import Transport
from regsync.cliparser import build_parser
from regsync.config import parse_config
from regsync.oci.manifest import Descriptor
from regsync.runner import run
from regsync.secrets import MAX_TOKENS, Redactor, redact_data, remember_login
from regsync.server import parse_listen
from regsync.summary import run_dumps
from tests.support import (
    OCI_LAYER,
    Blob,
    Image,
    Registry,
    RegistryFactory,
    mirror_rule,
    plain_mirror_config,
    plain_yaml,
    push,
    regsync_json_async,
    run_regsync,
    write_config,
)
from tests.support.observe import Served, wait_for
from tests.support.scripted import ScriptedRegistry, error

SRC_CANARY = "canary-src-7f3a9c1e5d"
DST_CANARY = "canary-dst-2b8e4f6a0c"
# The destination's credentials, its password from the environment (DST_PASSWORD).
DST_WRITER = 'credentials: {username: writer, password: "${DST_PASSWORD}"}'
WRONG_CANARY = "canary-wrong-9d1c3e5f7a"
TOKEN_CANARY = "canary-token-4e6a8c0b2d"
FAST = {"REGSYNC_RETRY_ATTEMPTS": "2", "REGSYNC_RETRY_INITIAL": "0.02", "REGSYNC_READ_TIMEOUT": "2"}


def forms(user: str, secret: str) -> list[str]:
    """The secret as it could leak: plain, in a Basic header, URL-quoted."""
    basic = base64.b64encode(f"{user}:{secret}".encode()).decode()
    return [secret, basic, basic.rstrip("=")]


def assert_clean(text: str, secrets: list[str]) -> None:
    for secret in secrets:
        assert secret not in text, (
            f"secret leaked: ...{text[max(0, text.find(secret) - 80) :][:200]}"
        )


def creds_config(tmp_path: Path, src: Registry, dst: Registry) -> Path:
    return plain_mirror_config(
        tmp_path,
        src,
        dst,
        "team/*",
        "/mirror",
        name="canary",
        src_keys='credentials: {username: reader, password: "${SRC_PASSWORD}"}',
        dst_keys=DST_WRITER,
    )


def test_canary_passwords_never_appear_in_logs_summaries_or_errors(
    tmp_path: Path, registry_factory: RegistryFactory
) -> None:
    src = registry_factory(htpasswd={"reader": SRC_CANARY})
    dst = registry_factory(htpasswd={"writer": DST_CANARY})
    pushed = push(src, "team/app", "1", Image.docker([Blob.random(5000, seed="canary")]))
    config = creds_config(tmp_path, src, dst)
    secrets = forms("reader", SRC_CANARY) + forms("writer", DST_CANARY)
    secrets += forms("writer", WRONG_CANARY)
    good = {**FAST, "SRC_PASSWORD": SRC_CANARY, "DST_PASSWORD": DST_CANARY}
    outputs = []

    for command in ("check", "once", "verify"):
        proc = run_regsync(command, "-c", config, "--json", "-vv", env=good)
        outputs.append(proc)
        assert proc.returncode == (1 if command == "check" else 0), proc.stderr
    assert dst.manifest_digest("mirror/team/app", "1") == pushed.digest
    assert "DEBUG" in outputs[1].stderr  # -vv really logged at debug level

    # Failing runs: wrong destination password, then an unreachable destination.
    wrong = {**good, "DST_PASSWORD": WRONG_CANARY}
    push(src, "team/app", "2", Image.docker([Blob.random(5000, seed="canary2")]))
    failed = run_regsync("once", "-c", config, "--json", "-vv", env=wrong)
    assert failed.returncode == 1 and "refused" in failed.stdout, failed.stderr
    outputs.append(failed)
    dst.stop()
    down = run_regsync("once", "-c", config, "--json", "-vv", env=good)
    assert down.returncode == 1, down.stderr
    outputs.append(down)
    bad_verify = run_regsync("verify", "-c", config, "--json", "-vv", env=good)
    assert bad_verify.returncode == 1
    outputs.append(bad_verify)

    for proc in outputs:
        assert_clean(proc.stdout, secrets)
        assert_clean(proc.stderr, secrets)
        for line in proc.stdout.splitlines():
            assert not re.search(r"(?i)authorization:", line)


async def test_bearer_token_never_logged_even_at_aiohttp_debug(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A token registry (scripted): the token is used, yet no log record or error shows it."""
    caplog.set_level(logging.DEBUG)
    for name in ("aiohttp", "aiohttp.client", "aiohttp.internal"):
        logging.getLogger(name).setLevel(logging.DEBUG)
    image = Image.oci([Blob.random(2000, seed="tok")])
    async with ScriptedRegistry() as src, ScriptedRegistry() as dst:
        src.add("team/app", "1", image)
        src.add("team/denied", "1", image)
        realm = f"{src.url}/token"

        async def token(request: web.Request, match: re.Match[str]) -> web.Response:
            assert request.headers.get("Authorization", "").startswith("Basic ")
            return web.json_response({"token": TOKEN_CANARY, "expires_in": 300})

        async def guard(request: web.Request, match: re.Match[str]) -> web.Response | None:
            if request.path == "/token":
                return None
            if request.headers.get("Authorization") != f"Bearer {TOKEN_CANARY}":
                challenge = f'Bearer realm="{realm}",service="scripted"'
                return web.Response(status=401, headers={"WWW-Authenticate": challenge})
            if "/team/denied/" in request.path:
                return error(403, "DENIED", "requested access to the resource is denied")
            return None

        src.override("GET", r"^/token$", token)
        src.override("*", r"^/v2/", guard)
        config = parse_config(
            plain_yaml(
                src,
                dst,
                f"""
                - name: tok
                  source: {src.host}/team/*
                  destination: {dst.host}/m
                """,
                src_keys=f"credentials: {{username: u, password: {SRC_CANARY}}}",
            )
        )
        result = await run(
            config,
            config.rules,
            retry=RetryPolicy(attempts=2, initial=0.01, maximum=0.02),
            timeouts=Timeouts(2, 2),
        )
    (rule,) = result.rules
    assert rule.result == "partial" and rule.copied == 1, rule.errors
    assert dst.tags["m/team/app"]["1"] == image.digest
    assert any("denied" in e for e in rule.errors)
    secrets = [TOKEN_CANARY, *forms("u", SRC_CANARY)]
    assert_clean(caplog.text, secrets)
    assert_clean(run_dumps(result), secrets)
    assert_clean(repr(rule.errors), secrets)


@pytest.mark.parametrize("scheme", ["basic", "bearer"])
async def test_authorization_is_not_sent_to_another_host_on_redirect(scheme: str) -> None:
    """The registry answers a blob GET with 307 to a second server (another port = another
    origin); that server must never see the registry's credentials."""
    blob = Blob.random(4000, seed="redirect")
    seen: list[dict[str, str]] = []

    async def storage(request: web.Request) -> web.Response:
        seen.append(dict(request.headers))
        return web.Response(body=blob.data)

    app = web.Application()
    app.router.add_get("/bucket/blob", storage)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    storage_url = f"http://127.0.0.1:{runner.addresses[0][1]}/bucket/blob?sig=x"
    expected = (
        "Basic " + base64.b64encode(f"u:{SRC_CANARY}".encode()).decode()
        if scheme == "basic"
        else f"Bearer {TOKEN_CANARY}"
    )
    try:
        async with ScriptedRegistry() as reg:

            async def guard(request: web.Request, match: re.Match[str]) -> web.Response | None:
                if request.path == "/token":
                    return web.json_response({"token": TOKEN_CANARY})
                if request.headers.get("Authorization") != expected:
                    challenge = (
                        'Basic realm="r"'
                        if scheme == "basic"
                        else f'Bearer realm="{reg.url}/token",service="s"'
                    )
                    return web.Response(status=401, headers={"WWW-Authenticate": challenge})
                if request.path.startswith("/v2/team/app/blobs/"):
                    return web.Response(status=307, headers={"Location": storage_url})
                return None

            reg.override("*", r"^/(v2/|token)", guard)
            async with aiohttp.ClientSession() as session:
                client = RegistryClient(
                    Transport(session, reg.host, reg.url, username="u", password=SRC_CANARY)
                )
                desc = Descriptor(OCI_LAYER, blob.digest, blob.size)
                data = b"".join([c async for c in client.blob_read("team/app", desc)])
    finally:
        await runner.cleanup()
    assert data == blob.data
    assert reg.count("GET", r"/blobs/") == 2  # a 401, then the authorised GET that redirected
    assert len(seen) == 1
    assert "Authorization" not in seen[0], seen[0]
    assert_clean(json.dumps(seen[0]), [SRC_CANARY, TOKEN_CANARY, expected.split(" ", 1)[1]])


def test_canary_passwords_never_in_metrics_status_or_serve_log(
    tmp_path: Path, registry_factory: RegistryFactory
) -> None:
    """`regsync serve` with one rule that works and one whose registry refuses a (canary)
    password: /metrics, /status and the daemon's -vv log hold no form of either secret."""
    src = registry_factory(htpasswd={"reader": SRC_CANARY})
    dst = registry_factory(htpasswd={"writer": DST_CANARY})
    other = registry_factory(htpasswd={"reader": SRC_CANARY})
    push(src, "team/app", "1", Image.docker([Blob.random(3000, seed="serve-canary")]))
    push(other, "team/app", "1", Image.docker([Blob.random(3000, seed="serve-other")]))
    config = write_config(
        tmp_path,
        f"""
version: 1
registries:
  "{src.host}":
    tls: http
    credentials: {{username: reader, password: {SRC_CANARY}}}
  "{other.host}":
    tls: http
    credentials: {{username: reader, password: {WRONG_CANARY}}}
  "{dst.host}":
    tls: http
    credentials: {{username: writer, password: {DST_CANARY}}}
defaults: {{interval: 1h}}
rules:
  - {{name: works, source: "{src.host}/team/app", destination: "{dst.host}/a"}}
  - {{name: refused, source: "{other.host}/team/app", destination: "{dst.host}/b"}}
""",
    )
    secrets = forms("reader", SRC_CANARY) + forms("writer", DST_CANARY)
    secrets += forms("reader", WRONG_CANARY)
    with Served(config, tmp_path, "-vv") as served:
        wait_for(lambda: all(r["runs"] for r in served.status()["rules"]), "both rules ran")
        status = served.status()
        metrics = served.get("/metrics")[1].decode()
        log = served.log()
    rules = {r["name"]: r for r in status["rules"]}
    assert rules["works"]["last_run"]["result"] == "success"
    assert rules["refused"]["last_run"]["result"] == "failed" and rules["refused"]["last_error"]
    assert 'regsync_sync_runs_total{result="failed",rule="refused"}' in metrics
    for text in (json.dumps(status), metrics, log):
        assert_clean(text, secrets)


def test_serve_listens_on_loopback_unless_told_otherwise() -> None:
    """The metrics/status listener is not exposed by default (only an explicit --listen is)."""
    args = build_parser().parse_args(["serve"])
    assert parse_listen(args.listen) == ("127.0.0.1", 9469)
    assert parse_listen("[::1]:9000") == ("::1", 9000)


@contextlib.asynccontextmanager
async def recording_server() -> AsyncIterator[tuple[str, list[tuple[str, str, dict[str, str]]]]]:
    """Another origin (another port): records every request with its headers and answers
    401 with a Basic challenge, as a host fishing for credentials would."""
    seen: list[tuple[str, str, dict[str, str]]] = []

    async def record(request: web.Request) -> web.Response:
        seen.append((request.method, request.path, dict(request.headers)))
        await request.read()
        return web.Response(status=401, headers={"WWW-Authenticate": 'Basic realm="give"'})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", record)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"127.0.0.1:{runner.addresses[0][1]}", seen
    finally:
        await runner.cleanup()


def guard_with(reg: ScriptedRegistry, scheme: str, user: str, password: str) -> str:
    """Put ``reg`` behind Basic auth or a token realm (on itself); returns the header value it
    accepts."""
    basic = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    accepted = basic if scheme == "basic" else f"Bearer {TOKEN_CANARY}"

    async def guard(request: web.Request, match: re.Match[str]) -> web.Response | None:
        if request.path == "/token":
            if request.headers.get("Authorization") != basic:
                return web.Response(status=401)
            return web.json_response({"token": TOKEN_CANARY, "expires_in": 300})
        if request.headers.get("Authorization") != accepted:
            challenge = (
                'Basic realm="r"'
                if scheme == "basic"
                else f'Bearer realm="{reg.url}/token",service="s"'
            )
            return web.Response(status=401, headers={"WWW-Authenticate": challenge})
        return None

    reg.override("*", r"^/(v2/|token$)", guard)
    return accepted


@pytest.mark.parametrize("scheme", ["basic", "bearer"])
async def test_upload_location_on_another_origin_gets_no_credentials(
    tmp_path: Path, scheme: str
) -> None:
    """The destination answers one repository's upload POST with a Location on another port:
    that host sees the PUT without any Authorization, the blob fails naming it, and the other
    repository is mirrored."""
    good = Image.oci([Blob.random(3000, seed="origin-good")])
    bad = Image.oci([Blob.random(3000, seed="origin-bad")])
    async with (
        ScriptedRegistry() as src,
        ScriptedRegistry() as dst,
        recording_server() as (other, seen),
    ):
        src.add("team/good", "1", good)
        src.add("team/bad", "1", bad)
        accepted = guard_with(dst, scheme, "writer", DST_CANARY)

        async def elsewhere(request: web.Request, match: re.Match[str]) -> web.Response:
            return web.Response(status=202, headers={"Location": f"http://{other}/up/1?s=x"})

        dst.override("POST", r"^/v2/mirror/team/bad/blobs/uploads/$", elsewhere)
        config = plain_mirror_config(
            tmp_path,
            src,
            dst,
            "team/*",
            "/mirror",
            name="o",
            dst_keys=DST_WRITER,
        )
        code, summary, stderr = await regsync_json_async(
            "once", config, env={**FAST, "DST_PASSWORD": DST_CANARY}
        )
    (rule,) = summary["rules"]
    assert code == 1, stderr
    assert rule["tags"] == {"copied": 1, "up_to_date": 0, "pruned": 0, "failed": 1}, rule
    assert dst.tags["mirror/team/good"]["1"] == good.digest
    assert "mirror/team/bad" not in dst.tags
    (failure,) = rule["errors"]
    assert failure.startswith("team/bad") and other in failure, failure
    assert seen and {m for m, _, _ in seen} >= {"PUT"}, seen
    for _, _, headers in seen:
        assert not any(k.lower() == "authorization" for k in headers), headers
    assert_clean(json.dumps(seen), [*forms("writer", DST_CANARY), TOKEN_CANARY])
    assert accepted  # the destination did get (and check) its credentials


def echo_config(tmp_path: Path, src: ScriptedRegistry, dst: ScriptedRegistry) -> Path:
    rule = mirror_rule(src, dst, "team/*", "/m", name="echo")
    keys = f"credentials: {{username: reader, password: {SRC_CANARY}}}"
    text = plain_yaml(src, dst, rule, src_keys=keys)
    return write_config(tmp_path, "defaults: {interval: 1h}\n" + text)


def serve_status(config: Path, workdir: Path) -> tuple[dict[str, object], str]:
    """/status after the first run, and the daemon's -vv log (blocking: run it in a thread)."""
    with Served(config, workdir, "-vv") as served:
        wait_for(lambda: all(r["runs"] for r in served.status()["rules"]), "the first run")
        return served.status(), served.log()


@pytest.mark.parametrize("scheme", ["basic", "bearer"])
async def test_a_registry_echoing_the_authorization_value_is_redacted_everywhere(
    tmp_path: Path, scheme: str
) -> None:
    """The source answers one repository's tag listing with an error body quoting the request's
    Authorization value (the Basic base64, or a Bearer token obtained at run time): stderr
    (text and JSON logs at -vv), the --json summary and /status show *** instead."""
    image = Image.oci([Blob.random(2000, seed="echo")])
    async with ScriptedRegistry() as src, ScriptedRegistry() as dst:
        src.add("team/app", "1", image)
        src.add("team/echo", "1", image)

        async def echo(request: web.Request, match: re.Match[str]) -> web.Response:
            quoted = request.headers.get("Authorization", "")
            return error(400, "DENIED", f"credentials {quoted!r} not valid for team/echo")

        accepted = guard_with(src, scheme, "reader", SRC_CANARY)
        src.override("GET", r"^/v2/team/echo/tags/list$", echo)
        config = echo_config(tmp_path, src, dst)
        text = await regsync_json_async("once", config, "-vv", env=FAST)
        logs = await regsync_json_async("once", config, "-vv", "--log-format", "json", env=FAST)
        status, serve_log = await asyncio.to_thread(serve_status, config, tmp_path)
    secrets = [*forms("reader", SRC_CANARY), TOKEN_CANARY]
    for run_ in (text, logs):
        assert run_.code == 1, run_.stderr
        (rule,) = run_.data["rules"]
        assert rule["tags"]["copied"] + rule["tags"]["up_to_date"] == 1, rule
        (failure,) = rule["errors"]
        assert "team/echo" in failure and "credentials '" in failure and "***" in failure
        assert_clean(json.dumps(run_.data), secrets)
        assert_clean(run_.stderr, secrets)
    assert "***" in text.stderr and "***" in logs.stderr  # the error was shown, redacted
    assert dst.tags["m/team/app"]["1"] == image.digest
    (rule_status,) = status["rules"]  # type: ignore[attr-defined]
    assert "***" in rule_status["last_error"], rule_status
    assert_clean(json.dumps(status), secrets)
    assert_clean(serve_log, secrets)
    assert accepted.split(" ", 1)[1] in secrets  # the value echoed is one we redact


def test_a_password_from_the_environment_in_a_non_secret_field_is_not_echoed(
    tmp_path: Path,
) -> None:
    """`source: ${HUB_TOKEN}` is a mistake `validate` reports (exit 2) without quoting the
    value: a ${VAR}'s value is never shown in a validation message."""
    config = write_config(
        tmp_path,
        """
        version: 1
        registries:
          "reg.example:5000": {credentials: {username: u, password: "${HUB_TOKEN}"}}
        rules:
          - {name: a, source: "${HUB_TOKEN}", destination: "reg.example:5000/m"}
          - {name: b, source: docker.io/library/x, destination: "${HUB_TOKEN}/y"}
        """,
    )
    token = "dckr_pat_Canary-9f8e7d6c5b"
    proc = run_regsync("validate", "-c", config, env={"HUB_TOKEN": token})
    assert proc.returncode == 2, proc.stderr
    assert "rules[0].source (sync.yaml:5)" in proc.stderr, proc.stderr
    assert "rules[1].destination (sync.yaml:6)" in proc.stderr, proc.stderr
    assert_clean(proc.stdout + proc.stderr, [token, "Canary-9f8e7d6c5b"])


def test_redactor_masks_every_form_longest_first_and_ignores_short_strings() -> None:
    redactor = Redactor()
    redactor.add_login("me", 'p"ss/wörd')
    redactor.add("tok", None, "token-abc", "token-abc-longer")
    basic = base64.b64encode('me:p"ss/wörd'.encode()).decode()
    text = (
        f'pw p"ss/wörd json {json.dumps({"m": chr(34).join(["p", "ss/wörd"])})} '
        f"url p%22ss%2Fw%C3%B6rd basic {basic} {basic.rstrip('=')} "
        "tokens token-abc-longer token-abc tok"
    )
    masked = redactor.redact(text)
    assert_clean(masked, ['p"ss', "ss/w", basic.rstrip("="), "token-abc", "%22ss"])
    assert masked.endswith("tokens *** *** tok")  # "tok" is too short to be a secret
    assert redactor.redact_data({"errors": ["token-abc!"], "n": 1}) == {"errors": ["***!"], "n": 1}


def test_redactor_masks_run_time_tokens_by_lookup_and_keeps_the_latest() -> None:
    redactor = Redactor()
    jwt = "eyJhbGciOi.eyJzdWIiOiJ4In0.c2lnbmF0dXJl-_x"
    redactor.add_token(jwt)
    redactor.add_token("tok")  # too short: ignored
    text = f'Bearer {jwt}. {{"token":"{jwt}"}} x{jwt}y tok'
    # A run of token characters is a token or not: one glued to letters is another word.
    assert redactor.redact(text) == f'Bearer ***. {{"token":"***"}} x{jwt}y tok'
    for n in range(MAX_TOKENS):
        redactor.add_token(f"token-{n:08d}")
    assert redactor.redact(jwt) == jwt  # the oldest token fell out of the bounded set
    assert redactor.redact(f"token-{MAX_TOKENS - 1:08d}") == "***"


def test_a_secret_of_exactly_the_minimum_length_is_masked_in_every_form() -> None:
    redactor = Redactor(["ab/d"])  # MIN_LENGTH characters: a secret, also URL-quoted
    assert redactor.redact("x ab/d y ab%2Fd z abc") == "x *** y *** z abc"
    redactor.add_token("a1b2")
    assert redactor.redact("Bearer a1b2") == "Bearer ***"


def test_a_json_escaped_secret_is_masked_whole() -> None:
    secret = '"quoted\\secret"'  # starts and ends with a character JSON escapes
    text = json.dumps({"error": f"bad password {secret}"})
    assert Redactor([secret]).redact(text) == '{"error": "bad password ***"}'


def test_a_secret_holding_another_is_masked_whole_whatever_their_order() -> None:
    redactor = Redactor(["zzzz", "azzzzb"])  # sorted by text, "zzzz" would come first
    assert redactor.redact("[azzzzb] [zzzz]") == "[***] [***]"


def test_basic_credentials_are_masked_padded_and_unpadded() -> None:
    redactor = Redactor()
    redactor.add_login("me", "secret1")
    basic = base64.b64encode(b"me:secret1").decode()
    assert basic.endswith("=")
    assert redactor.redact(f"Authorization: Basic {basic}") == "Authorization: Basic ***"
    assert redactor.redact(f"b={basic.rstrip('=')};") == "b=***;"


def test_a_token_that_is_not_token68_is_kept_as_a_secret() -> None:
    """Masked wherever it appears, even inside a longer run of token characters."""
    redactor = Redactor()
    redactor.add_token("odd token!")
    redactor.add_token("-edgy-")  # token punctuation at its edges: not a clean token68 run
    assert redactor.redact("a odd token! b x-edgy-y") == "a *** b x***y"


def test_the_token_set_keeps_exactly_the_latest_max_tokens() -> None:
    redactor = Redactor()
    for n in range(MAX_TOKENS + 1):
        redactor.add_token(f"token-{n:08d}")
    assert redactor.redact("token-00000000") == "token-00000000"  # the oldest went
    assert redactor.redact("token-00000001 token-00010000") == "*** ***"


def test_the_process_wide_redactor_learns_logins_and_redacts_data() -> None:
    # Fresh values: the process-wide redactor keeps what earlier tests taught it.
    user, password = f"user-{secrets.token_hex(4)}", f"Pass-{secrets.token_hex(6)}"
    remember_login(user, password)
    basic = base64.b64encode(f"{user}:{password}".encode()).decode()
    data = {"errors": [f"{password} and {basic}"], "n": 1}
    assert redact_data(data) == {"errors": ["*** and ***"], "n": 1}
