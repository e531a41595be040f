"""Credentials from sync.yaml or the Docker CLI config (auths, credHelpers, credsStore)."""

from __future__ import annotations

import base64
import json
import logging
import os
import stat
from pathlib import Path

import pytest

from regsync.config import Credentials, RegistryConfig
from regsync.credentials import HUB_SERVER_URL, docker_login, resolve_login
from tests.support import Blob, Image, RegistryFactory, plain_mirror_config, push, run_regsync


def auth(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


def docker_config(directory: Path, data: dict[str, object]) -> dict[str, str]:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(data))
    return {"DOCKER_CONFIG": str(directory), "PATH": os.environ.get("PATH", "")}


def helper(bin_dir: Path, name: str, logins: dict[str, tuple[str, str]]) -> Path:
    """A `docker-credential-<name>` script; it logs the server URLs it is asked about."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    script = bin_dir / f"docker-credential-{name}"
    asked = bin_dir / f"{name}.asked"
    table = {url: {"ServerURL": url, "Username": u, "Secret": p} for url, (u, p) in logins.items()}
    script.write_text(
        "#!/usr/bin/env python3\n"
        "import json, sys\n"
        f"table = {table!r}\n"
        "server = sys.stdin.read().strip()\n"
        f"open({str(asked)!r}, 'a').write(server + '\\n')\n"
        "if sys.argv[1:] != ['get'] or server not in table:\n"
        "    print('credentials not found in native keychain'); sys.exit(1)\n"
        "print(json.dumps(table[server]))\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return asked


def test_auths_entry_matches_every_spelling_of_the_host(tmp_path: Path) -> None:
    env = docker_config(
        tmp_path,
        {
            "auths": {
                HUB_SERVER_URL: {"auth": auth("hubuser", "hubpass")},
                "https://registry.local:5000/v2/": {"auth": auth("local", "pw:with:colons")},
            }
        },
    )
    for host in ("docker.io", "index.docker.io", "registry-1.docker.io"):
        login = docker_login(host, env)
        assert login is not None and (login.username, login.password) == ("hubuser", "hubpass")
    local = docker_login("registry.local:5000", env)
    assert local is not None and (local.username, local.password) == ("local", "pw:with:colons")
    assert "pw:with" not in repr(local)
    assert docker_login("other.example:5000", env) is None


def test_cred_helper_wins_over_store_and_auths_and_gets_hub_server_url(tmp_path: Path) -> None:
    asked = helper(tmp_path / "bin", "hubhelper", {HUB_SERVER_URL: ("helped", "secret1")})
    store_asked = helper(tmp_path / "bin", "store", {"registry.local:5000": ("stored", "s2")})
    env = docker_config(
        tmp_path / "cfg",
        {
            "auths": {"docker.io": {"auth": auth("plain", "p")}, "gone.example": {}},
            "credHelpers": {"docker.io": "hubhelper"},
            "credsStore": "store",
        },
    )
    env["PATH"] = f"{tmp_path / 'bin'}:{env['PATH']}"

    hub = docker_login("docker.io", env)
    local = docker_login("registry.local:5000", env)
    missing = docker_login("gone.example", env)

    assert hub is not None and (hub.username, hub.password) == ("helped", "secret1")
    assert local is not None and (local.username, local.password) == ("stored", "s2")
    assert missing is None  # the store has nothing and the auths entry is empty
    assert asked.read_text().splitlines() == [HUB_SERVER_URL]
    assert store_asked.read_text().splitlines() == ["registry.local:5000", "gone.example"]


def test_store_without_the_entry_falls_back_to_auths(tmp_path: Path) -> None:
    helper(tmp_path / "bin", "empty", {})
    env = docker_config(
        tmp_path / "cfg",
        {"auths": {"reg.example": {"auth": auth("u", "p")}}, "credsStore": "empty"},
    )
    env["PATH"] = f"{tmp_path / 'bin'}:{env['PATH']}"
    login = docker_login("reg.example", env)
    assert login is not None and login.username == "u"


def test_missing_helper_and_malformed_entries_warn_without_secrets(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    env = docker_config(
        tmp_path,
        {
            "auths": {
                "bad.example": {"auth": "!!notbase64"},
                "h.example": {"auth": auth("u", "p")},
            },
            "credHelpers": {"h.example": "nosuchhelper"},
        },
    )
    with caplog.at_level(logging.WARNING):
        assert docker_login("bad.example", env) is None
        login = docker_login("h.example", env)  # helper missing: the auths entry still counts
    assert login is not None and login.username == "u"
    assert "docker-credential-nosuchhelper is not on PATH" in caplog.text
    assert "malformed auth entry" in caplog.text


def test_sync_yaml_credentials_come_first(tmp_path: Path) -> None:
    env = docker_config(tmp_path, {"auths": {"reg.example": {"auth": auth("docker", "d")}}})
    settings = RegistryConfig(credentials=Credentials(username="yaml", password="y"))  # type: ignore[arg-type]
    login = resolve_login("reg.example", settings, env)
    assert login is not None and (login.username, login.origin) == ("yaml", "sync.yaml")
    fallback = resolve_login("reg.example", RegistryConfig(), env)
    assert fallback is not None and fallback.username == "docker"
    assert (
        resolve_login("reg.example", RegistryConfig(), {"DOCKER_CONFIG": str(tmp_path / "x")})
        is None
    )


def test_docker_config_credentials_reach_a_registry(
    tmp_path: Path, registry_factory: RegistryFactory
) -> None:
    """No credentials in sync.yaml: an htpasswd registry is read with `auths`, then with a
    credential helper on PATH; with neither, one clear error says what to configure."""
    src = registry_factory(htpasswd={"carol": "c4r0l"})
    dst = registry_factory()
    pushed = push(src, "team/app", "1.0", Image.docker([Blob.random(2_000, seed="creds")]))
    config = plain_mirror_config(
        tmp_path,
        src,
        dst,
        "team/app",
        name="creds",
    )

    env = docker_config(tmp_path / "none", {})
    proc = run_regsync("once", "-c", config, "--json", env=env)
    assert proc.returncode == 1
    (error,) = json.loads(proc.stdout)["rules"][0]["errors"]
    assert f"{src.host} requires credentials: add them under registries.{src.host}" in error

    env = docker_config(tmp_path / "auths", {"auths": {src.host: {"auth": auth("carol", "c4r0l")}}})
    proc = run_regsync("once", "-c", config, "--json", "-v", env=env)
    assert proc.returncode == 0, proc.stderr
    assert dst.manifest_digest("team/app", "1.0") == pushed.digest
    assert f"registry {src.host}: using credentials from docker config" in proc.stderr

    asked = helper(tmp_path / "bin", "test", {src.host: ("carol", "c4r0l")})
    env = docker_config(tmp_path / "helper", {"credsStore": "test"})
    env["PATH"] = f"{tmp_path / 'bin'}:{env['PATH']}"
    proc = run_regsync("once", "-c", config, "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["rules"][0]["tags"]["up_to_date"] == 1
    assert asked.read_text().splitlines().count(src.host) == 1  # asked once per run
    assert "c4r0l" not in proc.stderr + proc.stdout
