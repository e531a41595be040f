"""One registry's HTTP transport: auth, retries, timeouts, error mapping, observation.

Retry policy lives here and only here: connection errors, timeouts, 408, 429 (honouring
Retry-After) and 502/503/504 are retried with capped exponential backoff and jitter; every other
status is final. aiohttp exceptions never leave this module: they become TransportError.
``retrying()`` is the one place that builds a retry loop; the copy engine's whole-blob retries and
the client's download resumes use it too, so every retry is counted by ``request_retried``.
"""

from __future__ import annotations

import asyncio
import json
import random
import ssl
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
from aiohttp.helpers import get_env_proxy_for_url
from multidict import CIMultiDictProxy
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
)
from yarl import URL

from regsync.errors import (
    AuthError,
    ConfigError,
    NotFoundError,
    RateLimitedError,
    RegistryError,
    TlsError,
    TransportError,
    UnreachableError,
    UnsupportedError,
)
from regsync.registry.auth import Authenticator, TokenResponse
from regsync.registry.health import Health, connect_error
from regsync.registry.ratelimit import PullGate, parse_quota

EnvProxy = dict[str, Any]  # {} or {"proxy": URL, "proxy_auth": BasicAuth | None}

RETRYABLE_STATUS = frozenset({408, 429, 502, 503, 504})
_MAX_ERROR_BODY = 64 * 1024


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5  # tries per request, including the first
    initial: float = 0.5  # first backoff ceiling; doubles per retry (full jitter below it)
    maximum: float = 10.0  # backoff cap
    max_retry_after: float = 60.0  # a longer Retry-After fails the request instead of hanging

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> RetryPolicy:
        """REGSYNC_RETRY_ATTEMPTS / _INITIAL / _MAX / _AFTER_MAX override the defaults."""
        return cls(
            attempts=int(_env_number(env, "REGSYNC_RETRY_ATTEMPTS", cls.attempts, minimum=1)),
            initial=_env_number(env, "REGSYNC_RETRY_INITIAL", cls.initial),
            maximum=_env_number(env, "REGSYNC_RETRY_MAX", cls.maximum),
            max_retry_after=_env_number(env, "REGSYNC_RETRY_AFTER_MAX", cls.max_retry_after),
        )

    def delay(self, retry: int) -> float:
        """Backoff before retry number ``retry`` (1-based): full jitter, uniform between 0
        and the capped exponential, so many clients retrying at once spread out."""
        return random.uniform(0, min(self.maximum, self.initial * 2.0 ** (retry - 1)))


@dataclass(frozen=True)
class Timeouts:
    connect: float = 15.0
    read: float = 60.0  # idle time between bytes: a stalled server fails, a slow one does not

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Timeouts:
        """REGSYNC_CONNECT_TIMEOUT / REGSYNC_READ_TIMEOUT (seconds) override the defaults."""
        return cls(
            connect=_env_number(env, "REGSYNC_CONNECT_TIMEOUT", cls.connect, minimum=0.01),
            read=_env_number(env, "REGSYNC_READ_TIMEOUT", cls.read, minimum=0.01),
        )


def _env_number(env: Mapping[str, str], name: str, default: float, minimum: float = 0) -> float:
    text = env.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value >= minimum or value == float("inf"):
        raise ConfigError(f"environment {name}={text!r}: expected a number >= {minimum:g}")
    return value


class RequestObserver(Protocol):
    """Receives one call per HTTP exchange (metrics live above this layer)."""

    def request_done(self, registry: str, method: str, status: str, seconds: float) -> None: ...

    def ratelimit_seen(self, registry: str, remaining: int, limit: int | None) -> None: ...

    def request_retried(self, registry: str, reason: str) -> None: ...

    def registry_paused(self, registry: str, until: float | None) -> None:
        """Requests to `registry` wait until unix time `until` (rate limit); None: resumed."""


class NullObserver:
    def request_done(self, registry: str, method: str, status: str, seconds: float) -> None:
        pass

    def ratelimit_seen(self, registry: str, remaining: int, limit: int | None) -> None:
        pass

    def request_retried(self, registry: str, reason: str) -> None:
        pass

    def registry_paused(self, registry: str, until: float | None) -> None:
        pass


@dataclass(frozen=True)
class Response:
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes
    url: URL

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError as exc:
            raise RegistryError(
                f"invalid JSON from {self.url.host}: {exc}", status=self.status
            ) from exc


