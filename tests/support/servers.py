"""Scripted HTTP servers for tests of real-world registries, each an aiohttp app on 127.0.0.1.

They run in a background thread with their own event loop, because the tests drive regsync as
a subprocess from synchronous code:

- ``TokenServer``: a distribution token service issuing ES256 JWTs with an ``x5c`` header whose
  certificate is the registry's ``auth.token.rootcertbundle``; logs every request's user and
  scopes.
- ``HubApi``: Docker Hub's ``/v2/namespaces/<ns>/repositories`` listing, paged, plus login, and
  the tags API (``/v2/namespaces/<ns>/repositories/<name>/tags``: name and digest per tag).
- ``RateLimitProxy``: a reverse proxy to a registry that adds RateLimit headers to manifest
  responses, answers scripted 429s/503s, and counts requests in flight.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
from aiohttp import ClientSession, ClientTimeout, web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


class BackgroundServer:
    """Runs an aiohttp application on 127.0.0.1:<random port> in a daemon thread."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self.port = 0

    def app(self) -> web.Application:
        raise NotImplementedError

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> BackgroundServer:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    async def _start(self) -> None:
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None and server.sockets  # type: ignore[attr-defined]
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` on the server's loop (to read or change its state safely)."""

        async def run() -> Any:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(10)

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
            self._runner = None
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


# -- token service ----------------------------------------------------------------------------


@dataclass(frozen=True)
class TokenRequest:
    service: str
    user: str | None  # None: anonymous
    scopes: tuple[str, ...]
    status: int


class TokenServer(BackgroundServer):
    """A token realm for docker-registry's ``auth.token``.

    ``users`` {name: password}; each user may do ``grants[name]`` actions (default pull, push,
    delete); anonymous requests get ``anonymous`` actions (default: nothing). ``catalog``
    grants ``registry:catalog:*`` to users. Wrong passwords get 401.
    """

    SERVICE = "regsync-test-registry"
    ISSUER = "regsync-test-issuer"

    def __init__(
        self,
        workdir: Path,
        users: dict[str, str],
        *,
        grants: dict[str, set[str]] | None = None,
        anonymous: frozenset[str] = frozenset(),
        catalog: bool = True,
        expires_in: int = 300,
    ) -> None:
        super().__init__()
        self.users = users
        self.grants = grants or {}
        self.anonymous = anonymous
        self.catalog = catalog
        self.expires_in = expires_in
        self.log: list[TokenRequest] = []
        self._key = ec.generate_private_key(ec.SECP256R1())
        self.cert_path = workdir / "token-signer.pem"
        cert = _self_signed(self._key, "regsync-test-token-signer")
        self.cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        self._x5c = base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()

    def registry_auth(self, service: str = SERVICE) -> dict[str, str]:
        """The ``auth.token`` mapping for ``registry_factory(token_auth=...)``."""
        return {
            "realm": f"{self.url}/token",
            "service": service,
            "issuer": self.ISSUER,
            "rootcertbundle": str(self.cert_path),
        }

    def requests(self) -> list[TokenRequest]:
        return list(self.call(lambda: list(self.log)))

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/token", self._token)
        return app

    async def _token(self, request: web.Request) -> web.Response:
        scopes = tuple(request.query.getall("scope", []))
        service = request.query.get("service", "")
        user = _basic_user(request.headers.get("Authorization", ""))
        if user is not None and self.users.get(user[0]) != user[1]:
            self.log.append(TokenRequest(service, user[0], scopes, 401))
            return web.json_response({"details": "bad credentials"}, status=401)
        name = user[0] if user else None
        access = [a for s in scopes if (a := self._grant(name, s)) is not None]
        self.log.append(TokenRequest(service, name, scopes, 200))
        now = int(time.time())
        claims = {
            "iss": self.ISSUER,
            "sub": name or "",
            "aud": service,
            "iat": now,
            "nbf": now - 10,
            "exp": now + self.expires_in,
            "jti": secrets.token_hex(8),
            "access": access,
        }
        token = jwt.encode(claims, self._key, algorithm="ES256", headers={"x5c": [self._x5c]})
        return web.json_response({"token": token, "expires_in": self.expires_in})

    def _grant(self, user: str | None, scope: str) -> dict[str, Any] | None:
        kind, _, rest = scope.partition(":")
        resource, _, actions = rest.rpartition(":")
        if kind == "registry":
            allowed = {"*"} if user is not None and self.catalog else set()
        else:
            allowed = (
                set(self.anonymous)
                if user is None
                else self.grants.get(user, {"pull", "push", "delete"})
            )
        granted = [a for a in actions.split(",") if a in allowed]
        return {"type": kind, "name": resource, "actions": granted} if granted else None


def _basic_user(header: str) -> tuple[str, str] | None:
    if not header.lower().startswith("basic "):
        return None
    user, _, password = base64.b64decode(header[6:]).decode().partition(":")
    return user, password


def _self_signed(key: ec.EllipticCurvePrivateKey, name: str) -> x509.Certificate:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )


# -- Docker Hub API ---------------------------------------------------------------------------


class HubApi(BackgroundServer):
    """``/v2/namespaces/<ns>/repositories`` over ``namespaces`` {ns: [names]}, ``page_size`` a page.

    ``private`` {ns: [names]} are listed only with the JWT that ``/v2/users/login`` gives
    ``users`` {name: password}. ``log`` holds (path, query string, authorised) per request.
    ``tags`` {"ns/name": [entry, ...]} answers the tags API, ``tag_page_size`` a page (entries
    as Docker Hub sends them: ``{"name", "digest", "media_type", "images": [...]}``; leave out
    ``digest`` as old schema-1 pushes do); ``tags_status`` set answers it with that status.
    """

    def __init__(
        self,
        namespaces: dict[str, list[str]],
        *,
        page_size: int = 2,
        private: dict[str, list[str]] | None = None,
        users: dict[str, str] | None = None,
        tags: dict[str, list[dict[str, Any]]] | None = None,
        tag_page_size: int = 100,
    ) -> None:
        super().__init__()
        self.tags = tags or {}
        self.tag_page_size = tag_page_size
        self.tags_status: int | None = None
        self.namespaces = namespaces
        self.private = private or {}
        self.users = users or {}
        self.page_size = page_size
        self.log: list[tuple[str, str, bool]] = []
        self._jwt = secrets.token_hex(16)

    def requests(self) -> list[tuple[str, str, bool]]:
        return list(self.call(lambda: list(self.log)))

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/v2/namespaces/{ns}/repositories", self._list)
        app.router.add_get("/v2/namespaces/{ns}/repositories/{name}/tags", self._tags)
        app.router.add_post("/v2/users/login", self._login)
        return app

    async def _login(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.log.append((request.path, "", False))
        if self.users.get(body.get("username")) != body.get("password"):
            return web.json_response({"detail": "Incorrect authentication credentials"}, status=401)
        return web.json_response({"token": self._jwt})

    async def _list(self, request: web.Request) -> web.Response:
        authorised = request.headers.get("Authorization") == f"Bearer {self._jwt}"
        self.log.append((request.path, request.query_string, authorised))
        ns = request.match_info["ns"]
        if ns not in self.namespaces:
            return web.json_response({"message": "object not found"}, status=404)
        names = list(self.namespaces[ns]) + (self.private.get(ns, []) if authorised else [])
        page = int(request.query.get("page", "1"))
        size = min(int(request.query.get("page_size", "10")), self.page_size)
        chunk = names[(page - 1) * size : page * size]
        more = page * size < len(names)
        following = f"{self.url}{request.path}?page={page + 1}&page_size={size}" if more else None
        return web.json_response(
            {
                "count": len(names),
                "next": following,
                "previous": None,
                "results": [
                    {"name": n, "namespace": ns, "repository_type": "image"} for n in chunk
                ],
            }
        )

    async def _tags(self, request: web.Request) -> web.Response:
        authorised = request.headers.get("Authorization") == f"Bearer {self._jwt}"
        self.log.append((request.path, request.query_string, authorised))
        if self.tags_status is not None:
            return web.json_response({"message": "scripted failure"}, status=self.tags_status)
        repo = f"{request.match_info['ns']}/{request.match_info['name']}"
        if repo not in self.tags:
            return web.json_response({"message": "object not found"}, status=404)
        entries = self.tags[repo]
        page = int(request.query.get("page", "1"))
        size = min(int(request.query.get("page_size", "10")), self.tag_page_size)
        more = page * size < len(entries)
        following = f"{self.url}{request.path}?page={page + 1}&page_size={size}" if more else None
        chunk = entries[(page - 1) * size : page * size]
        return web.json_response(
            {"count": len(entries), "next": following, "previous": None, "results": chunk}
        )


# -- rate-limit proxy ----------------------------------------------------------------------


@dataclass
class ProxyScript:
    """What the proxy does; change it between runs with ``RateLimitProxy.script``."""

    ratelimit: tuple[int, int] | None = None  # (limit, window seconds): count manifest GETs
    window_started: float = 0.0
    remaining_script: list[int] = field(default_factory=list)  # overrides; the last one sticks
    fail_429: int = 0  # answer this many manifest GETs with 429 first
    retry_after: int = 1
    fail_all: int = 0  # answer every request with this status (e.g. 503)
    no_catalog: bool = False  # answer /v2/_catalog with 404, like Docker Hub
    pulls: int = 0  # manifest GETs forwarded so far
    window_pulls: int = 0
    log: list[tuple[str, str, int]] = field(default_factory=list)  # method, path, status
    in_flight: int = 0
    max_in_flight: int = 0


class RateLimitProxy(BackgroundServer):
    """A reverse proxy to one plain-HTTP registry that injects rate limits and failures."""

    def __init__(self, upstream: str, script: ProxyScript | None = None) -> None:
        super().__init__()
        self.upstream = upstream.rstrip("/")
        self.script = script or ProxyScript()
        self._session: ClientSession | None = None

    def state(self) -> ProxyScript:
        return self.call(lambda: self.script)  # type: ignore[no-any-return]

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._forward)
        app.on_cleanup.append(self._close)
        return app

    async def _close(self, app: web.Application) -> None:
        if self._session is not None:
            await self._session.close()

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        s = self.script
        s.in_flight += 1
        s.max_in_flight = max(s.max_in_flight, s.in_flight)
        try:
            response = await self._answer(request)
        finally:
            s.in_flight -= 1
        s.log.append((request.method, request.path, response.status))
        return response

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        s = self.script
        is_pull = request.method == "GET" and "/manifests/" in request.path
        if s.no_catalog and request.path == "/v2/_catalog":
            return web.json_response({"errors": [{"code": "NOT_FOUND"}]}, status=404)
        if s.fail_all:
            return web.json_response({"errors": [{"code": "UNAVAILABLE"}]}, status=s.fail_all)
        if is_pull and s.fail_429 > 0:
            s.fail_429 -= 1
            return web.json_response(
                {"errors": [{"code": "TOOMANYREQUESTS", "message": "pull rate limit"}]},
                status=429,
                headers={"Retry-After": str(s.retry_after)},
            )
        if self._session is None:
            self._session = ClientSession(timeout=ClientTimeout(total=60), auto_decompress=False)
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host",)}
        async with self._session.request(
            request.method,
            f"{self.upstream}{request.path_qs}",
            headers=headers,
            data=body or None,
            allow_redirects=False,
        ) as upstream:
            out_headers = {
                k: v
                for k, v in upstream.headers.items()
                if k.lower() not in ("transfer-encoding", "content-length", "connection")
            }
            if "/manifests/" in request.path and s.ratelimit is not None:
                limit, window = s.ratelimit
                if time.monotonic() - s.window_started >= window:  # a fixed window: reset
                    s.window_started, s.window_pulls = time.monotonic(), 0
                if is_pull and upstream.status == 200:
                    s.pulls += 1
                    s.window_pulls += 1
                remaining = max(limit - s.window_pulls, 0)
                if s.remaining_script:
                    remaining = s.remaining_script[0]
                    if len(s.remaining_script) > 1:
                        s.remaining_script.pop(0)
                out_headers["RateLimit-Limit"] = f"{limit};w={window}"
                out_headers["RateLimit-Remaining"] = f"{remaining};w={window}"
            payload = await upstream.read()
            response = web.StreamResponse(status=upstream.status, headers=out_headers)
            length = upstream.headers.get("Content-Length")
            if length is not None:  # a HEAD announces the size of a body it does not send
                response.content_length = int(length)
            await response.prepare(request)
            if payload:
                await response.write(payload)
            await response.write_eof()
            return response
