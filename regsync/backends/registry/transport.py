"""One registry's HTTP transport: auth, timeouts, rate-limit gate, health, observation.

Requests are retried per ``registry.retry`` (the one place that decides what is retried), errors
are mapped by ``registry.responses``, and aiohttp exceptions never leave this module: they
become TransportError.
"""

from __future__ import annotations

import asyncio
import re
import ssl
import time
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
from aiohttp.helpers import get_env_proxy_for_url
from yarl import URL

from regsync import __version__, boundedjson
from regsync.backends.registry.auth import Authenticator, TokenResponse
from regsync.backends.registry.health import Health, connect_error
from regsync.backends.registry.observer import NullObserver, RequestObserver
from regsync.backends.registry.pace import at_least, too_slow
from regsync.backends.registry.ratelimit import PullGate, parse_quota
from regsync.backends.registry.redirects import (
    MAX_HOPS,
    REDIRECTS,
    Hops,
    RedirectPolicy,
    hop_method,
    pinned,
)
from regsync.backends.registry.responses import Response, error_from_response
from regsync.backends.registry.retry import RetryPolicy, Timeouts, retried
from regsync.backends.registry.throttle import Throttle
from regsync.errors import (
    AuthError,
    InvalidNameError,
    RegistryError,
    RegsyncError,
    TransportError,
    UnreachableError,
)
from regsync.oci.ref import shown

EnvProxy = dict[str, Any]  # {} or {"proxy": URL, "proxy_auth": BasicAuth | None}

_MAX_ERROR_BODY = 64 * 1024
# Registry operators read it in their access logs to see who calls them (regclient sends its own).
USER_AGENT = f"regsync/{__version__}"
# A path regsync requests: plain characters only, so nothing in it is decoded or normalised
# into another path on the way (no "%2e%2e", no "?" or "#", no "." or ".." segment below).
_PLAIN_PATH = re.compile(r"/[A-Za-z0-9._:/-]*")
_UNPREFIXED = ("/v2/", "/v2/_catalog")  # the only API paths that name no repository


