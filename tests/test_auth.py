"""Auth without I/O: challenge parsing, token scopes, caching and expiry."""

from __future__ import annotations

import asyncio
import base64

import pytest

from regsync.backends.registry.auth import (
    Authenticator,
    TokenResponse,
    parse_challenges,
    scope_union,
)
from regsync.errors import AuthError

REALM = 'Bearer realm="https://auth.example/token",service="registry.example"'


def test_parses_several_challenges_case_insensitively_with_quotes() -> None:
    (bearer, basic) = parse_challenges(
        [
            r'BEARER realm="https://a/t",service="s",scope="repository:x:pull,push", '
            r'Basic realm="r\"q"'
        ]
    )
    assert bearer.scheme == "bearer"
    assert bearer.params == {
        "realm": "https://a/t",
        "service": "s",
        "scope": "repository:x:pull,push",
    }
    assert basic.scheme == "basic" and basic.params == {"realm": 'r"q'}


def test_scope_union_merges_actions_per_resource() -> None:
    assert scope_union(["repository:a:pull"], ["repository:a:push", "repository:b:pull"]) == (
        "repository:a:pull,push",
        "repository:b:pull",
    )


class FakeTokens:
    def __init__(self, status: int = 200, expires_in: int | None = 300) -> None:
        self.calls: list[tuple[str, list[tuple[str, str]], str | None]] = []
        self.status = status
        self.expires_in = expires_in

    async def __call__(
        self, realm: str, params: list[tuple[str, str]], basic: str | None
    ) -> TokenResponse:
        self.calls.append((realm, params, basic))
        body: dict[str, object] = {"token": f"t{len(self.calls)}"}
        if self.expires_in is not None:
            body["expires_in"] = self.expires_in
        return TokenResponse(self.status, body)


class Clock:
    now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_bearer_token_is_fetched_once_per_scope_and_cached() -> None:
    tokens = FakeTokens()
    auth = Authenticator("reg", "me", "secret", tokens)
    scopes = ("repository:a:pull",)
    assert await auth.header(scopes) is None  # scheme unknown before the first 401
    assert await auth.on_unauthorized([REALM], scopes, None) == scopes
    assert await auth.header(scopes) == "Bearer t1"
    assert await auth.header(scopes) == "Bearer t1"
    assert await auth.header(("repository:b:pull",)) == "Bearer t2"
    realm, params, basic = tokens.calls[0]
    assert realm == "https://auth.example/token"
    assert params == [("service", "registry.example"), ("scope", "repository:a:pull")]
    assert basic is not None and basic.startswith("Basic ")


async def test_token_renewed_before_expiry_and_short_lifetimes_mean_60s() -> None:
    tokens, clock = FakeTokens(expires_in=5), Clock()
    auth = Authenticator("reg", None, None, tokens, clock=clock)
    scopes = ("repository:a:pull",)
    await auth.on_unauthorized([REALM], scopes, None)
    assert await auth.header(scopes) == "Bearer t1"
    clock.now += 45  # under 60 - margin: still cached although expires_in said 5
    assert await auth.header(scopes) == "Bearer t1"
    clock.now += 10
    assert await auth.header(scopes) == "Bearer t2"
    assert tokens.calls[0][2] is None  # anonymous: no Basic header sent to the realm


async def test_insufficient_scope_asks_again_with_the_union() -> None:
    auth = Authenticator("reg", None, None, FakeTokens())
    wanted = await auth.on_unauthorized(
        [REALM + ',error="insufficient_scope",scope="repository:b:pull"'],
        ("repository:a:pull",),
        None,
    )
    assert wanted == ("repository:a:pull", "repository:b:pull")


async def test_refused_scope_is_an_auth_error_not_a_loop() -> None:
    auth = Authenticator("reg", "me", "pw", FakeTokens())
    scopes = ("repository:a:pull,push",)
    await auth.on_unauthorized([REALM], scopes, None)
    sent = await auth.header(scopes)
    with pytest.raises(AuthError, match="did not grant repository:a:pull,push"):
        await auth.on_unauthorized([REALM + ',error="insufficient_scope"'], scopes, sent)


async def test_basic_challenge_without_credentials_names_the_config_key() -> None:
    auth = Authenticator("reg.example:5000", None, None, FakeTokens())
    with pytest.raises(AuthError, match=r"registries\.reg\.example:5000\.credentials"):
        await auth.on_unauthorized(['Basic realm="x"'], (), None)