def error_from_response(
    registry: str, method: str, url: URL, status: int, headers: Any, body: bytes
) -> RegistryError:
    """Map an error status and the registry's error body to a typed error."""
    codes: tuple[str, ...] = ()
    detail = ""
    try:
        errors = json.loads(body).get("errors") or []
        codes = tuple(str(e.get("code", "UNKNOWN")) for e in errors if isinstance(e, dict))
        detail = "; ".join(str(e.get("message", "")) for e in errors if isinstance(e, dict))
    except (ValueError, AttributeError):
        pass
    where = f"{method} {url.path}"
    message = f"{registry}: {where} -> {status}" + (f" {','.join(codes)}" if codes else "")
    if detail:
        message += f": {detail[:200]}"
    retry_after = _retry_after(headers.get("Retry-After")) if status == 429 else None
    kwargs = dict(registry=registry, status=status, codes=codes, retry_after=retry_after)
    if status in (401, 403) or {"UNAUTHORIZED", "DENIED"} & set(codes):
        return AuthError(message, **kwargs)  # type: ignore[arg-type]
    if status == 404:
        return NotFoundError(message, **kwargs)  # type: ignore[arg-type]
    if status == 405 or "UNSUPPORTED" in codes:
        return UnsupportedError(message, **kwargs)  # type: ignore[arg-type]
    if status == 429:
        return RateLimitedError(message, **kwargs)  # type: ignore[arg-type]
    return RegistryError(message, **kwargs)  # type: ignore[arg-type]


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # HTTP-date form: fall back to our own backoff


def is_retryable(exc: BaseException) -> bool:
    if isinstance(exc, TlsError) or (isinstance(exc, UnreachableError) and exc.down):
        return False  # a bad certificate stays bad; a registry found down stays down this run
    if isinstance(exc, TransportError):
        return True
    return isinstance(exc, RegistryError) and exc.status in RETRYABLE_STATUS


def retry_reason(exc: BaseException | None) -> str:
    """A low-cardinality label for a retry: the status, or ``connection``/``integrity``."""
    if isinstance(exc, RegistryError) and exc.status:
        return str(exc.status)
    if isinstance(exc, TransportError):
        return "connection"
    return type(exc).__name__.lower().removesuffix("error") if exc else "unknown"


