"""Deadlines for a whole request and a minimum rate for a streamed body.

The idle-read timeout alone lets a server trickle one byte just before each timeout and hold a
run forever. A small request (listing, manifest, token) gets a total deadline; a streamed body
(a blob, of any size) must deliver ``min_rate`` bytes/s on average over each ``window`` seconds
spent waiting on it. Either failing is a TransportError: retryable, so the retry policy bounds
the tries and a run always ends.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterable, AsyncIterator

from regsync.errors import TransportError


async def at_least(
    chunks: AsyncIterable[bytes], min_rate: float, window: float, registry: str, what: str
) -> AsyncIterator[bytes]:
    """Pass ``chunks`` on; fail when a window of ``window`` seconds spent waiting for them
    brings fewer than ``min_rate * window`` bytes. Only time spent waiting on the server counts:
    a slow consumer (a destination taking its time) does not make the source look slow."""
    if min_rate <= 0:
        async for chunk in chunks:
            yield chunk
        return
    need, waited, got = min_rate * window, 0.0, 0
    iterator = aiter(chunks)
    while True:
        started = time.monotonic()
        try:
            async with asyncio.timeout(window - waited):
                chunk = await anext(iterator)
        except StopAsyncIteration:
            return
        except TimeoutError:
            raise TransportError(
                f"{registry}: {what} is slower than {min_rate:g} bytes/s over {window:g}s"
                f" ({got} bytes; REGSYNC_MIN_RATE, REGSYNC_RATE_WINDOW)",
                registry=registry,
            ) from None
        waited += time.monotonic() - started
        got += len(chunk)
        if got >= need:  # this window is satisfied: the next one starts now
            waited, got = 0.0, 0
        yield chunk


def too_slow(registry: str, what: str, seconds: float) -> TransportError:
    return TransportError(
        f"{registry}: {what} did not finish within {seconds:g}s (REGSYNC_REQUEST_TIMEOUT)",
        registry=registry,
    )


async def destination_time(
    chunks: AsyncIterable[bytes], limit: asyncio.Timeout
) -> AsyncIterator[bytes]:
    """Pass ``chunks`` (an upload's body) on, stopping the clock of ``limit`` while they are
    awaited: the upload's deadline then measures the destination alone, the source having its
    own minimum rate. Without this a slow source would be reported as a slow destination."""
    loop = asyncio.get_running_loop()
    iterator = aiter(chunks)
    while True:
        when = limit.when()
        remaining = None if when is None else when - loop.time()
        limit.reschedule(None)
        try:
            chunk = await anext(iterator)
        except StopAsyncIteration:
            return
        finally:
            if remaining is not None:
                limit.reschedule(loop.time() + remaining)
        yield chunk