class Transport:
    """Sends requests to one registry over the run's shared aiohttp session."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        registry: str,
        base_url: str,
        *,
        username: str | None = None,
        password: str | None = None,
        ssl_context: ssl.SSLContext | bool = True,
        observer: RequestObserver | None = None,
        retry: RetryPolicy | None = None,
        timeouts: Timeouts | None = None,
        max_concurrency: int = 8,
        pull_floor: int | None = None,
        user_agent: str | None = None,
        requests_per_second: float | None = None,
        path_prefix: str = "",
        redirects: RedirectPolicy | None = None,
    ) -> None:
        self.session = session
        self.redirects = redirects or RedirectPolicy()
        self._origin_class: str | None = None  # of the registry's own address, once asked
        self.user_agent = user_agent or USER_AGENT
        self.registry = registry
        self.base_url = URL(base_url)
        self._own = _origin(self.base_url)  # asked several times per request
        self.auth = Authenticator(registry, username, password, self.fetch_token)
        self._ssl = ssl_context
        self.observer: RequestObserver = observer or NullObserver()
        self.retry = retry or RetryPolicy()
        t = self.timeouts = timeouts or Timeouts()
        self._timeout = aiohttp.ClientTimeout(
            total=None, connect=t.connect, sock_connect=t.connect, sock_read=t.read
        )
        self._token_timeout = aiohttp.ClientTimeout(
            total=t.total, connect=t.connect, sock_connect=t.connect, sock_read=t.read
        )
        self._limit = asyncio.Semaphore(max_concurrency)
        self.throttle = Throttle(requests_per_second)
        # registries.HOST.path_prefix: the server keeps every repository under this path
        # (a mirror serving an upstream below a path); applied here to paths and scopes only.
        self.path_prefix = path_prefix
        self.pulls = PullGate(registry, pull_floor, self.observer)
        self.health = Health(registry)
        # The session does not read the environment per request (trust_env costs two thread
        # hops per request: proxy lookup and .netrc); the proxy is looked up once per host.
        self._proxies: dict[str, EnvProxy] = {}
        self._open_access = False  # GET /v2/ answered 200 without credentials
        self._probe = asyncio.Lock()

    def url(self, path: str, query: Mapping[str, str | int] | None = None) -> URL:
        """The URL of ``path`` (built from checked names) on this registry, used verbatim.

        Never a join: a join resolves "." and ".." segments, and a name holding them would
        pick another path. A path that is not plain is refused, whatever produced it.
        """
        if self.path_prefix and path.startswith("/v2/") and path not in _UNPREFIXED:
            path = f"/v2/{self.path_prefix}/{path[4:]}"
        segments = path.split("/")
        if (
            not _PLAIN_PATH.fullmatch(path)
            or "" in segments[1:-1]
            or any(s in (".", "..") for s in segments)
        ):
            raise InvalidNameError(f"{self.registry}: refusing to request the path {shown(path)}")
        url = self.base_url.with_path(path, encoded=True)
        return url.with_query(query) if query else url

    async def request(
        self,
        method: str,
        url: URL,
        *,
        scopes: tuple[str, ...],
        headers: dict[str, str] | None = None,
        data: bytes | None = None,
        ok: tuple[int, ...] = (200,),
        max_body: int = 16 * 1024 * 1024,
    ) -> Response:
        """A request with a small body, read whole (bounded), retried per the policy.

        Each try has a total deadline (``Timeouts.total``, plus time for the body sent), from
        the moment it has a connection slot: a server trickling its answer cannot hold it.
        That one deadline covers the whole try (auth, redirects, headers, body): nothing
        inside arms another.
        """
        deadline = self.timeouts.for_body(len(data) if data else 0)

        async def attempt() -> Response:
            async with self._limit:
                # The wait for a turn under requests_per_second is not the registry's
                # slowness: it comes before the deadline starts (see `throttled`).
                await self.throttle.wait()
                try:
                    async with (
                        asyncio.timeout(deadline),
                        self.open(
                            method,
                            url,
                            scopes=scopes,
                            headers=headers,
                            data=data,
                            ok=ok,
                            throttled=True,
                            timed=False,
                        ) as resp,
                    ):
                        body = await _read_bounded(resp, max_body, self.registry)
                        return Response(resp.status, resp.headers, body, resp.url)
                except TimeoutError:  # open() turns aiohttp's own into TransportError
                    raise too_slow(
                        self.registry, f"{method} {url.raw_path}", deadline or 0
                    ) from None

        try:
            return await retried(self.retry, self.observer, self.registry, attempt)
        except UnreachableError as exc:
            if exc.down:
                raise
            raise self.gave_up(exc) from exc

    def repository(self, name: str) -> str:
        """The repository's name at the server (with the path prefix, if any)."""
        return f"{self.path_prefix}/{name}" if self.path_prefix else name

    def _scoped(self, scopes: tuple[str, ...]) -> tuple[str, ...]:
        """Token scopes name repositories as the server does (with the path prefix)."""
        if not self.path_prefix:
            return scopes
        out = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            out.append(
                f"repository:{self.repository(name)}:{actions}" if kind == "repository" else scope
            )
        return tuple(out)

    def gave_up(self, exc: UnreachableError) -> UnreachableError:
        """Unreachable through a request's or a stream's whole retry budget: the registry is
        down for the rest of the run (its other requests fail fast); the error to raise."""
        return exc if exc.down else self.health.mark_down(exc)

    def paced(self, chunks: AsyncIterable[bytes], what: str) -> AsyncIterator[bytes]:
        """A streamed body, failing (retryably) when it averages under the minimum rate."""
        t = self.timeouts
        return at_least(chunks, t.min_rate, t.rate_window, self.registry, what)

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one of this registry's max_concurrency request slots (for streamed reads)."""
        async with self._limit:
            yield

    @asynccontextmanager
    async def open(
        self,
        method: str,
        url: URL,
        *,
        scopes: tuple[str, ...],
        headers: dict[str, str] | None = None,
        data: Any = None,
        ok: tuple[int, ...] = (200,),
        throttled: bool = False,
        timed: bool = True,
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """Send one request (with the auth dance, no retries) and yield the open response.

        A replayable body (bytes or None) is re-sent after a 401; a streamed one cannot be,
        so callers streaming a body make sure the token is fresh first (see ``prepare``).
        ``throttled``: the caller already waited for the first send's requests_per_second turn.
        ``timed``: each exchange is bounded up to its response's headers (False: the caller's
        own deadline covers the whole request, as ``request``'s does).
        """
        self.health.check()
        # Userinfo in a URL a registry named (upload Location, next page) is never sent:
        # aiohttp would use it as Basic credentials, or refuse to combine it with ours.
        url = url.with_user(None) if url.raw_user or url.raw_password else url
        own = self.same_origin(url)
        scopes = self._scoped(scopes)
        for _ in range(3):
            if not throttled:
                await self.throttle.wait()
            throttled = False  # a replay after a 401 is another request: it waits its turn
            async with self.auth.turn():  # one at a time while Basic credentials are unproven
                sent_headers = await self._headers(headers, scopes, own=own)
                resp = await self._send(method, url, sent_headers, data, timed)
                if own and self.same_origin(resp.url):
                    self.auth.answered(sent_headers.get("Authorization"), resp.status)
            try:
                # Another origin's challenge is none of our business: learning from it could
                # switch this registry's scheme to a realm of that host's choosing.
                foreign = not self.same_origin(resp.url)
                replayable = data is None or isinstance(data, bytes)
                if resp.status == 401 and replayable and not foreign:
                    challenge = resp.headers.getall("WWW-Authenticate", [])
                    sent = sent_headers.get("Authorization")
                    new_scopes = await self.auth.on_unauthorized(challenge, scopes, sent)
                    if new_scopes is not None:
                        scopes = new_scopes
                        continue
                if resp.status not in ok:
                    async with asyncio.timeout(self.timeouts.total):
                        body = await _read_bounded(resp, _MAX_ERROR_BODY, self.registry, lax=True)
                    raise error_from_response(
                        self.registry, method, resp.url, resp.status, resp.headers, body, foreign
                    )
                yield resp
                return
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise TransportError(
                    f"{self.registry}: {method} {url.raw_path} failed: {_describe(exc)}",
                    registry=self.registry,
                ) from exc
            finally:
                resp.release()
        raise AuthError(f"{self.registry}: authentication did not settle", registry=self.registry)

    async def _send(
        self, method: str, url: URL, headers: dict[str, str], data: Any, timed: bool = True
    ) -> aiohttp.ClientResponse:
        """One request up to the response's headers, its redirects followed here, each hop
        checked first (``registry.redirects``: no credentials or userinfo to another origin,
        no public -> internal address, loops named). A first URL off the registry's origin
        (an upload ``Location``) is checked the same way: the registry named it."""
        hops = Hops(self.registry, method, url)
        first = dict(headers)  # the checked hop's Host must not follow into later hops
        first_url, extra = await self._checked(url, first)
        deadline = self._head_deadline(data) if timed else None
        resp = await self._exchange(method, first_url, first, data, extra, deadline)
        current = url
        while resp.status in REDIRECTS and "Location" in resp.headers:
            step = hop_method(resp.status, method, data)
            if step is None:
                return resp  # a streamed body cannot follow: the caller sees the redirect
            resp.release()
            target = hops.next(resp, current)
            method, data = step
            sent = {
                k: v
                for k, v in headers.items()
                if self.same_origin(target) or k.lower() != "authorization"
            }
            target_url, extra = await self._checked(target, sent)
            deadline = self._head_deadline(data) if timed else None
            resp = await self._exchange(method, target_url, sent, data, extra, deadline)
            current = target
        return resp

    async def _checked(
        self, target: URL, headers: dict[str, str], what: str = "redirect to"
    ) -> tuple[URL, dict[str, Any]]:
        """Where to send a hop to ``target``: its own registry as usual; elsewhere the checked
        address itself (so DNS cannot answer differently at connect time)."""
        if self.same_origin(target):
            return target, {}
        try:
            if self._origin_class is None:
                base = self.base_url
                own = await self.redirects.address(base.host or "", base.port or 443)
                self._origin_class = self.redirects.classify(own)
            ip = await self.redirects.address(target.host or "", target.port or 443)
        except OSError as exc:
            raise TransportError(
                f"{self.registry}: cannot resolve the {what} {shown(target.host or '')}:"
                f" {_describe(exc)}",
                registry=self.registry,
            ) from exc
        self.redirects.check(self.registry, self._origin_class, target, ip, what)
        if self._proxy_for(target):
            return target, {}  # the proxy connects: the address was checked, not pinned
        url, host, extra = pinned(target, ip)
        headers.update(host)
        return url, extra

    async def _exchange(
        self,
        method: str,
        url: URL,
        headers: dict[str, str],
        data: Any,
        extra: dict[str, Any],
        deadline: float | None,
    ) -> aiohttp.ClientResponse:
        """One HTTP exchange up to the response's headers (within ``deadline``, if any),
        observed; connection failures become regsync errors."""
        started = time.monotonic()
        try:
            async with asyncio.timeout(deadline):
                resp = await self.session.request(
                    method,
                    url,
                    headers=headers,
                    data=data,
                    ssl=self._ssl,
                    **self._proxy_for(url),
                    timeout=self._timeout,
                    auto_decompress=False,
                    allow_redirects=False,
                    **extra,
                )
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
            if (cause := _body_error(exc)) is not None:
                # The streamed body failed (its source broke): not this registry's failure,
                # so not charged to it; the source's error goes up as it is.
                raise cause from None
            self.observer.request_done(self.registry, method, "error", _since(started))
            if (error := connect_error(self.registry, exc)) is not None:
                if isinstance(error, UnreachableError) and error.down:
                    raise self.health.mark_down(error) from exc  # no retry can help
                raise error from exc
            raise TransportError(
                f"{self.registry}: {method} {url.raw_path} failed: {_describe(exc)}",
                registry=self.registry,
            ) from exc
        self.observer.request_done(self.registry, method, str(resp.status), _since(started))
        self._note_ratelimit(resp)
        return resp

    def same_origin(self, url: URL) -> bool:
        """Whether ``url`` is on this registry's scheme+host+port, where its credentials go."""
        return _origin(url) == self._own

    async def _headers(
        self, headers: dict[str, str] | None, scopes: tuple[str, ...], *, own: bool
    ) -> dict[str, str]:
        """The headers to send: with this registry's Authorization only on its own origin.

        The one place that decides it: an upload Location or a next-page link may name any
        host, and whatever it names gets no credentials (neither ours nor a caller's).
        """
        sent = {k: v for k, v in (headers or {}).items() if own or k.lower() != "authorization"}
        sent["User-Agent"] = self.user_agent
        if own and (authorization := await self.auth.header(scopes)) is not None:
            sent["Authorization"] = authorization
        return sent

    def _head_deadline(self, data: Any) -> float | None:
        if data is None or isinstance(data, bytes):
            return self.timeouts.for_body(len(data or b""))
        return None  # a streamed upload: bounded by its caller, by its size

    async def prepare(self, scopes: tuple[str, ...]) -> None:
        """Learn the auth scheme before a streamed request that cannot be replayed.

        A registry that answered ``GET /v2/`` without asking for credentials is not asked
        again before every upload (that was one extra request per blob).
        """
        held = self._scoped(scopes)  # as the token cache holds them
        async with self._probe:  # concurrent first uploads share one probe
            if self._open_access or await self.auth.header(held) is not None:
                return
            await self.request("GET", self.url("/v2/"), scopes=scopes, ok=(200,))
            self._open_access = await self.auth.header(held) is None

    def _proxy_for(self, url: URL) -> EnvProxy:
        """``proxy``/``proxy_auth`` for ``url`` from HTTP(S)_PROXY/NO_PROXY, once per origin."""
        key = f"{url.scheme}://{url.host}:{url.port}"
        found = self._proxies.get(key)
        if found is None:
            try:
                proxy, proxy_auth = get_env_proxy_for_url(url)
                found = {"proxy": proxy, "proxy_auth": proxy_auth}
            except LookupError:
                found = {}
            self._proxies[key] = found
        return found

    def _note_ratelimit(self, resp: aiohttp.ClientResponse) -> None:
        quota = parse_quota(resp.headers)
        if quota is None:
            return
        self.observer.ratelimit_seen(self.registry, quota.remaining, quota.limit)
        self.pulls.seen(quota)

    async def fetch_token(
        self, realm: str, params: list[tuple[str, str]], basic: str | None
    ) -> TokenResponse:
        """GET a Bearer token; the realm may be another host, so only Basic goes there.

        The registry chose the realm, so it is checked like a redirect (it could name an
        inside service whose JSON would come back to the registry as the next Bearer), and
        so is each of its redirects, followed here; Basic goes to the realm's origin only.
        """
        url = _realm_url(realm, self.registry).extend_query(params)
        hops, started = Hops(self.registry, "GET", url), time.monotonic()
        try:
            for _ in range(MAX_HOPS + 1):
                headers = {"User-Agent": self.user_agent}
                if basic and _origin(url) == _origin(hops.first):
                    headers["Authorization"] = basic
                target, extra = await self._checked(url, headers, "token realm")
                async with self.session.get(
                    target,
                    headers=headers,
                    ssl=self._ssl,
                    timeout=self._token_timeout,  # its own try: the whole answer within `total`
                    allow_redirects=False,
                    **self._proxy_for(url),
                    **extra,
                ) as resp:
                    self.observer.request_done(
                        self.registry, "TOKEN", str(resp.status), _since(started)
                    )
                    if resp.status in REDIRECTS and "Location" in resp.headers:
                        url = hops.next(resp, url)
                        continue
                    body: dict[str, Any] = {}
                    if resp.status == 200:
                        raw = await _read_bounded(resp, 1024 * 1024, self.registry)
                        parsed = boundedjson.loads(raw)
                        body = parsed if isinstance(parsed, dict) else {}
                    return TokenResponse(resp.status, body)
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
            raise TransportError(
                f"{self.registry}: token request to {url.host} failed: {_describe(exc)}",
                registry=self.registry,
            ) from exc
        raise AssertionError("unreachable: Hops ends the chain")  # pragma: no cover


async def _read_bounded(
    resp: aiohttp.ClientResponse, limit: int, registry: str, *, lax: bool = False
) -> bytes:
    """Read a body up to ``limit`` bytes; over it is an error (or truncated when ``lax``)."""
    chunks: list[bytes] = []
    total = 0
    async for chunk in resp.content.iter_chunked(64 * 1024):
        total += len(chunk)
        if total > limit:
            if lax:
                break
            raise RegistryError(
                f"{registry}: response body over {limit} bytes from {resp.url.raw_path}",
                registry=registry,
                status=resp.status,
            )
        chunks.append(chunk)
    return b"".join(chunks)


def _realm_url(realm: str, registry: str) -> URL:
    """A challenge's token realm as a URL we may request: absolute http(s) with a host.
    The registry chose it, so anything else is that registry's error, not ours."""
    try:
        url = URL(realm)
        usable = url.scheme in ("http", "https") and bool(url.host) and url.port is not None
    except ValueError:
        usable = False
    if not usable:
        raise AuthError(
            f"{registry}: the Bearer challenge's realm {shown(realm)} is not a URL",
            registry=registry,
        )
    return url.with_user(None)  # userinfo is never sent: only the configured Basic goes


def _origin(url: URL) -> tuple[str, str, int | None]:
    # Not URL.origin(): it tells http://h from http://h:80, which are one origin.
    return (url.scheme.lower(), (url.host or "").lower(), url.port)


def _body_error(exc: BaseException) -> RegsyncError | None:
    """The regsync error a streamed request body raised (aiohttp wraps it), if that is what
    ended the request: aiohttp itself never raises one."""
    seen: BaseException | None = exc
    for _ in range(4):
        seen = seen.__cause__ or seen.__context__ if seen is not None else None
        if isinstance(seen, RegsyncError):
            return seen
    return None


def _since(started: float) -> float:
    return time.monotonic() - started


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0][:200]
