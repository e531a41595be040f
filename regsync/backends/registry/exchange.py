"""One request up to its response's headers: redirects followed hop by hop, each hop checked.

``Exchanger`` is the transport's lower layer: no auth, no retries. It decides where each hop
goes (``registry.redirects``: the checked address pinned, proxies from the environment),
observes each exchange, notes rate-limit headers, and turns connection failures into regsync
errors.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from typing import Any

import aiohttp
from aiohttp.helpers import get_env_proxy_for_url
from yarl import URL

from regsync.backends.registry.health import Health, connect_error
from regsync.backends.registry.observer import RequestObserver
from regsync.backends.registry.ratelimit import PullGate, parse_quota
from regsync.backends.registry.redirects import (
    REDIRECTS,
    Hops,
    RedirectPolicy,
    hop_method,
    pinned,
)
from regsync.backends.registry.retry import Timeouts
from regsync.backends.registry.wire import describe, origin, since
from regsync.errors import RegsyncError, TransportError, UnreachableError
from regsync.oci.ref import shown

EnvProxy = dict[str, Any]  # {} or {"proxy": URL, "proxy_auth": BasicAuth | None}


class Exchanger:
    """Sends one registry's hops over the run's shared aiohttp session."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        registry: str,
        base_url: URL,
        *,
        ssl_context: ssl.SSLContext | bool,
        observer: RequestObserver,
        timeouts: Timeouts,
        redirects: RedirectPolicy,
        health: Health,
        pulls: PullGate,
    ) -> None:
        self.session = session
        self.registry = registry
        self.base_url = base_url
        self._own = origin(base_url)  # asked several times per request
        self.ssl = ssl_context
        self.observer = observer
        self.timeouts = t = timeouts
        self._timeout = aiohttp.ClientTimeout(
            total=None, connect=t.connect, sock_connect=t.connect, sock_read=t.read
        )
        self.redirects = redirects
        self._origin_class: str | None = None  # of the registry's own address, once asked
        self.health = health
        self.pulls = pulls
        # The session does not read the environment per request (trust_env costs two thread
        # hops per request: proxy lookup and .netrc); the proxy is looked up once per host.
        self._proxies: dict[str, EnvProxy] = {}

    def same_origin(self, url: URL) -> bool:
        """Whether ``url`` is on this registry's scheme+host+port, where its credentials go."""
        return origin(url) == self._own

    async def send(
        self, method: str, url: URL, headers: dict[str, str], data: Any, timed: bool = True
    ) -> aiohttp.ClientResponse:
        """One request up to the response's headers, its redirects followed here, each hop
        checked first (``registry.redirects``: no credentials or userinfo to another origin,
        no public -> internal address, loops named). A first URL off the registry's origin
        (an upload ``Location``) is checked the same way: the registry named it."""
        hops = Hops(self.registry, method, url)
        first = dict(headers)  # the checked hop's Host must not follow into later hops
        first_url, extra = await self.checked(url, first)
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
            target_url, extra = await self.checked(target, sent)
            deadline = self._head_deadline(data) if timed else None
            resp = await self._exchange(method, target_url, sent, data, extra, deadline)
            current = target
        return resp

    async def checked(
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
                f" {describe(exc)}",
                registry=self.registry,
            ) from exc
        self.redirects.check(self.registry, self._origin_class, target, ip, what)
        if self.proxy_for(target):
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
                    ssl=self.ssl,
                    **self.proxy_for(url),
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
            self.observer.request_done(self.registry, method, "error", since(started))
            if (error := connect_error(self.registry, exc)) is not None:
                if isinstance(error, UnreachableError) and error.down:
                    raise self.health.mark_down(error) from exc  # no retry can help
                raise error from exc
            raise TransportError(
                f"{self.registry}: {method} {url.raw_path} failed: {describe(exc)}",
                registry=self.registry,
            ) from exc
        self.observer.request_done(self.registry, method, str(resp.status), since(started))
        self._note_ratelimit(resp)
        return resp

    def _head_deadline(self, data: Any) -> float | None:
        if data is None or isinstance(data, bytes):
            return self.timeouts.for_body(len(data or b""))
        return None  # a streamed upload: bounded by its caller, by its size

    def proxy_for(self, url: URL) -> EnvProxy:
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


def _body_error(exc: BaseException) -> RegsyncError | None:
    """The regsync error a streamed request body raised (aiohttp wraps it), if that is what
    ended the request: aiohttp itself never raises one."""
    seen: BaseException | None = exc
    for _ in range(4):
        seen = seen.__cause__ or seen.__context__ if seen is not None else None
        if isinstance(seen, RegsyncError):
            return seen
    return None
