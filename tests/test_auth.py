"""Auth without I/O: challenge parsing, token scopes, caching and expiry."""

from __future__ import annotations

import pytest

from regsync.errors import AuthError
from regsync.registry.auth import Authenticator, TokenResponse, parse_challenges, scope_union

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
    assert await auth.on_unauthorized([REALM], scopes) == scopes
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
    await auth.on_unauthorized([REALM], scopes)
    assert await auth.header(scopes) == "Bearer t1"
    clock.now += 45  # under 60 - margin: still cached although expires_in said 5
    assert await auth.header(scopes) == "Bearer t1"
    clock.now += 10
    assert await auth.header(scopes) == "Bearer t2"
    assert tokens.calls[0][2] is None  # anonymous: no Basic header sent to the realm


async def test_insufficient_scope_asks_again_with_the_union() -> None:
    auth = Authenticator("reg", None, None, FakeTokens())
    wanted = await auth.on_unauthorized(
        [REALM + ',error="insufficient_scope",scope="repository:b:pull"'], ("repository:a:pull",)
    )
    assert wanted == ("repository:a:pull", "repository:b:pull")


async def test_refused_scope_is_an_auth_error_not_a_loop() -> None:
    auth = Authenticator("reg", "me", "pw", FakeTokens())
    scopes = ("repository:a:pull,push",)
    await auth.on_unauthorized([REALM], scopes)
    await auth.header(scopes)
    with pytest.raises(AuthError, match="did not grant repository:a:pull,push"):
        await auth.on_unauthorized([REALM + ',error="insufficient_scope"'], scopes)


async def test_basic_challenge_without_credentials_names_the_config_key() -> None:
    auth = Authenticator("reg.example:5000", None, None, FakeTokens())
    with pytest.raises(AuthError, match=r"registries\.reg\.example:5000\.credentials"):
        await auth.on_unauthorized(['Basic realm="x"'], ())


async def test_basic_credentials_refused_twice_is_an_error() -> None:
    auth = Authenticator("reg", "me", "wrong", FakeTokens())
    assert await auth.on_unauthorized(['Basic realm="x"'], ()) == ()
    assert (await auth.header(())) is not None
    with pytest.raises(AuthError, match="refused the configured credentials") as info:
        await auth.on_unauthorized(['Basic realm="x"'], ())
    assert "wrong" not in str(info.value)


async def test_token_service_refusal_is_reported_without_secrets() -> None:
    auth = Authenticator("reg", "me", "hunter2", FakeTokens(status=401))
    await auth.on_unauthorized([REALM], ())
    with pytest.raises(AuthError, match="refused the configured credentials") as info:
        await auth.header(())
    assert "hunter2" not in str(info.value)
