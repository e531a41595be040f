"""The Bearer token request: to a realm the registry chose, checked like a redirect."""

from __future__ import annotations

import time
from typing import Any

import aiohttp
from yarl import URL

from regsync import boundedjson
from regsync.backends.registry.auth import TokenResponse
from regsync.backends.registry.exchange import Exchanger
from regsync.backends.registry.redirects import MAX_HOPS, REDIRECTS, Hops
from regsync.backends.registry.wire import describe, origin, read_bounded, since
from regsync.errors import AuthError, TransportError
from regsync.oci.ref import shown


async def fetch_token(
    ex: Exchanger, user_agent: str, realm: str, params: list[tuple[str, str]], basic: str | None
) -> TokenResponse:
    """GET a Bearer token; the realm may be another host, so only Basic goes there.

    The registry chose the realm, so it is checked like a redirect (it could name an
    inside service whose JSON would come back to the registry as the next Bearer), and
    so is each of its redirects, followed here; Basic goes to the realm's origin only.
    """
    registry, t = ex.registry, ex.timeouts
    # Its own try: the whole answer within `total`.
    timeout = aiohttp.ClientTimeout(
        total=t.total, connect=t.connect, sock_connect=t.connect, sock_read=t.read
    )
    url = _realm_url(realm, registry).extend_query(params)
    hops, started = Hops(registry, "GET", url), time.monotonic()
    try:
        for _ in range(MAX_HOPS + 1):
            headers = {"User-Agent": user_agent}
            if basic and origin(url) == origin(hops.first):
                headers["Authorization"] = basic
            target, extra = await ex.checked(url, headers, "token realm")
            async with ex.session.get(
                target,
                headers=headers,
                ssl=ex.ssl,
                timeout=timeout,
                allow_redirects=False,
                **ex.proxy_for(url),
                **extra,
            ) as resp:
                ex.observer.request_done(registry, "TOKEN", str(resp.status), since(started))
                if resp.status in REDIRECTS and "Location" in resp.headers:
                    url = hops.next(resp, url)
                    continue
                body: dict[str, Any] = {}
                if resp.status == 200:
                    raw = await read_bounded(resp, 1024 * 1024, registry)
                    parsed = boundedjson.loads(raw)
                    body = parsed if isinstance(parsed, dict) else {}
                return TokenResponse(resp.status, body)
    except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
        raise TransportError(
            f"{registry}: token request to {url.host} failed: {describe(exc)}",
            registry=registry,
        ) from exc
    raise AssertionError("unreachable: Hops ends the chain")  # pragma: no cover


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
