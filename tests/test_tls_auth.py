"""Token auth, htpasswd over TLS, mTLS and TLS modes against real docker-registry processes.

The token service is ours (tests/support/servers.py): its request log shows which scopes regsync
asked for, with which user, and how often (token caching).
"""

from __future__ import annotations

import json
import ssl
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import Blob, Image, Registry, RegistryFactory, TlsFiles, push, regsync_json
from tests.support import write_config as write
from tests.support.accesslog import ACCESS_LOG, AccessLog
from tests.support.servers import TokenServer

USERS = {"alice": "wonderland"}


@pytest.fixture
def tokens(tmp_path: Path) -> Iterator[TokenServer]:
    server = TokenServer(tmp_path, USERS)
    server.start()
    yield server
    server.stop()


def token_registry(factory: RegistryFactory, tokens: TokenServer, service: str) -> Registry:
    reg = factory(token_auth=tokens.registry_auth(service))
    reg.credentials = ("alice", USERS["alice"])  # the test client seeds and inspects with these
    return reg


def test_token_auth_asks_minimal_scopes_and_caches_tokens(
    tmp_path: Path, registry_factory: RegistryFactory, tokens: TokenServer
) -> None:
    """Pull on the source, pull+push on the destination, pull on the mount source; one token
    request per (registry, scope set) however many requests use it."""
    src = token_registry(registry_factory, tokens, "source-svc")
    dst = token_registry(registry_factory, tokens, "dest-svc")
    base = Blob.random(30_000, seed="tok-base")
    pushed = [
        push(src, "diamol/app", "1.0", Image.docker([base, Blob.random(5_000, seed="a1")])),
        push(src, "diamol/app", "2.0", Image.docker([base, Blob.random(5_000, seed="a2")])),
        push(src, "diamol/web", "1.0", Image.oci([base, Blob.random(5_000, seed="w1")])),
    ]
    seeded = len(tokens.requests())
    config = write(
        tmp_path,
        f"""
        version: 1
        registries:
          "{src.host}": {{tls: http, credentials: {{username: alice, password: "${{T_PW}}"}}}}
          "{dst.host}": {{tls: http, credentials: {{username: alice, password: "${{T_PW}}"}}}}
        rules:
          - {{name: tok, source: "{src.host}/diamol/*", destination: "{dst.host}/mirror"}}
        """,
    )

    code, summary, stderr = regsync_json("once", config, env={"T_PW": USERS["alice"]})

    assert code == 0, stderr
    (rule,) = summary["rules"]
    assert rule["tags"]["copied"] == 3 and rule["blobs"]["mounted"] >= 1, rule
    log = tokens.requests()[seeded:]  # before the checks below ask for tokens of their own
    for p in pushed:
        assert dst.manifest_digest(f"mirror/{p.repo}", p.tag) == p.digest
    assert {r.user for r in log} == {"alice"} and {r.status for r in log} == {200}
    source = {r.scopes for r in log if r.service == "source-svc"}
    dest = {r.scopes for r in log if r.service == "dest-svc"}
    assert source == {
        ("registry:catalog:*",),
        ("repository:diamol/app:pull",),
        ("repository:diamol/web:pull",),
    }
    assert {"repository:mirror/diamol/app:pull,push", "repository:mirror/diamol/web:pull,push"} <= {
        s[0] for s in dest if len(s) == 1
    }
    assert not any(":push" in scope for s in source for scope in s)
    mounts = [s for s in dest if len(s) == 2]
    assert mounts, dest  # a mount asks pull+push on the target AND pull on the other repo
    assert all(sorted(a.rsplit(":", 1)[1] for a in s) == ["pull", "pull,push"] for s in mounts)
    repeats = Counter((r.service, r.scopes) for r in log)
    assert max(repeats.values()) == 1, repeats  # cached: never asked twice for the same token


