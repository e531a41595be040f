"""The client CPU floor of a no-op on this machine: bare aiohttp, no regsync.

    .venv/bin/python bench/floor.py [--tags 2000] [--rounds 3]

Seeds S4's shape (100 tags a repository, tiny layers) into one loopback registry, then, in a
fresh interpreter per round, lists it and HEADs every tag's manifest with one aiohttp session
(8 at a time, as regsync's default ``max_concurrency``): the CPU of that loop alone (imports
excluded) and of the imports regsync cannot do without (aiohttp, yarl, pydantic, yaml,
tenacity, re2, sqlite3), each the least of the rounds. What regsync spends above these is its
own.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from bench.env import BenchEnv  # noqa: E402
from bench.scenarios import S4_TAGS_PER_REPO  # noqa: E402
from tests.support import seed_catalogue  # noqa: E402

HEADS = """
import asyncio, json, sys, time
import aiohttp

async def main(base):
    started = time.process_time()
    async with aiohttp.ClientSession() as session:
        async def get(path):
            async with session.get(base + path) as resp:
                return await resp.json()
        turns = asyncio.Semaphore(8)
        async def head(path):
            async with turns, session.head(base + path) as resp:
                await resp.read()
        paths = []
        for repo in (await get("/v2/_catalog?n=1000"))["repositories"]:
            listed = await get(f"/v2/{repo}/tags/list?n=1000")
            paths += [f"/v2/{repo}/manifests/{tag}" for tag in listed.get("tags") or []]
        await asyncio.gather(*(head(p) for p in paths))
    requests = len(paths) + 1 + len({p.split("/manifests/")[0] for p in paths})
    print(json.dumps({"requests": requests, "cpu": time.process_time() - started}))

asyncio.run(main(sys.argv[1]))
"""
IMPORTS = "import aiohttp, yarl, pydantic, yaml, tenacity, re2, sqlite3"


def cpu_of(argv: list[str]) -> float:
    """User + system CPU seconds of a child process."""
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--tags", type=int, default=2000)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    python = sys.executable
    interpreter = min(cpu_of([python, "-c", "pass"]) for _ in range(args.rounds))
    imports = min(cpu_of([python, "-c", IMPORTS]) for _ in range(args.rounds))
    import tempfile

    with tempfile.TemporaryDirectory(prefix="regsync-floor-") as tmp, BenchEnv(Path(tmp)) as env:
        seed_catalogue(
            env.src, repos=max(1, args.tags // S4_TAGS_PER_REPO), tags=S4_TAGS_PER_REPO,
            layers=1, layer_size=1024, namespace="floor",
        )  # fmt: skip
        loops = []
        for _ in range(args.rounds):
            out = subprocess.run(
                [python, "-c", HEADS, env.src.url], check=True, capture_output=True, text=True
            ).stdout
            loops.append(json.loads(out))
    best = min(loops, key=lambda r: r["cpu"])
    per_request_ms = best["cpu"] / best["requests"] * 1000
    print(f"interpreter alone:            {interpreter:.3f} s CPU")
    print(f"imports ({IMPORTS[7:]}): {imports:.3f} s CPU")
    print(
        f"aiohttp loop, {best['requests']} requests: {best['cpu']:.3f} s CPU"
        f" ({per_request_ms:.3f} ms a request)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
