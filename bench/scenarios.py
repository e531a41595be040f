"""The benchmark scenarios S1-S5 (issue #7) and S8-S10 (issue #21): seed, then run the tools
side by side.

regsync appears as up to three tools: ``regsync`` (``once``; for no-op and incremental runs
between full checks, with the content index the setup run left), ``regsync-full`` (``once
--full``: every tag HEADed on both sides, the protocol before issue #21) and ``regsync-serve``
(the second of two cycles in one process, as a warm ``serve``).

Every scenario alternates the tools' order from round to round, so a slow spell on the shared
machine does not land on one tool only. Cold copies start from an empty destination each time.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from bench.bigblob import push_big_image
from bench.env import BenchEnv, Sample
from bench.storage import seed_tags
from bench.tools import raw_argv, regsync_argv, skopeo_argv, skopeo_available
from tests.support import Blob, Catalogue, Image, catalogue_tag, push, seed_catalogue

T = TypeVar("T")
Argv = Callable[[Path], list[str]]
Job = tuple[str, str, str]  # (source repo, digest, destination repo) for the raw copier

MIB = 1024 * 1024
S1_SHAPE = {"repos": 20, "tags": 10, "layers": 3, "layer_size": 200_000}
S3_LAYERS = [64 * MIB] * 4
S5_CHANGED = 10  # 5% of S1's 200 tags
S4_TAGS_PER_REPO = 100
S8_SHAPE = (50, 1000)  # repositories x tags: the 50,000-tag no-op, seeded into storage
STORAGE_TAGS = 1000  # tags a repository in the scenarios seeded into storage (S8-S10)
IMMUTABLE = "tags: {immutable: ['.*']}"  # S10: every tag immutable
REGSYNC_MODES = {"regsync": "once", "regsync-full": "full", "regsync-serve": "serve"}


@dataclass(frozen=True)
class Options:
    rounds: int = 3
    s4_sizes: tuple[int, ...] = (500, 1000, 2000)
    big_gib: float = 1.0  # 0 skips the single-big-layer case
    skopeo: bool = True
    s8_tags: int = 50_000  # 0 skips S8
    s9_tags: int = 50_000  # S9, the cold copy seeded into the source's storage; 0 skips it
    s10_tags: int = 10_000  # S10, the no-op with every tag immutable; 0 skips it
    raw_parallel: int = 8
    log: Callable[[str], None] = lambda text: print(text, file=sys.stderr, flush=True)


def _order(tools: list[T], rnd: int) -> list[T]:
    return tools if rnd % 2 == 0 else tools[::-1]


def _tools(opts: Options, *names: str) -> list[str]:
    return [n for n in names if n != "skopeo" or (opts.skopeo and skopeo_available())]


def distinct_blobs(cat: Catalogue, repos: list[str] | None = None) -> list[Job]:
    """Each distinct blob once, in the first repository that has it: the bytes to move."""
    jobs: dict[str, Job] = {}
    for repo in repos or cat.repos:
        for pushed in cat.images[repo].values():
            for digest in pushed.blobs:
                jobs.setdefault(digest, (repo, digest, repo))
    return list(jobs.values())


class Runner:
    """Runs the scenarios in one environment and collects every sample."""

    def __init__(self, env: BenchEnv, opts: Options) -> None:
        self.env = env
        self.opts = opts
        self.samples: list[Sample] = []
        self.state: Path | None = None  # the content index regsync runs share (None: own)

    def _argv(
        self, tool: str, namespace: str, repos: list[str], jobs: list[Job], keys: str = ""
    ) -> Argv:
        src, dst, state = self.env.src, self.env.dst, self.state
        if tool in REGSYNC_MODES:
            mode = REGSYNC_MODES[tool]
            return lambda work: regsync_argv(work, src, dst, namespace, state, mode, keys)
        if tool == "skopeo":
            return lambda work: skopeo_argv(work, src, dst, namespace, repos)
        parallel = min(self.opts.raw_parallel, max(1, len(jobs)))
        return lambda work: raw_argv(work, src, dst, jobs, parallel)

    def _record(self, sample: Sample) -> Sample:
        if sample.tool == "regsync-serve" and sample.ok:
            sample = _warm_cycle(sample)
        self.samples.append(sample)
        status = "" if sample.ok else f"  FAILED rc={sample.run.returncode}"
        self.opts.log(
            f"  {sample.scenario} {sample.tool:<8} round {sample.round}: "
            f"{sample.run.seconds:6.2f} s, {sample.run.max_rss_kib / 1024:5.1f} MiB{status}"
        )
        if not sample.ok:
            self.opts.log(sample.run.stderr[-2000:])
        return sample

    def _rounds(
        self,
        scenario: str,
        tools: list[str],
        argv: Callable[[str], Argv],
        before: Callable[[], None],
        rounds: int | None = None,
    ) -> None:
        for rnd in range(rounds or self.opts.rounds):
            for tool in _order(tools, rnd):
                before()
                self._record(self.env.run(scenario, tool, rnd, argv(tool)))

    # -- S1, S2, S5: the 20 x 10 x 3 catalogue ----------------------------------------------

    def catalogue(self) -> None:
        log = self.opts.log
        log("seeding S1: 20 repos x 10 tags x 3 layers of 200 KB")
        cat = seed_catalogue(self.env.src, namespace="s1", **S1_SHAPE)  # type: ignore[arg-type]
        jobs = distinct_blobs(cat)
        tools = _tools(self.opts, "regsync", "skopeo", "raw")
        log("S1 cold copy")
        self._rounds(
            "S1", tools, lambda t: self._argv(t, "s1", cat.repos, jobs), self.env.empty_dest
        )
        log("S2 no-op re-run (regsync between full checks, and with --full)")
        self.env.empty_dest()
        self.state = self.env.workdir / "state-s1"
        self._record(self.env.run("setup", "regsync", 0, self._argv("regsync", "s1", [], [])))
        noop_tools = ["regsync", "regsync-full", *(t for t in tools if t not in ("raw", "regsync"))]
        self._rounds("S2", noop_tools, lambda t: self._argv(t, "s1", cat.repos, []), lambda: None)
        saved = self.env.save_dest("s1")
        saved_state = self.env.workdir / "saved-state-s1"
        shutil.copytree(self.state, saved_state, dirs_exist_ok=True)

        def restore() -> None:
            self.env.restore_dest(saved)
            assert self.state is not None
            shutil.rmtree(self.state, ignore_errors=True)
            shutil.copytree(saved_state, self.state)

        log(f"S5 incremental: {S5_CHANGED} of 200 tags changed on the source")
        changed = change_tags(self.env, cat)
        self._rounds("S5", tools, lambda t: self._argv(t, "s1", cat.repos, changed), restore)
        self.state = None

    # -- S3: big layers -------------------------------------------------------------------

    def big_layers(self) -> None:
        log = self.opts.log
        log("seeding S3: one image of 4 x 64 MiB layers (streamed)")
        push_big_image(self.env.src, "s3/big", "1", S3_LAYERS, seed="s3")
        jobs = self._image_jobs("s3/big", "1")
        tools = _tools(self.opts, "regsync", "skopeo", "raw")
        self._rounds(
            "S3", tools, lambda t: self._argv(t, "s3", ["s3/big"], jobs), self.env.empty_dest
        )
        if self.opts.big_gib <= 0:
            return
        size = int(self.opts.big_gib * 1024 * MIB)
        log(f"seeding S3 single layer of {size // MIB} MiB (streamed)")
        push_big_image(self.env.src, "s3g/huge", "1", [size], seed="s3g")
        jobs = self._image_jobs("s3g/huge", "1")
        self._rounds(
            f"S3-{self.opts.big_gib:g}GiB",
            ["regsync", "raw"],
            lambda t: self._argv(t, "s3g", ["s3g/huge"], jobs),
            self.env.empty_dest,
            rounds=1,
        )
        self.env.empty_dest()  # give the disk back

    def _image_jobs(self, repo: str, tag: str) -> list[Job]:
        _, raw = self.env.src.manifest(repo, tag)
        body = json.loads(raw)
        digests = [body["config"]["digest"], *(layer["digest"] for layer in body["layers"])]
        return [(repo, d, repo) for d in digests]

    # -- S4: scale of no-op re-runs ------------------------------------------------------------

    def scale(self) -> None:
        log = self.opts.log
        for size in self.opts.s4_sizes:
            repos = max(1, size // S4_TAGS_PER_REPO)
            log(f"seeding S4: {repos} repos x {S4_TAGS_PER_REPO} tags (tiny layers)")
            seed_catalogue(
                self.env.src,
                repos=repos,
                tags=S4_TAGS_PER_REPO,
                layers=1,
                layer_size=1024,
                namespace=f"s4n{size}",
            )
            self.state = self.env.workdir / f"state-s4n{size}"  # the runs below share it
            self._record(
                self.env.run(
                    f"setup-{size}", "regsync", 0, self._argv("regsync", f"s4n{size}", [], [])
                )
            )
        for rnd in range(self.opts.rounds):
            for n in _order(list(self.opts.s4_sizes), rnd):
                self.state = self.env.workdir / f"state-s4n{n}"
                for tool in _order(list(REGSYNC_MODES), rnd):
                    argv = self._argv(tool, f"s4n{n}", [], [])
                    self._record(self.env.run(f"S4-{n}", tool, rnd, argv))
        self.state = None

    # -- S8: a 50,000-tag no-op -------------------------------------------------------------

    def huge_noop(self) -> None:
        """Source and destination seeded alike by writing storage (minutes through the API);
        a first run records (a full check), then the no-op between full checks and --full."""
        if self.opts.s8_tags <= 0:
            return
        repos = max(1, self.opts.s8_tags // S8_SHAPE[1])
        log = self.opts.log
        log(f"seeding S8: {repos} repos x {S8_SHAPE[1]} tags into both registries' storage")
        for reg in (self.env.src, self.env.dst):
            reg.stop()
            seed_tags(reg.storage, "s8", repos, S8_SHAPE[1])
            reg.start()
        name = f"S8-{repos * S8_SHAPE[1] // 1000}k"
        self.state = self.env.workdir / "state-s8"
        self._record(
            self.env.run(f"setup-{name}", "regsync", 0, self._argv("regsync", "s8", [], []))
        )
        for rnd in range(1):  # one round: each run is ~1-2 minutes here
            for tool in ("regsync", "regsync-full"):
                self._record(self.env.run(name, tool, rnd, self._argv(tool, "s8", [], [])))
        self.state = None

    # -- S9: a 50,000-tag cold copy; S10: a 10,000-tag no-op, every tag immutable ----------

    def _seed(self, namespace: str, tags: int, *, dest: bool) -> str:
        """``tags`` tags (1,000 a repository) written into the source's storage, and the
        destination's too with ``dest``; the scenario's size for its name (``50k``)."""
        repos = max(1, tags // STORAGE_TAGS)
        self.opts.log(f"seeding {namespace}: {repos} repos x {STORAGE_TAGS} tags into storage")
        for reg in (self.env.src, self.env.dst) if dest else (self.env.src,):
            reg.stop()
            seed_tags(reg.storage, namespace, repos, STORAGE_TAGS)
            reg.start()
        return f"{repos * STORAGE_TAGS // 1000}k"

    def huge_cold(self) -> None:
        """Every tag copied into a destination that has none of them (memory per copied tag:
        the target is <= 120 MB at 50,000 tags). One round: each run takes minutes here."""
        if self.opts.s9_tags <= 0:
            return
        size = self._seed("s9", self.opts.s9_tags, dest=False)
        self.state = self.env.workdir / "state-s9"
        self._record(self.env.run(f"S9-{size}", "regsync", 0, self._argv("regsync", "s9", [], [])))
        self.state = None

    def immutable_noop(self) -> None:
        """``tags.immutable: ['.*']``: a first run records (a full check), then the no-op
        between full checks costs the listings only (target <= 0.03 requests a tag, < 2 s)."""
        if self.opts.s10_tags <= 0:
            return
        size = self._seed("s10", self.opts.s10_tags, dest=True)
        self.state = self.env.workdir / "state-s10"
        argv = self._argv("regsync", "s10", [], [], IMMUTABLE)
        self._record(self.env.run(f"setup-S10-{size}", "regsync", 0, argv))
        for rnd in range(self.opts.rounds):
            self._record(self.env.run(f"S10-{size}", "regsync", rnd, argv))
        self.state = None


def _warm_cycle(sample: Sample) -> Sample:
    """A `regsync-serve` sample as its last cycle: time and CPU from bench/warm.py, requests
    shared evenly between its cycles (each a no-op between full checks, the same cost)."""
    figures = json.loads(sample.run.stdout.strip().splitlines()[-1])
    cycles = int(figures["cycles"])
    run = dataclasses.replace(
        sample.run, seconds=figures["seconds"], cpu_seconds=figures["cpu_seconds"]
    )

    def share(counts: Counter[str]) -> Counter[str]:
        return Counter({k: v // cycles for k, v in counts.items()})

    return dataclasses.replace(
        sample,
        run=run,
        source_requests=share(sample.source_requests),
        dest_requests=share(sample.dest_requests),
        registry_cpu=sample.registry_cpu / cycles,
    )


def change_tags(env: BenchEnv, cat: Catalogue) -> list[Job]:
    """Repush ``S5_CHANGED`` tags spread over the repos with a new top layer; raw jobs for them."""
    jobs: list[Job] = []
    size = int(S1_SHAPE["layer_size"])
    base = Blob.random(size, "0/base")
    for i in _spread(len(cat.repos), S5_CHANGED):
        repo = cat.repos[i]
        tag = catalogue_tag(i % int(S1_SHAPE["tags"]))
        middle = Blob.random(size, f"0/{repo}/1")
        own = Blob.random(size, f"0/{repo}/{tag}/changed")
        image = Image.docker([base, middle, own], labels={"repo": repo, "tag": tag, "v": "2"})
        pushed = push(env.src, repo, tag, image)
        new = [d for d in pushed.blobs if d not in cat.images[repo][tag].blobs]
        jobs.extend((repo, d, repo) for d in new)
    return jobs


def _spread(n: int, k: int) -> Iterator[int]:
    step = n / k
    return (int(i * step) for i in range(k))
