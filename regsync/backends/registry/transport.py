"""One registry's HTTP transport: auth, timeouts, rate-limit gate, health, path prefix.

Requests are retried per ``registry.retry`` (the one place that decides what is retried), errors
are mapped by ``registry.responses``. Each hop below the auth dance is ``registry.exchange``'s
(redirects, checked addresses, proxies, observation), the Bearer token request
``registry.tokenfetch``'s; aiohttp exceptions never leave these modules: they become
TransportError.
"""

from __future__ import annotations

import asyncio
import functools
import re
import ssl
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
from yarl import URL

from regsync import __version__
from regsync.backends.registry.auth import Authenticator
from regsync.backends.registry.exchange import Exchanger
from regsync.backends.registry.health import Health
from regsync.backends.registry.observer import NullObserver, RequestObserver
from regsync.backends.registry.pace import at_least, too_slow
from regsync.backends.registry.ratelimit import PullGate
from regsync.backends.registry.redirects import RedirectPolicy
from regsync.backends.registry.responses import Response, error_from_response
from regsync.backends.registry.retry import RetryPolicy, Timeouts, retried
from regsync.backends.registry.throttle import Throttle
from regsync.backends.registry.tokenfetch import fetch_token
from regsync.backends.registry.wire import describe, read_bounded
from regsync.errors import AuthError, InvalidNameError, TransportError, UnreachableError
from regsync.oci.ref import shown

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
        self.user_agent = user_agent or USER_AGENT
        self.registry = registry
        self.base_url = URL(base_url)
        self.observer: RequestObserver = observer or NullObserver()
        self.retry = retry or RetryPolicy()
        self.timeouts = timeouts or Timeouts()
        self._limit = asyncio.Semaphore(max_concurrency)
        self.throttle = Throttle(requests_per_second)
        # registries.HOST.path_prefix: the server keeps every repository under this path
        # (a mirror serving an upstream below a path); applied here to paths and scopes only.
        self.path_prefix = path_prefix
        self.pulls = PullGate(registry, pull_floor, self.observer)
        self.health = Health(registry)
        # Below the auth dance: each hop's redirects, addresses, proxy and observation.
        self.hops = Exchanger(
            session,
            registry,
            self.base_url,
            ssl_context=ssl_context,
            observer=self.observer,
            timeouts=self.timeouts,
            redirects=redirects or RedirectPolicy(),
            health=self.health,
            pulls=self.pulls,
        )
        fetch = functools.partial(fetch_token, self.hops, self.user_agent)
        self.auth = Authenticator(registry, username, password, fetch)
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
                        body = await read_bounded(resp, max_body, self.registry)
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
        own = self.hops.same_origin(url)
        scopes = self._scoped(scopes)
        for _ in range(3):
            if not throttled:
                await self.throttle.wait()
            throttled = False  # a replay after a 401 is another request: it waits its turn
            async with self.auth.turn():  # one at a time while Basic credentials are unproven
                sent_headers = await self._headers(headers, scopes, own=own)
                resp = await self.hops.send(method, url, sent_headers, data, timed)
                if own and self.hops.same_origin(resp.url):
                    self.auth.answered(sent_headers.get("Authorization"), resp.status)
            try:
                # Another origin's challenge is none of our business: learning from it could
                # switch this registry's scheme to a realm of that host's choosing.
                foreign = not self.hops.same_origin(resp.url)
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
                        body = await read_bounded(resp, _MAX_ERROR_BODY, self.registry, lax=True)
                    raise error_from_response(
                        self.registry, method, resp.url, resp.status, resp.headers, body, foreign
                    )
                yield resp
                return
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise TransportError(
                    f"{self.registry}: {method} {url.raw_path} failed: {describe(exc)}",
                    registry=self.registry,
                ) from exc
            finally:
                resp.release()
        raise AuthError(f"{self.registry}: authentication did not settle", registry=self.registry)

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
