"""Mutation testing of the safety rails (`make mutate`), one module at a time, with mutmut 3.

    python scripts/mutate.py                 # every module of mutation.toml, then the scores
    python scripts/mutate.py tagdelete       # one module (make mutate MODULE=tagdelete)
    python scripts/mutate.py --list          # the modules and their tests

For each module of ``mutation.toml`` a private copy of the package and the tests is made under
``.mutate/<module>/`` (so edits to the worktree during a run change nothing), with a
``[tool.mutmut]`` section that mutates only that module's files and selects only its tests;
mutmut then runs each mutant against the tests that reach the mutated function. Results stay
in ``.mutate/<module>/mutants`` (``cd .mutate/<module> && mutmut show <name>`` shows one);
re-running a module starts it afresh.

Score per module = killed / (mutants - equivalent ones). A mutant is equivalent when no
behaviour can tell it apart; each is listed in ``mutation.toml`` by function and mutated line,
with the reason. A module under the target makes the command exit 1. The survivors are printed
with their diff: kill each with a test, or show why it is equivalent.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import shutil
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "mutation.toml"
WORK = ROOT / ".mutate"
KILLED = frozenset({"killed", "timeout", "caught by type check"})


@dataclass
class Module:
    name: str
    paths: list[str]
    tests: list[str]
    mutants: list[str] = field(default_factory=list)  # name globs; empty: every function
    equivalent: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Score:
    module: str
    total: int = 0
    killed: int = 0
    equivalent: int = 0
    survivors: list[tuple[str, str, str]] = field(default_factory=list)  # name, status, diff
    seconds: float = 0.0

    @property
    def percent(self) -> float:
        counted = self.total - self.equivalent
        return 100.0 if counted <= 0 else 100.0 * self.killed / counted


def load_config() -> tuple[float, dict[str, Module]]:
    data = tomllib.loads(CONFIG.read_text())
    modules = {
        name: Module(
            name,
            list(spec["paths"]),
            list(spec["tests"]),
            list(spec.get("mutants", [])),
            list(spec.get("equivalent", [])),
        )
        for name, spec in data["modules"].items()
    }
    return float(data["target"]), modules


def prepare(module: Module) -> Path:
    """A fresh copy of the package and tests, and a pyproject naming what to mutate."""
    work = WORK / module.name
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for tree in ("regsync", "tests"):
        shutil.copytree(ROOT / tree, work / tree, ignore=ignore)
    settings = {
        "source_paths": ["regsync"],
        "only_mutate": module.paths,
        "pytest_add_cli_args": ["-p", "no:cacheprovider", "-p", "no:xdist", "-W", "ignore"],
        "pytest_add_cli_args_test_selection": module.tests,
        "use_git_change_detection": False,
        "timeout_multiplier": 10.0,
    }
    lines = ["", "[tool.mutmut]"] + [f"{k} = {json.dumps(v)}" for k, v in settings.items()]
    (work / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text() + "\n".join(lines))
    return work


def run_module(module: Module, jobs: int) -> Score:
    work = prepare(module)
    started = time.monotonic()
    command = ["nice", "-n", "15", sys.executable, str(Path(__file__).resolve()), "_mutmut"]
    command += ["run", "--max-children", str(jobs), *module.mutants]
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    done = subprocess.run(command, cwd=work, env=env, stdout=subprocess.PIPE, text=True)
    elapsed = time.monotonic() - started
    if done.returncode != 0:
        print(done.stdout[-4000:])
        raise SystemExit(f"{module.name}: mutmut run exited {done.returncode}")
    report = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "_report", *module.mutants],
        cwd=work,
        stdout=subprocess.PIPE,
        text=True,
        check=True,
    )
    score = tally(module, json.loads(report.stdout))
    score.seconds = elapsed
    return score


def tally(module: Module, results: list[dict[str, str]]) -> Score:
    score = Score(module.name, total=len(results))
    for result in results:
        if result["status"] in KILLED:
            score.killed += 1
        elif any(matches(e, result) for e in module.equivalent):
            score.equivalent += 1
        else:
            score.survivors.append((result["name"], result["status"], result["diff"]))
    return score


def matches(equivalent: dict[str, Any], result: dict[str, str]) -> bool:
    """An equivalent names the function and either the mutated line (stripped, as the diff
    shows it after the "+"), or ``case_only``: every changed line differs from the original
    in letter case alone (SQL text: SQLite reads keywords, names and pragmas in any case)."""
    function = result["name"].rsplit("__mutmut_", 1)[0]
    if not function.endswith(equivalent["function"]):
        return False
    lines = result["diff"].splitlines()
    added = [ln[1:].strip() for ln in lines if ln.startswith("+") and not ln.startswith("+++")]
    if not equivalent.get("case_only"):
        return str(equivalent["line"]).strip() in added
    removed = [ln[1:].strip() for ln in lines if ln.startswith("-") and not ln.startswith("---")]
    unless = str(equivalent.get("unless", "\0"))
    return (
        bool(added)
        and len(added) == len(removed)
        and all(a != r and a.lower() == r.lower() for a, r in zip(added, removed, strict=True))
        and not any(unless in r for r in removed)
    )


# -- inside the module's work dir: mutmut itself -----------------------------------------------


def _without_editable_install() -> None:
    """The venv's editable install of regsync would import the worktree, not the mutants."""
    sys.meta_path[:] = [f for f in sys.meta_path if "__editable__" not in repr(f)]
    sys.path[:] = [p for p in sys.path if Path(p).resolve() != ROOT]
    for name in [n for n in sys.modules if n == "regsync" or n.startswith("regsync.")]:
        del sys.modules[name]