def test_bad_credentials_fail_once_with_one_clear_line(
    tmp_path: Path, registry_factory: RegistryFactory, tokens: TokenServer
) -> None:
    """A refused password is one error naming the registry; no retry storm at the realm."""
    src = token_registry(registry_factory, tokens, "source-svc")
    for n in range(3):
        push(src, f"team/app{n}", "1.0", Image.docker([Blob.random(2_000, seed=f"bad{n}")]))
    seeded = len(tokens.requests())
    config = write(
        tmp_path,
        f"""
        version: 1
        registries:
          "{src.host}": {{tls: http, credentials: {{username: alice, password: wrong}}}}
          "127.0.0.1:9": {{tls: http}}
        rules:
          - {{name: glob, source: "{src.host}/team/*", destination: "127.0.0.1:9"}}
          - {{name: one, source: "{src.host}/team/app1", destination: "127.0.0.1:9/one"}}
        """,
    )

    code, summary, stderr = regsync_json("once", config)

    assert code == 1
    errors = [e for r in summary["rules"] for e in r["errors"]]
    assert len(errors) == 2, errors  # one per rule, not one per repository or tag
    assert all(f"{src.host} refused the configured credentials" in e for e in errors)
    assert "wrong" not in stderr and "wrong" not in json.dumps(summary)
    refused = [r for r in tokens.requests()[seeded:] if r.status == 401]
    assert len(tokens.requests()) - seeded == 1 and len(refused) == 1


def test_htpasswd_over_tls_with_ca_file_and_password_file(
    tmp_path: Path, registry_factory: RegistryFactory, tls_ca: TlsFiles
) -> None:
    src = registry_factory(htpasswd={"bob": "builder"}, tls=tls_ca.server, ca_file=tls_ca.ca_pem)
    dst = registry_factory()
    pushed = push(src, "team/app", "1.0", Image.docker([Blob.random(3_000, seed="tls")]))
    (tmp_path / "pw").write_text("builder\n")
    config = write(
        tmp_path,
        f"""
        version: 1
        registries:
          "{src.host}":
            ca_file: {tls_ca.ca_pem}
            credentials: {{username: bob, password_file: pw}}
          "{dst.host}": {{tls: http}}
        rules:
          - {{name: tls, source: "{src.host}/team/app", destination: "{dst.host}"}}
        """,
    )

    code, _, stderr = regsync_json("once", config)

    assert code == 0, stderr
    assert dst.manifest_digest("team/app", "1.0") == pushed.digest
    assert "builder" not in stderr


def test_untrusted_certificate_is_one_clear_error_and_insecure_is_announced(
    tmp_path: Path, registry_factory: RegistryFactory, tls_ca: TlsFiles
) -> None:
    src = registry_factory(tls=tls_ca.server, ca_file=tls_ca.ca_pem)
    dst = registry_factory()
    pushed = push(src, "team/app", "1.0", Image.docker([Blob.random(3_000, seed="untrusted")]))
    text = """
        version: 1
        registries:
          "{src}": {{{mode}}}
          "{dst}": {{tls: http}}
        rules:
          - {{name: tls, source: "{src}/team/app", destination: "{dst}"}}
        """

    config = write(tmp_path, text.format(src=src.host, dst=dst.host, mode=""))
    code, summary, stderr = regsync_json("once", config)
    assert code == 1
    (error,) = summary["rules"][0]["errors"]
    assert "TLS handshake failed" in error and f"registries.{src.host}.ca_file" in error

    config = write(tmp_path, text.format(src=src.host, dst=dst.host, mode="tls: insecure"))
    code, summary, stderr = regsync_json("once", config)
    assert code == 0, stderr
    assert f"registry {src.host}: TLS certificate checks are OFF (tls: insecure" in stderr
    assert dst.manifest_digest("team/app", "1.0") == pushed.digest


