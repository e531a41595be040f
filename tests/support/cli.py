"""Run regsync as a user would (a subprocess) and write its config files."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from .client import RegistryClient
from .registry import Registry

REPO_ROOT = Path(__file__).resolve().parents[2]

# A registry that is down should fail the run quickly, not after the default backoff.
FAST_RETRIES = {
    "REGSYNC_RETRY_ATTEMPTS": "2",
    "REGSYNC_RETRY_INITIAL": "0.05",
    "REGSYNC_RETRY_MAX": "0.1",
}


def run_regsync(
    *args: str | os.PathLike[str],
    env: Mapping[str, str] | None = None,
    timeout: float = 120,
    cwd: Path | str | None = None,
) -> subprocess.CompletedProcess[str]:
    """``python -m regsync *args`` with stdout/stderr captured as text; never raises on exit code.

    ``env`` is laid over the current environment (it does not replace it).
    """
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "regsync", *map(str, args)],
        env=full_env,
        cwd=cwd or REPO_ROOT,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def write_config(tmp_path: Path, text: str, name: str = "sync.yaml") -> Path:
    """Write ``text`` (dedented) to ``tmp_path/name`` and return the path."""
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def registries_yaml(*registries: RegistryClient, indent: int = 2) -> str:
    """The ``registries:`` block that makes regsync talk plain HTTP to local test registries."""
    pad = " " * indent
    lines = ["registries:"]
    for reg in registries:
        host = reg.url.split("://", 1)[1]
        lines.append(f'{pad}"{host}":')
        if reg.url.startswith("http://"):
            lines.append(f"{pad}{pad}tls: http")
        elif reg.ca_file is not None:
            lines.append(f"{pad}{pad}ca_file: {reg.ca_file}")
    return "\n".join(lines) + "\n"


def only_rule(summary: Mapping[str, Any]) -> dict[str, Any]:
    """The one entry of ``summary["rules"]``; fails unless there is exactly one."""
    rules: list[dict[str, Any]] = summary["rules"]
    (only,) = rules
    return only


class Summary(NamedTuple):
    """What ``regsync <command> --json`` returned: exit code, parsed JSON summary, stderr."""

    code: int
    data: dict[str, Any]
    stderr: str

    @property
    def rule(self) -> dict[str, Any]:
        """The single rule's result (for one-rule configs); fails unless there is one."""
        return only_rule(self.data)


def regsync_json(
    command: str,
    config: Path,
    *args: str | os.PathLike[str],
    env: Mapping[str, str] | None = None,
    timeout: float = 120,
) -> Summary:
    """Run ``regsync <command> -c config --json *args``; asserts it printed a summary."""
    proc = run_regsync(command, "-c", config, "--json", *args, env=env, timeout=timeout)
    assert proc.stdout, proc.stderr
    return Summary(proc.returncode, json.loads(proc.stdout), proc.stderr)


def registry_rules_config(tmp_path: Path, src: Registry, dst: Registry, rules: str) -> Path:
    """``registries_yaml(src, dst)`` and ``rules`` (the YAML list items of ``rules:``,
    dedented and re-indented as its items)."""
    body = textwrap.indent(textwrap.dedent(rules).strip("\n"), "  ")
    return write_config(tmp_path, registries_yaml(src, dst) + f"version: 1\nrules:\n{body}\n")


def mirror_config(
    tmp_path: Path,
    src: Registry,
    dst: Registry,
    source: str,
    extra: str = "",
    dest: str = "",
    name: str = "mirror",
) -> Path:
    """One rule ``name`` from ``src/source`` to ``dst`` (plus ``dest`` path), with ``extra``
    rule keys (YAML, re-indented as rule keys)."""
    body = textwrap.indent(textwrap.dedent(extra).strip("\n"), "  ")
    rule = f"- name: {name}\n  source: {src.host}/{source}\n  destination: {dst.host}{dest}\n"
    return registry_rules_config(tmp_path, src, dst, rule + body)


