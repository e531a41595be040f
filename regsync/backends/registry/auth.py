"""Registry authentication: WWW-Authenticate parsing, Basic, and Bearer tokens.

The flow (distribution's token spec): a request answered 401 carries a challenge. A Basic
challenge is met with the configured credentials; a Bearer challenge names a token realm, which
is asked for a token covering the request's scopes (with Basic credentials when we have them,
anonymously otherwise). Tokens are cached per (realm, service, scopes) until shortly before they
expire. Once a registry's challenge is known, later requests carry credentials up front, so the
401 round trip happens once per registry, not once per request.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import re
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from regsync.errors import AuthError, CredentialsError
from regsync.secrets import remember_login, remember_token

# Renew a token this many seconds before it expires, so a request never carries a stale one.
_EXPIRY_MARGIN = 10.0
# The token spec: expires_in defaults to 60 and values under 60 mean 60.
_MIN_TOKEN_LIFETIME = 60

_PARAM = re.compile(r'\s*([A-Za-z][A-Za-z0-9_-]*)\s*=\s*("(?:[^"\\]|\\.)*"|[^,\s]*)\s*,?')


@dataclass(frozen=True)
class Challenge:
    scheme: str  # lower case: "basic" or "bearer"
    params: dict[str, str] = field(default_factory=dict)


def parse_challenges(headers: Iterable[str]) -> list[Challenge]:
    """Parse WWW-Authenticate header values; several challenges may come, in any case."""
    challenges: list[Challenge] = []
    for header in headers:
        rest = header.strip()
        while rest:
            scheme, _, rest = rest.partition(" ")
            params: dict[str, str] = {}
            while (match := _PARAM.match(rest)) and match.group(0):
                key, value = match.group(1).lower(), match.group(2)
                if value.startswith('"'):
                    value = re.sub(r"\\(.)", r"\1", value[1:-1])
                params[key] = value
                rest = rest[match.end() :]
            challenges.append(Challenge(scheme.strip().lower(), params))
            rest = rest.lstrip(", ")
    return challenges


def scope_union(*groups: Iterable[str]) -> tuple[str, ...]:
    """Merge scope strings, joining the actions asked for one resource."""
    actions: dict[str, set[str]] = {}
    for group in groups:
        for scope in group:
            resource, _, acts = scope.rpartition(":")
            actions.setdefault(resource, set()).update(a for a in acts.split(",") if a)
    return tuple(f"{res}:{','.join(sorted(acts))}" for res, acts in sorted(actions.items()))


def repo_scope(repo: str, *actions: str) -> str:
    return f"repository:{repo}:{','.join(actions)}"


CATALOG_SCOPE = "registry:catalog:*"


@dataclass
class _Token:
    value: str
    expires_at: float


@dataclass(frozen=True)
class TokenResponse:
    status: int
    body: dict[str, object]


# Fetches a token: (realm URL, query params, basic-auth header or None) -> response.
TokenFetcher = Callable[[str, list[tuple[str, str]], str | None], Awaitable[TokenResponse]]


class Authenticator:
    """Decides the Authorization header for each request of one registry."""

    def __init__(
        self,
        registry: str,
        username: str | None,
        password: str | None,
        fetch_token: TokenFetcher,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.registry = registry
        if username is not None and password:
            remember_login(username, password)  # redacted wherever text leaves the process
        self._basic = (
            "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()
            if username is not None
            else None
        )
        self._fetch_token = fetch_token
        self._clock = clock
        self._challenge: Challenge | None = None
        self._tokens: dict[tuple[str, str, tuple[str, ...]], _Token] = {}
        self._locks: dict[tuple[str, str, tuple[str, ...]], asyncio.Lock] = {}
        # Refused credentials stay refused: later requests fail with the same error at once
        # instead of asking again (no retry storm against a registry or its token service).
        self._refused: CredentialsError | None = None
        # Until the credentials have worked once, token requests go one at a time, so a wrong
        # password costs one refused request, not one per concurrent scope.
        self._proven = asyncio.Event()
        self._first = asyncio.Lock()
        # The same for Basic: until the credentials have worked once, requests carrying them
        # go one at a time (`turn`), so a wrong password is refused once, not once per
        # request in flight.
        self._basic_ok = False
        self._basic_turn = asyncio.Lock()

    async def header(self, scopes: tuple[str, ...]) -> str | None:
        """The Authorization value to send up front, if the registry's scheme is known."""
        if self._refused is not None:
            raise self._refused_again()
        challenge = self._challenge
        if challenge is None:
            return None
        if challenge.scheme == "basic":
            return self._basic
        token = await self._token(challenge, scopes)
        return f"Bearer {token}"

    async def on_unauthorized(
        self, headers: Iterable[str], scopes: tuple[str, ...], sent: str | None
    ) -> tuple[str, ...] | None:
        """Learn from a 401 to a request that carried ``sent`` (its Authorization, or None):
        the scopes to retry with, or None when a retry cannot help.

        Only a 401 to the credentials we would send now refuses them. Requests that went out
        before the challenge was known (a glob's first requests run concurrently) carried
        nothing, and one sent with a token since renewed carried a stale one: both just retry.
        """
        challenges = parse_challenges(headers)
        bearer = next((c for c in challenges if c.scheme == "bearer"), None)
        basic = next((c for c in challenges if c.scheme == "basic"), None)
        if bearer is not None:
            return self._learn_bearer(bearer, scopes, sent)
        if basic is None:
            return None
        if self._basic is None:
            raise self._refuse(
                f"{self.registry} requires credentials: add them under "
                f"registries.{self.registry}.credentials (or docker login {self.registry})"
            )
        if sent == self._basic:
            raise self._refuse(f"{self.registry} refused the configured credentials{self._hint}")
        self._challenge = basic
        return scopes

    def turn(self) -> contextlib.AbstractAsyncContextManager[Any]:
        """Hold while sending a request with the credentials and reading its status: one at a
        time while configured Basic credentials are unproven, else no wait at all."""
        challenge = self._challenge
        if challenge is None or challenge.scheme != "basic" or self._basic is None:
            return contextlib.nullcontext()
        return contextlib.nullcontext() if self._basic_ok else self._basic_turn

    def answered(self, sent: str | None, status: int) -> None:
        """What the registry made of the configured Basic credentials (``sent`` on its own
        origin): any status but 401 proves them; a 401 refuses them for the run, before the
        next request waiting its `turn` goes out."""
        if sent is None or sent != self._basic:
            return
        if status != 401:
            self._basic_ok = True
        elif self._refused is None:
            self._refuse(f"{self.registry} refused the configured credentials{self._hint}")

    def _learn_bearer(
        self, bearer: Challenge, scopes: tuple[str, ...], sent: str | None
    ) -> tuple[str, ...]:
        self._challenge = bearer
        # insufficient_scope names what the registry wants: ask again with the union.
        wanted = scope_union(scopes, bearer.params.get("scope", "").split())
        key = (bearer.params.get("realm", ""), bearer.params.get("service", ""), wanted)
        current = self._tokens.get(key)
        if current is None or sent != f"Bearer {current.value}":
            return wanted  # not the token we hold for these scopes: no verdict on it
        # The token we hold for exactly these scopes was refused: either it expired early
        # (invalid_token) or the registry granted less than we asked for.
        del self._tokens[key]
        if bearer.params.get("error") == "invalid_token":
            return wanted
        raise AuthError(
            f"{self.registry} did not grant {' '.join(wanted) or 'access'}"
            + (": check the credentials' permissions" if self._basic else ": credentials needed"),
            registry=self.registry,
            status=401,
        )

    @property
    def _hint(self) -> str:
        return f": check the username and password for {self.registry}, or its docker config entry"

    def _refused_again(self) -> CredentialsError:
        # A fresh instance: re-raising one object from many tasks would chain their tracebacks.
        assert self._refused is not None
        first = self._refused
        return CredentialsError(str(first), registry=first.registry, status=first.status)

    def _refuse(self, message: str, status: int = 401) -> CredentialsError:
        self._refused = CredentialsError(message, registry=self.registry, status=status)
        return self._refused

    async def _token(self, challenge: Challenge, scopes: tuple[str, ...]) -> str:
        realm = challenge.params.get("realm", "")
        service = challenge.params.get("service", "")
        key = (realm, service, scopes)
        # One token request per key at a time: concurrent copies must not stampede the realm.
        async with self._locks.setdefault(key, asyncio.Lock()):
            if self._refused is not None:
                raise self._refused_again()
            cached = self._tokens.get(key)
            if cached is not None and cached.expires_at - _EXPIRY_MARGIN > self._clock():
                return cached.value
            if self._proven.is_set():
                token = await self._request_token(realm, service, scopes)
            else:
                async with self._first:
                    if self._refused is not None:
                        raise self._refused_again()
                    token = await self._request_token(realm, service, scopes)
                    self._proven.set()
            self._tokens[key] = token
            return token.value

    async def _request_token(self, realm: str, service: str, scopes: tuple[str, ...]) -> _Token:
        if not realm:
            raise AuthError(f"{self.registry} sent a Bearer challenge without a realm")
        params = [("service", service)] if service else []
        params += [("scope", scope) for scope in scopes]
        started = self._clock()
        response = await self._fetch_token(realm, params, self._basic)
        if response.status in (401, 403) and self._basic is not None:
            raise self._refuse(
                f"{self.registry} refused the configured credentials "
                f"(token service answered {response.status}){self._hint}",
                response.status,
            )
        if response.status in (401, 403):
            raise AuthError(
                f"{self.registry}: the token service refused anonymous access"
                f" to {' '.join(scopes) or 'the registry'}: configure credentials for it",
                registry=self.registry,
                status=response.status,
            )
        if response.status != 200:
            raise AuthError(
                f"{self.registry}: the token service answered {response.status}",
                registry=self.registry,
                status=response.status,
            )
        value = response.body.get("token") or response.body.get("access_token")
        if not isinstance(value, str) or not value:
            raise AuthError(f"{self.registry}: the token service sent no token")
        remember_token(value)  # before any request carries it (a registry may echo it back)
        lifetime = response.body.get("expires_in")
        seconds = lifetime if isinstance(lifetime, int) else _MIN_TOKEN_LIFETIME
        return _Token(value, started + max(seconds, _MIN_TOKEN_LIFETIME))
