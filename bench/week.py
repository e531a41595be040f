"""S6, a week of catalogue change (issue #13): bytes sent against the minimum, day by day.

Day 0: 10 repositories on 2 shared bases. Each later day: 2 new repositories on the existing
bases, and a new base shared by several existing repositories under a new tag. regsync and
skopeo each mirror into their own destination registry, day after day, keeping whatever state
they keep between runs (regsync its content index, skopeo its blob-info cache). The minimum is
each distinct blob once per destination registry: a day's new blobs.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.env import REGISTRY_CONFIG, BenchEnv, Sample
from bench.tools import regsync_argv, skopeo_argv, skopeo_available
from tests.support import Blob, Image, Registry, push
from tests.support.accesslog import AccessLog

NAMESPACE = "s6"
BASE_SIZE = 1_000_000
OWN_SIZE = 100_000
DAY0_REPOS = 10
NEW_REPOS_PER_DAY = 2
SHARED_NEW_BASE = 3  # existing repositories that get a tag on each day's new base


@dataclass
class Day:
    """What one day added on the source: the minimum bytes and manifests to mirror it."""

    number: int
    new_blobs: dict[str, int] = field(default_factory=dict)  # digest -> size, first seen today
    new_digests: set[str] = field(default_factory=set)  # manifests first seen today
    samples: dict[str, Sample] = field(default_factory=dict)  # tool -> its run
    blob_bytes: dict[str, int] = field(default_factory=dict)  # tool -> blob bytes it read

    @property
    def minimum(self) -> int:
        return sum(self.new_blobs.values())


class Week:
    """Seeds the source day by day and runs each tool into its own destination."""

    def __init__(self, env: BenchEnv, days: int, log: Callable[[str], None]) -> None:
        self.env = env
        self.days = days
        self.log = log
        self.repos: list[str] = []
        self.seen: set[str] = set()
        self.state = env.workdir / "s6-regsync-state"

    def run(self) -> list[Day]:
        tools = ["regsync", *(["skopeo"] if skopeo_available() else [])]
        other = Registry(self.env.workdir / "dest-s6", extra_config=REGISTRY_CONFIG).start()
        dests = {"regsync": self.env.dst, "skopeo": other}
        self.env.empty_dest()
        shutil.rmtree(self.state, ignore_errors=True)
        out = []
        try:
            for number in range(self.days):
                day = self._seed(number)
                for tool in tools:
                    read = AccessLog(self.env.src)
                    day.samples[tool] = self.env.run(
                        f"S6-day{number}", tool, 0, self._argv(tool, dests[tool])
                    )
                    blobs = [r for r in read.requests() if r.key == "GET blob"]
                    day.blob_bytes[tool] = sum(r.bytes_sent for r in blobs)
                self.log(self._line(day))
                out.append(day)
        finally:
            other.stop()
            shutil.rmtree(other.storage, ignore_errors=True)
        return out

    def _argv(self, tool: str, dst: Registry) -> Callable[[Path], list[str]]:
        src = self.env.src
        if tool == "regsync":
            return lambda work: regsync_argv(work, src, dst, NAMESPACE, state=self.state)
        repos = list(self.repos)
        return lambda work: skopeo_argv(work, src, dst, NAMESPACE, repos)

    def _seed(self, number: int) -> Day:
        day = Day(number)
        if number == 0:
            for i in range(DAY0_REPOS):
                self._push(day, self._new_repo(), "1.0", base=_base(i % 2))
            return day
        for i in range(NEW_REPOS_PER_DAY):
            self._push(day, self._new_repo(), "1.0", base=_base((number + i) % 2))
        base = _base(number + 1)  # today's new base, shared by several existing repositories
        for k in range(SHARED_NEW_BASE):
            repo = self.repos[(number * SHARED_NEW_BASE + k) % (len(self.repos) - 2)]
            self._push(day, repo, f"d{number}", base=base)
        return day

    def _new_repo(self) -> str:
        repo = f"{NAMESPACE}/app{len(self.repos):02d}"
        self.repos.append(repo)
        return repo

    def _push(self, day: Day, repo: str, tag: str, base: Blob) -> None:
        own = Blob.random(OWN_SIZE, seed=f"s6/{repo}/{tag}")
        pushed = push(self.env.src, repo, tag, Image.docker([base, own], labels={"repo": repo}))
        for digest, size in pushed.blobs.items():
            if digest not in self.seen:
                self.seen.add(digest)
                day.new_blobs[digest] = size
        day.new_digests.update(d for d in pushed.manifests if d not in self.seen)
        self.seen.update(pushed.manifests)

    def _line(self, day: Day) -> str:
        parts = [f"  S6 day {day.number}: minimum {day.minimum / 1e6:.2f} MB"]
        for tool, s in day.samples.items():
            sent = day.blob_bytes[tool]
            ratio = sent / day.minimum if day.minimum else 0
            parts.append(f"{tool} {sent / 1e6:.2f} MB ({ratio:.2f}x) {s.run.seconds:.2f} s")
        return ", ".join(parts)


def _base(n: int) -> Blob:
    return Blob.random(BASE_SIZE, seed=f"s6/base{n}")


def week_table(days: list[Day]) -> list[str]:
    """Per day: the minimum, the blob bytes each tool read from the source, manifest GETs."""
    lines = [
        "| day | new blobs | minimum MB | regsync MB | regsync/min | skopeo MB | skopeo/min "
        "| new manifests | regsync manifest GETs | skopeo manifest GETs | regsync s | skopeo s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for day in days:
        reg, sko = day.samples.get("regsync"), day.samples.get("skopeo")
        lines.append(
            f"| {day.number} | {len(day.new_blobs)} | {day.minimum / 1e6:.2f} "
            f"| {_mb(day, 'regsync')} | {_ratio(day, 'regsync')} "
            f"| {_mb(day, 'skopeo')} | {_ratio(day, 'skopeo')} "
            f"| {len(day.new_digests)} | {_gets(reg)} | {_gets(sko)} "
            f"| {_secs(reg)} | {_secs(sko)} |"
        )
    return lines


def _mb(day: Day, tool: str) -> str:
    sent = day.blob_bytes.get(tool)
    return f"{sent / 1e6:.2f}" if sent is not None else "-"


def _ratio(day: Day, tool: str) -> str:
    sent = day.blob_bytes.get(tool)
    return f"{sent / day.minimum:.2f}" if sent is not None and day.minimum else "-"


def _gets(s: Sample | None) -> str:
    return str(s.source_requests["GET manifest"]) if s else "-"


def _secs(s: Sample | None) -> str:
    return f"{s.run.seconds:.2f}" if s else "-"
