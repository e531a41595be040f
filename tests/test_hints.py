"""Errors say what to do (issue "tell the truth", item 5): plain HTTP against an HTTPS
registry, a host name that does not resolve (not retried), a port nothing listens on."""

from __future__ import annotations

from pathlib import Path

from tests.support import (
    Blob,
    Image,
    Registry,
    RegistryFactory,
    TlsFiles,
    free_port,
    push,
    regsync_json,
    write_config,
)
from tests.support.observe import parse_metrics, sample


def _config(tmp_path: Path, source_host: str, dst: Registry) -> Path:
    return write_config(
        tmp_path,
        f"""
        version: 1
        registries:
          "{source_host}": {{tls: http}}
          "{dst.host}": {{tls: http}}
        rules:
          - {{name: r, source: "{source_host}/team/app", destination: "{dst.host}"}}
        """,
    )


def test_plain_http_to_an_https_registry_says_to_drop_tls_http(
    tmp_path: Path, registry_factory: RegistryFactory, dest_registry: Registry, tls_ca: TlsFiles
) -> None:
    """README "Credentials and TLS": the reverse of the WRONG_VERSION_NUMBER hint."""
    src = registry_factory(tls=tls_ca.server, ca_file=tls_ca.ca_pem)
    push(src, "team/app", "1.0", Image.docker([Blob.random(2000, seed="h")]))

    run = regsync_json("once", _config(tmp_path, src.host, dest_registry))

    assert run.code == 1
    (error,) = run.rule["errors"]
    assert error.endswith(
        f"-> 400: it speaks HTTPS, not plain HTTP: remove tls: http from registries.{src.host} "
        "(or set tls: insecure for a certificate it cannot verify)"
    ), error


def test_a_host_that_does_not_resolve_fails_at_once_without_retries(
    tmp_path: Path, dest_registry: Registry
) -> None:
    """One error "cannot resolve HOST"; one request, no retry (the default retry policy)."""
    host = "nosuchhost.invalid:5000"
    prom = tmp_path / "regsync.prom"

    run = regsync_json("once", _config(tmp_path, host, dest_registry), "--metrics-file", prom)

    assert run.code == 1
    (error,) = run.rule["errors"]
    assert error.startswith(f"source {host} is down: cannot resolve nosuchhost.invalid ("), error
    assert error.endswith("): check the host name")
    samples = parse_metrics(prom.read_text())
    tries = sample(
        samples, "regsync_registry_requests_total", registry=host, method="GET", status="error"
    )
    assert tries == 1
    assert not [k for k in samples if k[0] == "regsync_registry_retries_total"]


def test_a_closed_port_names_the_address_that_refused(
    tmp_path: Path, dest_registry: Registry
) -> None:
    host = f"127.0.0.1:{free_port()}"
    run = regsync_json(
        "once",
        _config(tmp_path, host, dest_registry),
        env={"REGSYNC_RETRY_ATTEMPTS": "2", "REGSYNC_RETRY_INITIAL": "0.01"},
    )
    assert run.code == 1
    assert run.rule["errors"] == [
        f"source {host} is down: cannot connect (connection refused by {host}: nothing listens "
        "there)"
    ]