async def test_basic_credentials_refused_twice_is_an_error() -> None:
    auth = Authenticator("reg", "me", "wrong", FakeTokens())
    assert await auth.on_unauthorized(['Basic realm="x"'], (), None) == ()
    sent = await auth.header(())
    assert sent is not None
    with pytest.raises(AuthError, match="refused the configured credentials") as info:
        await auth.on_unauthorized(['Basic realm="x"'], (), sent)
    assert "wrong" not in str(info.value)


async def test_token_service_refusal_is_reported_without_secrets() -> None:
    auth = Authenticator("reg", "me", "hunter2", FakeTokens(status=401))
    await auth.on_unauthorized([REALM], (), None)
    with pytest.raises(AuthError, match="refused the configured credentials") as info:
        await auth.header(())
    assert "hunter2" not in str(info.value)


class FakeRegistry:
    """Answers like a registry behind auth: 401 with ``challenge`` unless the request carries
    one of the ``accepted`` Authorization values. No sockets: just the decision."""

    def __init__(self, challenge: str, accepted: set[str]) -> None:
        self.challenge = challenge
        self.accepted = accepted
        self.unauthorized = 0

    def answer(self, authorization: str | None) -> int:
        if authorization in self.accepted:
            return 200
        self.unauthorized += 1
        return 401


async def concurrent_requests(
    auth: Authenticator, registry: FakeRegistry, scopes: list[tuple[str, ...]]
) -> list[int]:
    """Requests that all go out before any answer is back (as a glob's first requests do),
    each then following the transport's loop: header, send, learn from a 401, send again."""
    all_sent = asyncio.Event()
    pending = [len(scopes)]

    async def one(wanted: tuple[str, ...]) -> int:
        for attempt in range(3):
            sent = await auth.header(wanted)
            if attempt == 0:
                pending[0] -= 1
                if not pending[0]:
                    all_sent.set()
                await all_sent.wait()  # every request is on the wire before the first answer
            status = registry.answer(sent)
            if status != 401:
                return status
            retry = await auth.on_unauthorized([registry.challenge], wanted, sent)
            if retry is None:
                return status
            wanted = retry
        return 401

    return list(await asyncio.gather(*(one(s) for s in scopes)))


async def test_concurrent_requests_before_a_basic_challenge_are_not_a_refusal() -> None:
    auth = Authenticator("reg", "me", "right", FakeTokens())
    basic = "Basic " + base64.b64encode(b"me:right").decode()
    registry = FakeRegistry('Basic realm="r"', {basic})
    scopes = [(f"repository:app{n}:pull",) for n in range(4)]

    assert await concurrent_requests(auth, registry, scopes) == [200] * 4
    assert registry.unauthorized == 4  # one per request sent without credentials, no more
    assert await auth.header(scopes[0]) == basic  # and the credentials are not marked refused


async def test_a_401_to_the_configured_basic_credentials_is_a_refusal() -> None:
    auth = Authenticator("reg", "me", "wrong", FakeTokens())
    registry = FakeRegistry('Basic realm="r"', set())
    with pytest.raises(AuthError, match="refused the configured credentials"):
        await concurrent_requests(auth, registry, [("repository:a:pull",)] * 3)
    assert registry.unauthorized == 4  # three without credentials, one that carried them


async def test_concurrent_requests_before_a_bearer_challenge_share_one_token() -> None:
    tokens = FakeTokens()
    auth = Authenticator("reg", "me", "pw", tokens)
    registry = FakeRegistry(REALM, {"Bearer t1"})
    scope = ("repository:a:pull",)

    assert await concurrent_requests(auth, registry, [scope] * 3) == [200] * 3
    assert len(tokens.calls) == 1  # the late 401s (no credentials sent) kept the fresh token


async def test_a_401_to_an_older_token_fetches_no_new_one_and_is_not_a_refusal() -> None:
    tokens = FakeTokens()
    auth = Authenticator("reg", "me", "pw", tokens)
    scope = ("repository:a:pull",)
    await auth.on_unauthorized([REALM], scope, None)
    assert await auth.header(scope) == "Bearer t1"
    expired = REALM + ',error="invalid_token"'
    # t1 expired early: the first request to see it gets a new token...
    assert await auth.on_unauthorized([expired], scope, "Bearer t1") == scope
    assert await auth.header(scope) == "Bearer t2"
    # ...and a request that was sent with t1 meanwhile just retries with t2.
    assert await auth.on_unauthorized([expired], scope, "Bearer t1") == scope
    assert await auth.header(scope) == "Bearer t2"
    assert len(tokens.calls) == 2
    # A plain 401 to the current token (granted less than asked): an error, not a loop.
    with pytest.raises(AuthError, match="did not grant"):
        await auth.on_unauthorized([REALM], scope, "Bearer t2")
