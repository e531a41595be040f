"""Client CPU side by side: regsync at a git revision against this working tree.

Both in one run on one machine, alternating order, so a busy spell lands on both.

    .venv/bin/python bench/compare.py --ref 12bf3fc --rounds 3 --only S2,S4
    .venv/bin/python bench/compare.py --ref 12bf3fc --rounds 3 --only S1

S1: a cold copy of the 200-tag catalogue (destination emptied, content index fresh, each run);
S2 and S4: no-ops of that catalogue and of 2,000 tags (100 a repository), each as ``once``
between full checks, ``once --full``, and a warm ``serve`` cycle (``bench/warm.py``). Both
sides are byte-compiled as installed; ``--source-ref`` adds the revision run from source (what
a shell with PYTHONDONTWRITEBYTECODE=1 paid before ``bench/run.py`` compiled regsync).
Prints the median (and range) of the client CPU, requests per tag and the median wall time.
"""

from __future__ import annotations

import argparse
import compileall
import io
import statistics
import subprocess
import sys
import tarfile
import tempfile
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from bench.env import BenchEnv, Sample  # noqa: E402
from bench.scenarios import S1_SHAPE, S4_TAGS_PER_REPO, _warm_cycle  # noqa: E402
from bench.tools import regsync_argv  # noqa: E402
from tests.support import seed_catalogue  # noqa: E402

MODES = ("once", "full", "serve")
Figures = dict[tuple[str, str, str], list[tuple[float, float, float]]]


def checkout(ref: str, into: Path, compiled: bool) -> Path:
    """The package at ``ref`` (``git archive``), byte-compiled unless ``compiled`` is False."""
    archive = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "archive", ref, "regsync", "bench/warm.py"],
        check=True,
        capture_output=True,
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    if compiled:
        compileall.compile_dir(into / "regsync", quiet=1)
    return into


def argv_for(
    root: Path, env: BenchEnv, namespace: str, state: Path, mode: str
) -> Callable[[Path], list[str]]:
    def argv(work: Path) -> list[str]:
        command = regsync_argv(work, env.src, env.dst, namespace, state, mode)
        if mode == "serve":
            command[1] = str(root / "bench" / "warm.py")
        return ["env", f"PYTHONPATH={root}", *command]

    return argv


def note(figures: Figures, key: tuple[str, str, str], sample: Sample, tags: int) -> None:
    if not sample.ok:
        raise SystemExit(f"{key} failed:\n{sample.run.stderr[-3000:]}")
    requests = sum(sample.source_requests.values()) + sum(sample.dest_requests.values())
    figures[key].append((sample.run.cpu_seconds, requests / tags, sample.run.seconds))
    print(f"  {key}: CPU {sample.run.cpu_seconds:.3f} s, {sample.run.seconds:.2f} s", flush=True)


def cold(env: BenchEnv, roots: dict[str, Path], rounds: int, work: Path, out: Figures) -> None:
    seed_catalogue(env.src, namespace="s1", **S1_SHAPE)  # type: ignore[arg-type]
    names = list(roots)
    for rnd in range(rounds):
        for name in names if rnd % 2 == 0 else names[::-1]:
            env.empty_dest()
            state = work / f"state-s1-{name}-{rnd}"
            argv = argv_for(roots[name], env, "s1", state, "once")
            note(out, ("S1", "cold", name), env.run("S1", name, rnd, argv), 200)


def noops(
    env: BenchEnv, roots: dict[str, Path], rounds: int, work: Path, s4: int, out: Figures
) -> None:
    seed_catalogue(env.src, namespace="s1", **S1_SHAPE)  # type: ignore[arg-type]
    seed_catalogue(
        env.src, repos=s4 // S4_TAGS_PER_REPO, tags=S4_TAGS_PER_REPO, layers=1,
        layer_size=1024, namespace=f"s4n{s4}",
    )  # fmt: skip
    cases = [("S2", "s1", 200), (f"S4-{s4}", f"s4n{s4}", s4)]
    for scenario, namespace, _ in cases:  # the setup run copies and records (a full check)
        argv = argv_for(REPO_ROOT, env, namespace, work / f"state-{namespace}", "once")
        if not env.run(f"setup-{scenario}", "setup", 0, argv).ok:
            raise SystemExit(f"setup of {scenario} failed")
    combos = [(mode, name) for mode in MODES for name in roots]
    for rnd in range(rounds):
        for scenario, namespace, tags in cases:
            for mode, name in combos if rnd % 2 == 0 else combos[::-1]:
                state = work / f"state-{namespace}"
                argv = argv_for(roots[name], env, namespace, state, mode)
                sample = env.run(scenario, f"{name}-{mode}", rnd, argv)
                if mode == "serve" and sample.ok:
                    sample = _warm_cycle(sample)
                note(out, (scenario, mode, name), sample, tags)


def table(figures: Figures) -> str:
    lines = [
        "| scenario | run | regsync | client CPU s, median (range) | requests per tag | wall s |",
        "|---|---|---|---|---|---|",
    ]
    for (scenario, mode, name), rows in figures.items():
        cpu = [r[0] for r in rows]
        lines.append(
            f"| {scenario} | {mode} | {name} | {statistics.median(cpu):.3f}"
            f" ({min(cpu):.3f}-{max(cpu):.3f}) | {rows[0][1]:.3f}"
            f" | {statistics.median(r[2] for r in rows):.2f} |"
        )
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--ref", required=True, help="the git revision to compare against")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--only", default="S2,S4", help="S1 (cold copy) and/or S2,S4 (no-ops)")
    p.add_argument("--s4-tags", type=int, default=2000)
    p.add_argument("--source-ref", action="store_true", help="also the revision uncompiled")
    args = p.parse_args()
    only = {s.strip().upper() for s in args.only.split(",")}
    figures: Figures = defaultdict(list)
    compileall.compile_dir(REPO_ROOT / "regsync", quiet=1)
    with tempfile.TemporaryDirectory(prefix="regsync-compare-") as tmp:
        work = Path(tmp)
        roots = {f"{args.ref} (source)": checkout(args.ref, work / "src", False)}
        if not args.source_ref:
            roots.clear()
        roots[args.ref] = checkout(args.ref, work / "ref", True)
        roots["this tree"] = REPO_ROOT
        with BenchEnv(work / "registries") as env:
            if "S1" in only:
                cold(env, roots, args.rounds, work, figures)
            if only & {"S2", "S4"}:
                if "S1" in only:
                    env.empty_dest()
                noops(env, roots, args.rounds, work, args.s4_tags, figures)
    print(table(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
