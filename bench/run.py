"""regsync benchmark: regsync vs skopeo sync vs the raw GET->PUT limit, on loopback registries.

    make bench                                   # everything, defaults (~10-15 minutes)
    .venv/bin/python bench/run.py --rounds 1 --only S1,S2 --no-write

Starts two real ``docker-registry`` processes (access logs on, for request counts), seeds the
scenarios of issue #7 with deterministic generators, runs each tool as a subprocess (wall time,
CPU time, peak RSS from ``wait4``), alternating the tools' order every round, then prints the
tables and rewrites the generated section of BENCHMARKS.md. Raw samples go to bench/results/.
"""

from __future__ import annotations

import argparse
import compileall
import dataclasses
import json
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from bench.env import BenchEnv  # noqa: E402
from bench.events import EventFigures, run_s7  # noqa: E402
from bench.report import render, write_benchmarks  # noqa: E402
from bench.scenarios import Options, Runner  # noqa: E402
from bench.week import Day, Week, week_table  # noqa: E402

SCENARIOS = ("S1", "S2", "S3", "S4", "S5", "S6", "S7", "S8", "S9", "S10")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--rounds", type=int, default=3, help="rounds per scenario (default 3)")
    p.add_argument(
        "--only", default=",".join(SCENARIOS), help="comma-separated scenarios (S1,S2,S5 share)"
    )
    p.add_argument(
        "--big-gib", type=float, default=1.0, help="single-layer size for S3 (0 skips; 1)"
    )
    p.add_argument(
        "--s4-sizes", default="500,1000,2000", help="S4 tag counts (100 tags per repository)"
    )
    p.add_argument(
        "--s8-tags", type=int, default=50_000, help="S8 no-op size (1,000 tags a repository)"
    )
    p.add_argument("--s9-tags", type=int, default=50_000, help="S9 cold copy size (50,000)")
    p.add_argument(
        "--s10-tags", type=int, default=10_000, help="S10 all-immutable no-op size (10,000)"
    )
    p.add_argument("--s6-days", type=int, default=7, help="days of catalogue change in S6 (7)")
    p.add_argument("--no-skopeo", action="store_true", help="leave skopeo out")
    p.add_argument("--workdir", type=Path, help="keep registries' storage here (default: temp)")
    p.add_argument("--no-write", action="store_true", help="do not rewrite BENCHMARKS.md")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    only = {s.strip().upper() for s in args.only.split(",") if s.strip()}
    opts = Options(
        rounds=args.rounds,
        s4_sizes=tuple(int(n) for n in args.s4_sizes.split(",")),
        big_gib=args.big_gib,
        skopeo=not args.no_skopeo,
        s8_tags=args.s8_tags,
        s9_tags=args.s9_tags,
        s10_tags=args.s10_tags,
    )
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="regsync-bench-"))
    # regsync runs as installed, byte-compiled (pip compiles at install, and so does the image
    # build): a shell with PYTHONDONTWRITEBYTECODE=1 would otherwise have every run compile
    # regsync's modules again, ~0.1 s of client CPU that no installed copy pays.
    compileall.compile_dir(REPO_ROOT / "regsync", quiet=1)
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    t0 = time.monotonic()
    week: list[Day] = []
    events: EventFigures | None = None
    try:
        with BenchEnv(workdir) as env:
            runner = Runner(env, opts)
            if only & {"S1", "S2", "S5"}:
                runner.catalogue()
            if "S3" in only:
                runner.big_layers()
            if "S4" in only:
                runner.scale()
            if "S8" in only:
                runner.huge_noop()
            if "S9" in only:
                runner.huge_cold()
            if "S10" in only:
                runner.immutable_noop()
            if "S6" in only:
                week = Week(env, args.s6_days, opts.log).run()
            if "S7" in only:
                events = run_s7(workdir, opts.log)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    command = "make bench" if argv is None and len(sys.argv) == 1 else _command(argv)
    body = render(runner.samples, command, started)
    if week:
        body += (
            "\nS6, a week of catalogue change: blob bytes read from the source against the"
            " minimum (each new blob once per destination registry) and source manifest GETs"
            " (one per new manifest is the minimum):\n\n" + "\n".join(week_table(week)) + "\n"
        )
        runner.samples.extend(s for day in week for s in day.samples.values())
    if events is not None:
        body += (
            "\nS7, event-triggered sync: a source docker-registry notifies a running serve"
            " (rule interval 1 h); lag from a push's completion to the destination tag"
            " resolving to its digest:\n\n" + "\n".join(events.table()) + "\n"
        )
    body += f"\nWhole benchmark: {time.monotonic() - t0:.0f} s.\n"
    print(body)
    _save(runner, started)
    if not args.no_write:
        write_benchmarks(REPO_ROOT / "BENCHMARKS.md", body)
    return 0 if all(s.ok for s in runner.samples) else 1


def _command(argv: list[str] | None) -> str:
    words = sys.argv[1:] if argv is None else argv
    return shlex.join([".venv/bin/python", "bench/run.py", *words])


def _save(runner: Runner, started: str) -> None:
    out = REPO_ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    stamp = started.replace(" ", "T").replace(":", "")
    data = [
        {
            "scenario": s.scenario,
            "tool": s.tool,
            "round": s.round,
            "run": {k: v for k, v in dataclasses.asdict(s.run).items() if k != "stderr"},
            "source_requests": dict(s.source_requests),
            "dest_requests": dict(s.dest_requests),
            "bytes_read": s.bytes_read,
            "registry_cpu": s.registry_cpu,
        }
        for s in runner.samples
    ]
    (out / f"{stamp}.json").write_text(json.dumps(data, indent=1, default=str))


if __name__ == "__main__":
    sys.exit(main())
