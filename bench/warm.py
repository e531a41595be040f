"""A warm `serve` cycle: regsync's runner run twice in one process over one config and state
dir, as `serve` runs a rule; the second cycle's wall and CPU time go to stdout as JSON.

    python bench/warm.py sync.yaml STATE_DIR [CYCLES]

Start-up (imports, the config) is paid once, as a daemon pays it; each cycle opens its own HTTP
session, as each of `serve`'s runs does.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from regsync.blobindex import BlobIndex  # noqa: E402
from regsync.config import load_config  # noqa: E402
from regsync.runner import run  # noqa: E402


async def cycles(config_path: str, state: Path, count: int) -> dict[str, float]:
    config = load_config(config_path)
    index = BlobIndex.open(state)
    last: dict[str, float] = {}
    try:
        for _ in range(count):
            wall, cpu = time.perf_counter(), time.process_time()
            result = await run(config, config.rules, index=index)
            if not result.ok:
                raise SystemExit(f"cycle failed: {[r.errors for r in result.rules]}")
            last = {
                "seconds": time.perf_counter() - wall,
                "cpu_seconds": time.process_time() - cpu,
                "up_to_date": float(sum(r.up_to_date for r in result.rules)),
            }
    finally:
        index.close()
    return last


def main() -> int:
    config_path, state = sys.argv[1], Path(sys.argv[2])
    count = int(sys.argv[3]) if len(sys.argv) > 3 else 2
    print(json.dumps({"cycles": count, **asyncio.run(cycles(config_path, state, count))}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
