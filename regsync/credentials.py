"""Where a registry's credentials come from: sync.yaml, else the Docker CLI's config.json.

Order for one registry host:
1. ``registries.<host>.credentials`` in sync.yaml (``password`` with ``${VAR}``, or
   ``password_file``);
2. the Docker config (``$DOCKER_CONFIG/config.json``, else ``~/.docker/config.json``):
   ``credHelpers[<host>]``, else ``credsStore``, each run as ``docker-credential-<name> get``,
   else the base64 ``auth`` of the matching ``auths`` entry;
3. anonymous.

Docker keys Docker Hub as ``https://index.docker.io/v1/``; any spelling of a host (with a
scheme, a path, or a Docker Hub alias) matches. Secrets are never logged.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from regsync import boundedjson
from regsync.config import RegistryConfig
from regsync.oci.ref import DOCKER_HUB, normalize_host

log = logging.getLogger(__name__)

HUB_SERVER_URL = "https://index.docker.io/v1/"  # the key `docker login` uses for Docker Hub
HELPER_TIMEOUT = 30.0


@dataclass(frozen=True)
class Login:
    username: str
    password: str = field(repr=False)
    origin: str  # where it came from, for the log: "sync.yaml", "docker config.json auths", ...


def resolve_login(
    host: str, settings: RegistryConfig, env: Mapping[str, str] | None = None
) -> Login | None:
    """The credentials to use for ``host``, or None for anonymous access."""
    if settings.credentials is not None:
        creds = settings.credentials
        return Login(creds.username, creds.secret(), "sync.yaml")
    login = docker_login(host, os.environ if env is None else env)
    if login is not None:
        log.info("registry %s: using credentials from %s", host, login.origin)
    return login


def docker_config_path(env: Mapping[str, str]) -> Path:
    if env.get("DOCKER_CONFIG"):
        return Path(env["DOCKER_CONFIG"]).expanduser() / "config.json"
    home = env.get("HOME") or str(Path.home())
    return Path(home) / ".docker" / "config.json"


def docker_login(host: str, env: Mapping[str, str]) -> Login | None:
    """Credentials for ``host`` from the Docker CLI config, or None."""
    path = docker_config_path(env)
    config = _read_config(path)
    if not config:
        return None
    host = normalize_host(host)
    auths = _section(config, "auths")
    entry_key = next((k for k in auths if _host_of(k) == host), None)
    helpers = _section(config, "credHelpers")
    helper = next((v for k, v in helpers.items() if _host_of(k) == host), None)
    helper = helper or config.get("credsStore")
    if isinstance(helper, str) and helper:
        server = HUB_SERVER_URL if host == DOCKER_HUB else (entry_key or host)
        login = _from_helper(helper, server, host, env)
        if login is not None:
            return login
    if entry_key is None:
        return None
    entry = auths[entry_key]
    return _from_auth_entry(entry, host, path) if isinstance(entry, dict) else None


def _read_config(path: Path) -> dict[str, Any]:
    try:
        data = boundedjson.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.warning("ignoring docker config %s: %s", path, exc.__class__.__name__)
        return {}
    return data if isinstance(data, dict) else {}


def _section(config: dict[str, Any], key: str) -> dict[str, Any]:
    value = config.get(key)
    return value if isinstance(value, dict) else {}


def _host_of(key: str) -> str:
    """`https://index.docker.io/v1/` -> docker.io; `registry.local:5000` -> itself."""
    text = key.strip()
    if "://" in text:
        text = text.split("://", 1)[1]
    return normalize_host(text.split("/", 1)[0])


def _from_auth_entry(entry: dict[str, Any], host: str, path: Path) -> Login | None:
    if entry.get("identitytoken"):
        log.warning(
            "registry %s: docker config %s holds an identity token (OAuth), which regsync "
            "cannot use: set registries.%s.credentials instead",
            host,
            path,
            host,
        )
    encoded = entry.get("auth")
    if isinstance(encoded, str) and encoded:
        try:
            user, sep, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            user, sep, password = "", "", ""
        if sep and user:
            return Login(user, password, f"docker config {path} auths")
        log.warning("registry %s: ignoring a malformed auth entry in %s", host, path)
        return None
    name, secret = entry.get("username"), entry.get("password")
    if isinstance(name, str) and name and isinstance(secret, str):
        return Login(name, secret, f"docker config {path} auths")
    return None


def _from_helper(name: str, server: str, host: str, env: Mapping[str, str]) -> Login | None:
    program = f"docker-credential-{name}"
    try:
        proc = subprocess.run(
            [program, "get"],
            input=server,
            capture_output=True,
            text=True,
            timeout=HELPER_TIMEOUT,
            env=dict(env),
            check=False,
        )
    except FileNotFoundError:
        log.warning("registry %s: credential helper %s is not on PATH", host, program)
        return None
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.warning("registry %s: credential helper %s failed: %s", host, program, type(exc))
        return None
    if proc.returncode != 0:
        # "credentials not found in native keychain" is the usual reason: not an error.
        log.debug("registry %s: %s has no credentials for %s", host, program, server)
        return None
    try:
        data = boundedjson.loads(proc.stdout)
        user, secret = data["Username"], data["Secret"]
    except (ValueError, KeyError, TypeError):
        log.warning("registry %s: credential helper %s printed no usable JSON", host, program)
        return None
    if not isinstance(user, str) or not isinstance(secret, str) or not user:
        return None
    if user == "<token>":
        log.warning("registry %s: %s returned an identity token (unsupported)", host, program)
        return None
    return Login(user, secret, f"credential helper {program}")
