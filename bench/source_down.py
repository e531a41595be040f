"""A source registry killed during a copy: what the run costs and says (issue "tell the truth").

    .venv/bin/python bench/source_down.py [--code DIR] [--after 3]

Two real registries on loopback; the source holds 4 repositories x 4 tags of two 9 MB layers.
`regsync once` (default retry policy) starts, the source is SIGKILLed ``--after`` seconds later.
Prints the run's duration, its errors and `undone` lines, and the failed requests and retries
charged to each side (from its --metrics-file). ``--code`` runs another checkout's regsync (its
source tree) for a before/after comparison.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support import Registry, seed_catalogue  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--code", default=str(ROOT), help="the regsync source tree to run")
    parser.add_argument("--after", type=float, default=3.0, help="seconds before the kill")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="regsync-down-"))
    src, dst = Registry(work / "src").start(), Registry(work / "dst").start()
    try:
        seed_catalogue(src, repos=4, tags=4, layers=2, layer_size=9_000_000, shared_base=False)
        config = work / "sync.yaml"
        config.write_text(
            f'version: 1\nregistries:\n  "{src.host}": {{tls: http}}\n'
            f'  "{dst.host}": {{tls: http}}\nrules:\n'
            f'  - {{name: m, source: "{src.host}/diamol/*", destination: "{dst.host}"}}\n'
        )
        prom = work / "run.prom"
        command = ["once", "-c", str(config), "--json", "--metrics-file", str(prom)]
        started = time.monotonic()
        proc = subprocess.Popen(
            [sys.executable, "-m", "regsync", *command],
            cwd=args.code,
            env={**os.environ, "PYTHONPATH": args.code},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(args.after)
        src.kill()
        out, err = proc.communicate(timeout=900)
        took = time.monotonic() - started
        rule = json.loads(out)["rules"][0]
        lines = prom.read_text().splitlines()

        def total(metric: str, host: str, extra: str = "") -> float:
            return sum(
                float(line.rsplit(" ", 1)[1])
                for line in lines
                if line.startswith(metric + "{") and f'"{host}"' in line and extra in line
            )

        tags = rule["tags"]
        print(
            f"exit {proc.returncode} after {took:.1f} s: copied {tags['copied']}, failed "
            f"{tags['failed']}; {len(rule['errors'])} errors, {len(rule.get('undone', []))} "
            f"undone; ERROR log lines {err.count('ERROR')}"
        )
        for side, reg in (("source", src), ("destination", dst)):
            failed = total("regsync_registry_requests_total", reg.host, 'status="error"')
            retries = total("regsync_registry_retries_total", reg.host)
            print(f"{side}: {failed:.0f} requests without an answer, {retries:.0f} retries")
        for error in rule["errors"][:3]:
            print("  error:", error)
        if os.environ.get("SHOW_STDERR"):
            print(err)
    finally:
        dst.stop()
        src.stop()


if __name__ == "__main__":
    main()
