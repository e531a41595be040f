"""Small helpers shared by the transport's layers: bounded body reads, origins, error text."""

from __future__ import annotations

import time

import aiohttp
from yarl import URL

from regsync.errors import RegistryError


async def read_bounded(
    resp: aiohttp.ClientResponse, limit: int, registry: str, *, lax: bool = False
) -> bytes:
    """Read a body up to ``limit`` bytes; over it is an error (or truncated when ``lax``)."""
    chunks: list[bytes] = []
    total = 0
    async for chunk in resp.content.iter_chunked(64 * 1024):
        total += len(chunk)
        if total > limit:
            if lax:
                break
            raise RegistryError(
                f"{registry}: response body over {limit} bytes from {resp.url.raw_path}",
                registry=registry,
                status=resp.status,
            )
        chunks.append(chunk)
    return b"".join(chunks)


def origin(url: URL) -> tuple[str, str, int | None]:
    # Not URL.origin(): it tells http://h from http://h:80, which are one origin.
    return (url.scheme.lower(), (url.host or "").lower(), url.port)


def since(started: float) -> float:
    return time.monotonic() - started


def describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0][:200]
