"""The daemon's write endpoints: registry events in, and a rule's cycle on demand.

POST /v1/notifications/{registry}   CNCF distribution notifications (``{"events": [...]}``)
POST /v1/webhooks/harbor/{registry} Harbor webhooks (PUSH_ARTIFACT, DELETE_ARTIFACT)
POST /v1/rules/{rule}/run           a full cycle of the rule now (CI after a push)

They are an attack surface, so each request is judged in this order, cheapest first, and
nothing is read or parsed for a client that has not proven the token:

1. the registry has ``notifications.token`` (the run endpoint: ``--api-token-file`` /
   ``$REGSYNC_API_TOKEN`` is set), else 404;
2. ``Authorization: Bearer <token>``, compared in constant time (both sides hashed first, so
   not even the length leaks), else 401;
3. the content type, else 415; the body at most ``MAX_BODY`` bytes, read within
   ``BODY_DEADLINE`` seconds, else 413 / 408; the payload as documented, else 400;
4. 202 at once: the events are routed and queued without I/O (``triggers``); the copies run
   later in the rule's loop. A slow answer would stall the registry's whole event queue.

Refusals are counted (``regsync_events_total{outcome="refused"}``) under the registry's key
only when that registry is configured, so no request can add a label value.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Protocol

from aiohttp import web

from regsync.eventparse import (
    DISTRIBUTION_TYPE,
    PayloadError,
    RegistryEvent,
    parse_distribution,
    parse_harbor,
)
from regsync.oci.ref import normalize_host
from regsync.secrets import SECRETS, is_header_token

MAX_BODY = 1 << 20  # 1 MiB: one distribution event is ~1 KiB, a Harbor webhook ~2 KiB
BODY_DEADLINE = 10.0  # seconds to send the whole body once the headers are in
JSON_TYPES = frozenset({DISTRIBUTION_TYPE, "application/json"})
MAX_NAME = 300  # characters of a {registry} or {rule} path parameter worth looking up


class EventIntake(Protocol):
    """The daemon's side (``triggers.EventDispatcher`` plus the daemon's rule lookup)."""

    def token(self, host: str) -> str | None: ...

    def accepting(self) -> bool: ...

    def refused(self, host: str, why: str) -> None: ...

    def accept(self, host: str, events: list[RegistryEvent]) -> None: ...


class RuleControl(Protocol):
    def start_cycle(self, rule: str) -> str:
        """ "started", "running" (a cycle of it runs now) or "unknown"."""


_View = Callable[[web.Request], Awaitable[web.StreamResponse]]


class _Refusal(Exception):
    def __init__(self, status: int, why: str) -> None:
        super().__init__(why)
        self.status, self.why = status, why


def add_routes(
    app: web.Application, intake: EventIntake, rules: RuleControl, api_token: str | None
) -> None:
    """Register the three POST endpoints on the daemon's application."""
    app.router.add_post("/v1/notifications/{registry}", _events_view(intake, parse_distribution))
    app.router.add_post("/v1/webhooks/harbor/{registry}", _events_view(intake, parse_harbor))
    app.router.add_post("/v1/rules/{rule}/run", _run_view(rules, api_token))


def _events_view(intake: EventIntake, parse: Callable[[bytes], list[RegistryEvent]]) -> _View:
    async def view(request: web.Request) -> web.Response:
        key = request.match_info["registry"]
        host = normalize_host(key) if len(key) <= MAX_NAME else ""
        token = intake.token(host) if host else None
        if token is None:
            return _answer(404, "no notifications.token is configured for this registry")
        try:
            if not authorised(request, token):
                raise _Refusal(401, "missing or wrong bearer token")
            if request.content_type not in JSON_TYPES:
                raise _Refusal(415, f"content type must be {DISTRIBUTION_TYPE} or JSON")
            events = parse(await read_body(request))
        except PayloadError as exc:
            intake.refused(host, str(exc))
            return _answer(400, str(exc))
        except _Refusal as exc:
            intake.refused(host, exc.why)
            return _answer(exc.status, exc.why)
        if not intake.accepting():
            return _answer(503, "shutting down: send it again later")
        intake.accept(host, events)
        return _answer(202, f"accepted {len(events)} event(s)", close=False)

    return view


def _run_view(rules: RuleControl, api_token: str | None) -> _View:
    async def view(request: web.Request) -> web.Response:
        if api_token is None:
            return _answer(404, "disabled: serve has no --api-token-file / REGSYNC_API_TOKEN")
        if not authorised(request, api_token):
            return _answer(401, "missing or wrong bearer token")
        name = request.match_info["rule"]
        state = rules.start_cycle(name) if len(name) <= MAX_NAME else "unknown"
        if state == "unknown":
            return _answer(404, "no such rule")
        if state == "running":
            return _answer(409, "a cycle of this rule is running")
        return _answer(202, "cycle scheduled")

    return view


API_TOKEN_ENV = "REGSYNC_API_TOKEN"


def load_api_token(path: str | None, environ: Mapping[str, str]) -> str | None:
    """``--api-token-file FILE`` (stripped), else ``$REGSYNC_API_TOKEN``, else None (the run
    endpoint is disabled). ValueError naming what to fix; the token joins the redacted secrets.
    """
    if path is not None:
        try:
            text = Path(path).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ValueError(f"--api-token-file {path}: {exc.strerror or exc}") from None
        except UnicodeDecodeError:
            raise ValueError(f"--api-token-file {path}: not UTF-8 text") from None
        where = f"--api-token-file {path}"
    elif API_TOKEN_ENV in environ:
        text, where = environ[API_TOKEN_ENV].strip(), f"${API_TOKEN_ENV}"
    else:
        return None
    if not text:
        raise ValueError(f"{where} is empty")
    if not is_header_token(text):
        raise ValueError(f"{where}: the token must be printable ASCII without spaces")
    SECRETS.add(text)
    return text


def authorised(request: web.Request, token: str) -> bool:
    """``Authorization: Bearer <token>`` (scheme case-insensitive), in constant time."""
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    given = hashlib.sha256(value.strip().encode("utf-8", "surrogateescape")).digest()
    wanted = hashlib.sha256(token.encode()).digest()
    return hmac.compare_digest(given, wanted) and scheme.lower() == "bearer"


async def read_body(request: web.Request) -> bytes:
    """The whole body, at most MAX_BODY bytes within BODY_DEADLINE seconds."""
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise _Refusal(413, f"body over {MAX_BODY} bytes")
    data = bytearray()
    try:
        async with asyncio.timeout(BODY_DEADLINE):
            async for chunk in request.content.iter_any():
                data += chunk
                if len(data) > MAX_BODY:
                    raise _Refusal(413, f"body over {MAX_BODY} bytes")
    except TimeoutError:
        raise _Refusal(408, f"body not received within {BODY_DEADLINE:g}s") from None
    return bytes(data)


def _answer(status: int, message: str, *, close: bool = True) -> web.Response:
    """A small JSON answer; a refusal closes the connection (its body may be unread)."""
    body = json.dumps({"status": status, "message": message}) + "\n"
    response = web.Response(status=status, text=body, content_type="application/json")
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="regsync"'
    if close:
        response.force_close()
    return response
