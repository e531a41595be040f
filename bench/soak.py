"""Soak: 500+ tags mirrored through fault-injecting proxies on both sides; must converge.

    make soak            # or: .venv/bin/python bench/soak.py [--repos 25 --tags 20 --rate 0.02]

Two real registries on loopback, a FaultProxy in front of each injecting random faults (resets,
truncations, stalls, 500/502/503/429, wrong bytes) into ``rate`` of all requests, seeded. regsync
runs `once` up to ``--runs`` times with the faults active throughout. After every run no
destination tag may reference missing content; the mirror must match the source (every tag,
its digest) within the allowed runs, and `regsync verify` (direct, no proxy) must pass.
Prints a table of the runs and exits non-zero when the mirror did not converge.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support import (  # noqa: E402
    Registry,
    run_regsync,
    seed_catalogue,
    write_config,
)
from tests.support.faults import FaultProxy, incomplete_tags  # noqa: E402
from tests.support.observe import parse_metrics  # noqa: E402

ENV = {
    "REGSYNC_RETRY_ATTEMPTS": "3",
    "REGSYNC_RETRY_INITIAL": "0.05",
    "REGSYNC_RETRY_MAX": "0.5",
    "REGSYNC_CONNECT_TIMEOUT": "3",
    "REGSYNC_READ_TIMEOUT": "2",
}


def mirror_config(workdir: Path, src_url: str, dst_url: str, name: str) -> Path:
    src_host, dst_host = (url.split("://", 1)[1] for url in (src_url, dst_url))
    return write_config(
        workdir,
        f"""
version: 1
registries:
  "{src_host}": {{tls: http}}
  "{dst_host}": {{tls: http}}
rules:
  - name: soak
    source: {src_host}/soak/*
    destination: {dst_host}/mirror
""",
        name,
    )


def converged(dst: Registry, expected: dict[tuple[str, str], str]) -> int:
    """How many source tags the destination has with the source digest."""
    return sum(
        1 for (repo, tag), d in expected.items() if dst.manifest_digest(f"mirror/{repo}", tag) == d
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repos", type=int, default=25)
    parser.add_argument("--tags", type=int, default=20)
    parser.add_argument("--rate", type=float, default=0.02, help="fault probability per request")
    parser.add_argument("--runs", type=int, default=3, help="runs allowed to converge")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="regsync-soak-") as tmp:
        work = Path(tmp)
        with Registry(work / "src") as src, Registry(work / "dst") as dst:
            started = time.monotonic()
            cat = seed_catalogue(
                src, repos=args.repos, tags=args.tags, layers=2, layer_size=4096,
                namespace="soak", seed=args.seed,
            )  # fmt: skip
            expected = {(r, t): p.digest for r, tags in cat.images.items() for t, p in tags.items()}
            print(f"seeded {len(expected)} tags in {time.monotonic() - started:.1f}s")
            with FaultProxy(src.url) as sp, FaultProxy(dst.url) as dp:
                sp.randomly(args.rate, seed=args.seed, stall=4.0)
                dp.randomly(args.rate, seed=args.seed + 1, stall=4.0)
                config = mirror_config(work, sp.url, dp.url, "soak.yaml")
                rows = run_until_converged(args, config, work, dst, expected, (sp, dp))
            direct = mirror_config(work, src.url, dst.url, "direct.yaml")
            proc = run_regsync("verify", "-c", direct, "--json", env=ENV, timeout=600)
            report: dict[str, Any] = json.loads(proc.stdout) if proc.stdout else {"ok": False}
    ok = rows[-1]["converged"] == len(expected) and report["ok"] and proc.returncode == 0
    print_table(rows, len(expected), args)
    verified = report.get("rules", [{}])[0]
    print(
        f"verify: exit {proc.returncode}, {verified.get('tags_checked')} tags, "
        f"{verified.get('manifests_checked')} manifests, {verified.get('blobs_checked')} blobs "
        f"checked, {len(verified.get('missing', []))} missing"
    )
    print("RESULT:", "converged, nothing lost" if ok else "NOT CONVERGED")
    if args.json:
        args.json.write_text(json.dumps({"runs": rows, "tags": len(expected), "ok": ok}, indent=2))
    return 0 if ok else 1


def run_until_converged(
    args: argparse.Namespace,
    config: Path,
    work: Path,
    dst: Registry,
    expected: dict[tuple[str, str], str],
    proxies: tuple[FaultProxy, FaultProxy],
) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for run in range(1, args.runs + 1):
        fired = sum(len(p.fired) for p in proxies)
        requests = sum(len(p.requests) for p in proxies)
        metrics = work / f"run{run}.prom"
        started = time.monotonic()
        proc = run_regsync(
            "once", "-c", config, "--json", "--metrics-file", metrics, env=ENV, timeout=900
        )
        seconds = time.monotonic() - started
        summary = json.loads(proc.stdout)["rules"][0] if proc.stdout else {}
        samples = parse_metrics(metrics.read_text()) if metrics.exists() else {}
        retries = sum(v for (n, _), v in samples.items() if n == "regsync_registry_retries_total")
        for error in summary.get("errors", [])[:10]:
            print(f"run {run}: {error[:160]}", file=sys.stderr)
        broken = incomplete_tags(dst)
        rows.append(
            {
                "run": run,
                "exit": proc.returncode,
                "seconds": round(seconds, 1),
                "requests": sum(len(p.requests) for p in proxies) - requests,
                "faults": sum(len(p.fired) for p in proxies) - fired,
                "retries": int(retries),
                "copied": summary.get("tags", {}).get("copied"),
                "failed": summary.get("tags", {}).get("failed"),
                "converged": converged(dst, expected),
                "incomplete_tags": len(broken),
            }
        )
        if broken:
            print(f"run {run}: tags referencing missing content: {broken[:5]}", file=sys.stderr)
            break
        if rows[-1]["converged"] == len(expected):
            break
    return rows


def print_table(rows: list[dict[str, object]], total: int, args: argparse.Namespace) -> None:
    print(f"\n{total} tags, {args.rate:.0%} random faults on each side, seed {args.seed}\n")
    keys = list(rows[0])
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for row in rows:
        print("| " + " | ".join(str(row[k]) for k in keys) + " |")


if __name__ == "__main__":
    sys.exit(main())
