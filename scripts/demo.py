"""regsync demo: mirror a seeded local registry into an empty one and show the result.

    make demo                      # or: .venv/bin/python scripts/demo.py [--keep]

Starts two throwaway registries on loopback, pushes sample images under ``diamol/`` into the
source (a Docker image, a multi-arch OCI index, a Docker manifest list, sharing base layers),
writes a sync.yaml mirroring ``diamol/*``, runs ``regsync once``, then lists every destination
tag with its digest and whether it matches the source. Exit code is regsync's (or 1 on a
mismatch).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from tests.support import (  # noqa: E402
    DOCKER_LIST,
    DOCKER_MANIFEST,
    OCI_INDEX,
    OCI_MANIFEST,
    Registry,
    registries_yaml,
    seed_samples,
    write_config,
)

DEMO_CONFIG = """\
version: 1
{registries}
rules:
  - name: diamol
    source: {src}/diamol/*
    destination: {dst}
"""

KINDS = {
    DOCKER_MANIFEST: "Docker image",
    DOCKER_LIST: "Docker manifest list",
    OCI_MANIFEST: "OCI image",
    OCI_INDEX: "OCI image index",
}


def regsync_command() -> list[str]:
    exe = REPO_ROOT / ".venv" / "bin" / "regsync"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "regsync"]


def run_regsync(config: Path) -> int:
    cmd = [*regsync_command(), "once", "-c", str(config), "--json"]
    print(f"\n$ {' '.join(cmd)}", flush=True)
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    if result.stderr.strip():
        print("--- regsync log (stderr) ---\n" + result.stderr.rstrip())
    try:
        summary = json.loads(result.stdout)
        print("--- summary ---\n" + json.dumps(summary, indent=2))
    except json.JSONDecodeError:
        if result.stdout.strip():
            print("--- stdout ---\n" + result.stdout.rstrip())
    print(f"regsync exited with {result.returncode}")
    return result.returncode


def report(src: Registry, dst: Registry) -> bool:
    """Print each source tag with its destination digest; True if all match."""
    print(f"\n{'repository:tag':<24} {'destination digest':<30} match")
    all_ok = True
    for repo in src.catalog():
        for tag in src.tags(repo):
            want = src.manifest_digest(repo, tag)
            got = dst.manifest_digest(repo, tag)
            ok = got is not None and got == want
            all_ok &= ok
            shown = (got[:26] + "...") if got else "(missing)"
            print(f"{repo + ':' + tag:<24} {shown:<30} {'yes' if ok else 'NO'}")
    extra = sorted(set(dst.catalog()) - set(src.catalog()))
    if extra:
        print(f"destination-only repositories: {', '.join(extra)}")
    return all_ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="keep the temp dir and say where")
    args = parser.parse_args(argv)

    workdir = Path(tempfile.mkdtemp(prefix="regsync-demo-"))
    src = Registry(workdir / "source")
    dst = Registry(workdir / "destination")
    try:
        src.start()
        dst.start()
        print(f"source registry      {src.url}\ndestination registry {dst.url}")
        for pushed in seed_samples(src, namespace="diamol"):
            kind = KINDS.get(pushed.media_type, pushed.media_type)
            print(f"  seeded {pushed.ref:<20} {pushed.digest[:19]}...  {kind}")
        config = write_config(
            workdir,
            DEMO_CONFIG.format(
                registries=registries_yaml(src, dst).rstrip(), src=src.host, dst=dst.host
            ),
        )
        print(f"\nconfig {config}:\n{config.read_text()}")
        code = run_regsync(config)
        in_sync = report(src, dst)
        print("\nall tags mirrored with source digests" if in_sync else "\nmirror incomplete")
        return code or (0 if in_sync else 1)
    finally:
        src.stop()
        dst.stop()
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