def _mutmut(argv: list[str]) -> None:
    _without_editable_install()
    from mutmut.__main__ import cli

    cli(argv)


def _report(globs: list[str]) -> None:
    from mutmut.mutation.data import SourceFileMutationData
    from mutmut.mutation.diff_apply import get_diff_for_mutant
    from mutmut.stats import status_by_exit_code
    from mutmut.utils.file_utils import walk_mutatable_files

    out: list[dict[str, Any]] = []
    for path in walk_mutatable_files():
        data = SourceFileMutationData(path=path)
        data.load()
        for name, code in sorted(data.exit_code_by_key.items()):
            if globs and not any(fnmatch.fnmatch(name, g) for g in globs):
                continue
            status = status_by_exit_code[code]
            diff = "" if status in KILLED else get_diff_for_mutant(name, path=path)
            out.append({"name": name, "status": status, "diff": diff})
    print(json.dumps(out))


# -- the command ---------------------------------------------------------------------------


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "_mutmut":
        _mutmut(sys.argv[2:])
        return 0
    if len(sys.argv) > 1 and sys.argv[1] == "_report":
        _report(sys.argv[2:])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("modules", nargs="*", help="modules of mutation.toml (default: all)")
    parser.add_argument("--jobs", type=int, default=int(os.environ.get("MUTATE_JOBS", "2")))
    parser.add_argument("--list", action="store_true", help="print the modules and tests")
    args = parser.parse_args()
    target, modules = load_config()
    unknown = [m for m in args.modules if m not in modules]
    if unknown:
        parser.error(f"unknown module(s) {', '.join(unknown)}; known: {', '.join(modules)}")
    chosen = [modules[m] for m in args.modules or modules]
    if args.list:
        for m in chosen:
            print(f"{m.name}: {' '.join(m.paths)} <- {' '.join(m.tests)}")
        return 0
    scores = []
    for module in chosen:
        print(f"== {module.name}: mutating {' '.join(module.paths)}", flush=True)
        score = run_module(module, args.jobs)
        scores.append(score)
        for name, status, diff in score.survivors:
            print(f"-- {status}: {name}\n{diff}")
        print(summary_line(score, target), flush=True)
    print("\nmodule          killed/counted  equivalent  score   time")
    for score in scores:
        print(summary_line(score, target))
    return 0 if all(s.percent >= 100 * target for s in scores) else 1


def summary_line(score: Score, target: float) -> str:
    counted = score.total - score.equivalent
    mark = "ok" if score.percent >= 100 * target else "UNDER TARGET"
    return (
        f"{score.module:<15} {score.killed:>6}/{counted:<8} {score.equivalent:>10}  "
        f"{score.percent:5.1f}%  {score.seconds:5.0f}s  {mark}"
    )


if __name__ == "__main__":
    sys.exit(main())
