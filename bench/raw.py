"""The raw limit: stream the same blobs GET -> PUT with no logic (no HEADs, hashing, retries).

    python bench/raw.py JOBS.json

JOBS.json: ``{"src": URL, "dst": URL, "parallel": N, "jobs": [[src_repo, digest, dst_repo]...]}``.
Each job is a source blob GET piped into a destination POST + PUT, ``parallel`` at a time, over
one aiohttp session: what any copier must do at least, at the speed of the registries.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from yarl import URL

CHUNK = 1024 * 1024


async def copy_blob(session: aiohttp.ClientSession, src: str, dst: str, job: list[str]) -> None:
    src_repo, digest, dst_repo = job
    async with session.post(f"{dst}/v2/{dst_repo}/blobs/uploads/") as start:
        assert start.status == 202, start.status
        location = str(start.url.join(URL(start.headers["Location"])))
    async with session.get(f"{src}/v2/{src_repo}/blobs/{digest}", auto_decompress=False) as got:
        assert got.status == 200, got.status

        async def body() -> AsyncIterator[bytes]:
            async for chunk in got.content.iter_chunked(CHUNK):
                yield chunk

        sep = "&" if "?" in location else "?"
        async with session.put(
            f"{location}{sep}digest={digest}",
            data=body(),
            headers={
                "Content-Type": "application/octet-stream",
                "Content-Length": got.headers["Content-Length"],
            },
        ) as put:
            assert put.status == 201, put.status


async def main(spec: dict[str, Any]) -> None:
    limit = asyncio.Semaphore(int(spec["parallel"]))
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(job: list[str]) -> None:
            async with limit:
                await copy_blob(session, spec["src"], spec["dst"], job)

        async with asyncio.TaskGroup() as group:
            for job in spec["jobs"]:
                group.create_task(one(job))


if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        asyncio.run(main(json.load(f)))