def test_mutual_tls_with_client_certificate(
    tmp_path: Path, registry_factory: RegistryFactory, tls_ca: TlsFiles
) -> None:
    """A registry requiring client certificates serves regsync once client_cert/key are set."""
    client = tls_ca.ca.issue_cert("regsync-client@example.test")
    client.cert_chain_pems[0].write_to_path(str(tmp_path / "client.pem"))
    client.private_key_pem.write_to_path(str(tmp_path / "client.key"))
    context = ssl.create_default_context(cafile=str(tls_ca.ca_pem))
    context.load_cert_chain(tmp_path / "client.pem", tmp_path / "client.key")
    src = Registry(
        tmp_path / "mtls",
        tls=tls_ca.server,
        extra_config={"http": {"tls": {"clientcas": [str(tls_ca.ca_pem)]}}},
    )
    # The test client (used to wait for start-up and to seed) presents the client cert too.
    src._opener = lambda: urllib.request.build_opener(  # type: ignore[method-assign]
        urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context)
    )
    dst = registry_factory()
    text = """
        version: 1
        registries:
          "{src}": {{ca_file: {ca}{mtls}}}
          "{dst}": {{tls: http}}
        rules:
          - {{name: mtls, source: "{src}/team/app", destination: "{dst}"}}
        """
    with src:
        pushed = push(src, "team/app", "1.0", Image.docker([Blob.random(3_000, seed="mtls")]))
        values = dict(src=src.host, dst=dst.host, ca=tls_ca.ca_pem)

        config = write(tmp_path, text.format(**values, mtls=""))
        code, summary, _ = regsync_json("once", config)
        assert code == 1
        (error,) = summary["rules"][0]["errors"]  # no client cert: refused, said clearly
        assert "TLS handshake failed" in error and f"{src.host}.client_cert/client_key" in error

        mtls = ", client_cert: client.pem, client_key: client.key"
        config = write(tmp_path, text.format(**values, mtls=mtls))
        code, summary, stderr = regsync_json("once", config)
    assert code == 0, stderr
    assert dst.manifest_digest("team/app", "1.0") == pushed.digest


def test_htpasswd_glob_mirrors_every_repository_with_default_concurrency(
    tmp_path: Path, registry_factory: RegistryFactory
) -> None:
    """Basic auth on both sides, a glob of 4 repositories sharing a layer, default concurrency:
    the requests sent before the Basic challenge was known get a 401 each, and none of those
    counts as a refusal of the credentials (they never carried them)."""
    src = registry_factory(htpasswd={"reader": "src-pass-1"}, extra_config=ACCESS_LOG)
    dst = registry_factory(htpasswd={"writer": "dst-pass-2"}, extra_config=ACCESS_LOG)
    base = Blob.random(8_000, seed="basic-base")
    pushed = [
        push(src, f"team/app{n}", tag, Image.docker([base, Blob.random(2_000, seed=f"b{n}{tag}")]))
        for n in range(4)
        for tag in ("1", "2")
    ]
    src_log, dst_log = AccessLog(src), AccessLog(dst)
    config = write(
        tmp_path,
        f"""
        version: 1
        registries:
          "{src.host}": {{tls: http, credentials: {{username: reader, password: src-pass-1}}}}
          "{dst.host}": {{tls: http, credentials: {{username: writer, password: dst-pass-2}}}}
        rules:
          - {{name: glob, source: "{src.host}/team/*", destination: "{dst.host}/mirror"}}
        """,
    )

    code, summary, stderr = regsync_json("once", config)

    assert code == 0, (summary, stderr)
    (rule,) = summary["rules"]
    assert rule["repos"] == 4 and rule["tags"]["copied"] == 8 and not rule["errors"], rule
    for p in pushed:
        assert dst.manifest_digest(f"mirror/{p.repo}", p.tag) == p.digest
    # One 401 per request in flight before the challenge was learnt: the catalog alone on the
    # source; at the destination each repository's first request (4 measured), and never more
    # than the default max_concurrency (8) request slots.
    src_401 = [r for r in src_log.requests() if r.status == 401]
    dst_401 = [r for r in dst_log.requests() if r.status == 401]
    assert len(src_401) == 1, src_401
    assert 1 <= len(dst_401) <= 8, dst_401

    code, summary, stderr = regsync_json("check", config)
    assert code == 0, (summary, stderr)
    assert summary["rules"][0]["tags"]["failed"] == 0 and not summary["rules"][0]["errors"]