def retrying(
    policy: RetryPolicy,
    observer: RequestObserver,
    registry: str,
    *,
    retryable: Callable[[BaseException], bool] = is_retryable,
) -> AsyncRetrying:
    """The retry loop: the policy's attempts and backoff, Retry-After honoured, each counted."""

    def wait(state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, RegistryError) and exc.retry_after is not None:
            if exc.retry_after > policy.max_retry_after:
                raise exc
            return exc.retry_after
        return policy.delay(state.attempt_number)

    def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        observer.request_retried(registry, retry_reason(exc))

    return AsyncRetrying(
        stop=stop_after_attempt(policy.attempts),
        wait=wait,
        retry=retry_if_exception(retryable),
        before_sleep=before_sleep,
        reraise=True,
    )


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
    ) -> None:
        self.session = session
        self.registry = registry
        self.base_url = URL(base_url)
        self.auth = Authenticator(registry, username, password, self.fetch_token)
        self._ssl = ssl_context
        self.observer: RequestObserver = observer or NullObserver()
        self.retry = retry or RetryPolicy()
        t = self.timeouts = timeouts or Timeouts()
        self._timeout = aiohttp.ClientTimeout(
            total=None, connect=t.connect, sock_connect=t.connect, sock_read=t.read
        )
        self._limit = asyncio.Semaphore(max_concurrency)
        self.pulls = PullGate(registry, pull_floor, self.observer)
        self.health = Health(registry)
        # The session does not read the environment per request (trust_env costs two thread
        # hops per request: proxy lookup and .netrc); the proxy is looked up once per host.
        self._proxies: dict[str, EnvProxy] = {}
        self._open_access = False  # GET /v2/ answered 200 without credentials
        self._probe = asyncio.Lock()

    def url(self, path: str) -> URL:
        return self.base_url.join(URL(path, encoded=True))

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
        """A request with a small body, read whole (bounded), retried per the policy."""
        try:
            async for attempt in self._retrying():
                with attempt:
                    async with (
                        self._limit,
                        self.open(
                            method, url, scopes=scopes, headers=headers, data=data, ok=ok
                        ) as resp,
                    ):
                        body = await _read_bounded(resp, max_body, self.registry)
                        return Response(resp.status, resp.headers, body, resp.url)
        except UnreachableError as exc:
            # Unreachable through every retry: fail the registry's other requests fast.
            self.health.mark_down(exc)
            raise
        raise AssertionError("unreachable")  # pragma: no cover

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one of this registry's max_concurrency request slots (for streamed reads)."""
        async with self._limit:
            yield

    def _retrying(self) -> AsyncRetrying:
        return retrying(self.retry, self.observer, self.registry)

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
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """Send one request (with the auth dance, no retries) and yield the open response.

        A replayable body (bytes or None) is re-sent after a 401; a streamed one cannot be,
        so callers streaming a body make sure the token is fresh first (see ``prepare``).
        """
        self.health.check()
        for _ in range(3):
            sent_headers = dict(headers or {})
            if (authorization := await self.auth.header(scopes)) is not None:
                sent_headers["Authorization"] = authorization
            started = time.monotonic()
            try:
                resp = await self.session.request(
                    method,
                    url,
                    headers=sent_headers,
                    data=data,
                    ssl=self._ssl,
                    **self._proxy_for(url),
                    timeout=self._timeout,
                    auto_decompress=False,
                )
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                self.observer.request_done(self.registry, method, "error", _since(started))
                if (error := connect_error(self.registry, exc)) is not None:
                    raise error from exc
                raise TransportError(
                    f"{self.registry}: {method} {url.path} failed: {_describe(exc)}",
                    registry=self.registry,
                ) from exc
            try:
                self.observer.request_done(self.registry, method, str(resp.status), _since(started))
                self._note_ratelimit(resp)
                if resp.status == 401 and (data is None or isinstance(data, bytes)):
                    challenge = resp.headers.getall("WWW-Authenticate", [])
                    new_scopes = await self.auth.on_unauthorized(challenge, scopes)
                    if new_scopes is not None:
                        scopes = new_scopes
                        continue
                if resp.status not in ok:
                    body = await _read_bounded(resp, _MAX_ERROR_BODY, self.registry, lax=True)
                    raise error_from_response(
                        self.registry, method, url, resp.status, resp.headers, body
                    )
                yield resp
                return
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise TransportError(
                    f"{self.registry}: {method} {url.path} failed: {_describe(exc)}",
                    registry=self.registry,
                ) from exc
            finally:
                resp.release()
        raise AuthError(f"{self.registry}: authentication did not settle", registry=self.registry)

    async def prepare(self, scopes: tuple[str, ...]) -> None:
        """Learn the auth scheme before a streamed request that cannot be replayed.

        A registry that answered ``GET /v2/`` without asking for credentials is not asked
        again before every upload (that was one extra request per blob).
        """
        async with self._probe:  # concurrent first uploads share one probe
            if self._open_access or await self.auth.header(scopes) is not None:
                return
            await self.request("GET", self.url("/v2/"), scopes=scopes, ok=(200,))
            self._open_access = await self.auth.header(scopes) is None

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
        """GET a Bearer token; the realm may be another host, so only Basic goes there."""
        headers = {"Authorization": basic} if basic else {}
        started = time.monotonic()
        try:
            async with self.session.get(
                realm,
                params=params,
                headers=headers,
                ssl=self._ssl,
                timeout=self._timeout,
                **self._proxy_for(URL(realm)),
            ) as resp:
                self.observer.request_done(
                    self.registry, "TOKEN", str(resp.status), _since(started)
                )
                body: dict[str, Any] = {}
                if resp.status == 200:
                    raw = await _read_bounded(resp, 1024 * 1024, self.registry)
                    parsed = json.loads(raw)
                    body = parsed if isinstance(parsed, dict) else {}
                return TokenResponse(resp.status, body)
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
            raise TransportError(
                f"{self.registry}: token request to {URL(realm).host} failed: {_describe(exc)}",
                registry=self.registry,
            ) from exc


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
                f"{registry}: response body over {limit} bytes from {resp.url.path}",
                registry=registry,
                status=resp.status,
            )
        chunks.append(chunk)
    return b"".join(chunks)


def _since(started: float) -> float:
    return time.monotonic() - started


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0][:200]
