"""The event loop regsync runs on (uvloop when the ``fast`` extra is installed), and task-group
helpers: work mapped over a bounded number of workers (``bounded_map``), and the one error a
failed task group reports (``first_error``).

uvloop roughly halves the event loop's own share of a request-heavy run (a no-op over
thousands of tags is almost all small requests). ``REGSYNC_UVLOOP=0`` keeps asyncio's loop.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, TypeVar

from regsync.errors import RegsyncError

T = TypeVar("T")
R = TypeVar("R")
log = logging.getLogger(__name__)


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop constructor, or None for the default loop."""
    if os.environ.get("REGSYNC_UVLOOP", "1").strip().lower() in ("0", "false", "no", "off"):
        return None
    try:
        uvloop = importlib.import_module("uvloop")
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)`` on the fastest loop available."""
    factory = loop_factory()
    log.debug("event loop: %s", "uvloop" if factory else "asyncio")
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)


def first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first leaf of an exception group, preferring regsync's own errors."""
    leaves: list[BaseException] = []

    def walk(error: BaseException) -> None:
        if isinstance(error, BaseExceptionGroup):
            for inner in error.exceptions:
                walk(inner)
        else:
            leaves.append(error)

    walk(group)
    return next((e for e in leaves if isinstance(e, RegsyncError)), leaves[0])


async def bounded_map(fn: Callable[[T], Awaitable[R]], items: Sequence[T], workers: int) -> list[R]:
    """``[await fn(item) for item in items]``, ``workers`` at a time, in the order of ``items``.

    ``workers`` tasks take the items one by one (not one task per item behind a semaphore):
    the tasks, and what each holds, follow the bound, never the number of items, which may
    come from outside (a tag listing): planning eight 1,000-tag repositories with a task per
    HEAD held 16,000 waiting tasks (~2.7 KB each). The first error cancels the rest (no
    further item starts) and is raised as itself (``first_error``), as ``gather`` raises it.
    """
    results: dict[int, R] = {}
    pending = iter(range(len(items)))  # shared: each index is taken by exactly one worker

    async def worker() -> None:
        for i in pending:
            results[i] = await fn(items[i])

    try:
        async with asyncio.TaskGroup() as group:
            for _ in range(min(workers, len(items))):
                group.create_task(worker())
    except BaseExceptionGroup as errors:
        raise first_error(errors) from errors
    return [results[i] for i in range(len(items))]