class HasHost(Protocol):
    """A test registry (real or scripted): regsync reaches it at ``host``."""

    @property
    def host(self) -> str: ...


def plain_yaml(
    src: HasHost, dst: HasHost, rules: str, *, src_keys: str = "", dst_keys: str = ""
) -> str:
    """Config text: ``src`` and ``dst`` over plain HTTP, then ``rules`` (the YAML list items of
    ``rules:``, dedented and re-indented). ``src_keys``/``dst_keys``: more keys of that
    registry, as YAML flow-mapping entries (``credentials: {username: u, password: p}``)."""

    def entry(reg: HasHost, keys: str) -> str:
        return f'  "{reg.host}": {{tls: http{", " + keys if keys else ""}}}\n'

    body = textwrap.indent(textwrap.dedent(rules).strip("\n"), "  ")
    return (
        "version: 1\nregistries:\n"
        + entry(src, src_keys)
        + entry(dst, dst_keys)
        + f"rules:\n{body}\n"
    )


def plain_config(
    tmp_path: Path,
    src: HasHost,
    dst: HasHost,
    rules: str,
    *,
    src_keys: str = "",
    dst_keys: str = "",
) -> Path:
    """``plain_yaml`` written to ``tmp_path/sync.yaml``."""
    return write_config(tmp_path, plain_yaml(src, dst, rules, src_keys=src_keys, dst_keys=dst_keys))


def mirror_rule(src: HasHost, dst: HasHost, source: str, dest: str = "", name: str = "p") -> str:
    """One rule (a YAML list item) ``name`` from ``src/source`` to ``dst`` (plus ``dest``)."""
    return f'- {{name: {name}, source: "{src.host}/{source}", destination: "{dst.host}{dest}"}}'


def plain_mirror_config(
    tmp_path: Path,
    src: HasHost,
    dst: HasHost,
    source: str,
    dest: str = "",
    *,
    name: str = "p",
    src_keys: str = "",
    dst_keys: str = "",
) -> Path:
    """``plain_config`` with the one rule ``mirror_rule`` makes."""
    rule = mirror_rule(src, dst, source, dest, name)
    return plain_config(tmp_path, src, dst, rule, src_keys=src_keys, dst_keys=dst_keys)


def layout_import_yaml(layout: Path, dst: HasHost, name: str = "import") -> str:
    """Config text: rule ``name`` copies the OCI layout at ``layout`` to ``dst/mirror`` (plain
    HTTP)."""
    rule = f'{{name: {name}, source: "oci:{layout}", destination: "{dst.host}/mirror"}}'
    return f'version: 1\nregistries:\n  "{dst.host}": {{tls: http}}\nrules:\n  - {rule}\n'


def mirrored_config(tmp_path: Path, primary: str, mirror: HasHost, dst: HasHost) -> Path:
    """Rule ``m`` copies ``primary/team/*`` to ``dst``; ``primary`` (host:port) reads from
    ``mirror`` when it fails. All plain HTTP."""
    return write_config(
        tmp_path,
        f"""
        version: 1
        registries:
          "{primary}": {{tls: http, mirrors: ["{mirror.host}"]}}
          "{mirror.host}": {{tls: http}}
          "{dst.host}": {{tls: http}}
        rules:
          - {{name: m, source: "{primary}/team/*", destination: "{dst.host}"}}
        """,
    )


async def regsync_json_async(
    command: str,
    config: Path,
    *args: str | os.PathLike[str],
    env: Mapping[str, str] | None = None,
) -> Summary:
    """``regsync_json`` without blocking the event loop, for runs against scripted servers
    that live in the test's own loop."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "regsync",
        command,
        "-c",
        str(config),
        "--json",
        *map(str, args),
        env={**os.environ, **(env or {})},
        cwd=REPO_ROOT,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(120):
        stdout, stderr = await proc.communicate()
    assert stdout, stderr.decode()
    assert proc.returncode is not None
    return Summary(proc.returncode, json.loads(stdout), stderr.decode())
