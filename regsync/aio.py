"""The event loop regsync runs on: uvloop when the ``fast`` extra is installed; and the one
error a failed task group reports (``first_error``).

uvloop roughly halves the event loop's own share of a request-heavy run (a no-op over
thousands of tags is almost all small requests). ``REGSYNC_UVLOOP=0`` keeps asyncio's loop.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from regsync.errors import RegsyncError

T = TypeVar("T")
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
