"""Run regsync as a user would (a subprocess) and write its config files."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Mapping
from pathlib import Path

from .client import RegistryClient

REPO_ROOT = Path(__file__).resolve().parents[2]


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
