"""What the process does before a command's work begins: the cyclic collector held off while
start-up loads modules, and a SIGHUP that arrives before the daemon handles it remembered.

Start-up allocates ~10^5 objects that live as long as the process (modules, the pydantic
validators): collecting while they are made only walks them again and again. The collector is
off until the command's imports are done (`started`), then they are frozen out of its reach;
whatever path ends the command turns it back on (`collector_paused`).
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def collector_paused() -> Iterator[None]:
    """The cyclic collector off for start-up, back on however the command ends."""
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def started() -> None:
    """The command's imports are done: freeze what start-up made, collect from here on."""
    gc.freeze()
    gc.enable()


class EarlyHangup:
    """SIGHUP before the daemon's loop handles it: remembered, never fatal (`systemctl
    reload` right after a start must not kill the process)."""

    def __init__(self) -> None:
        self.seen = False

    def __call__(self, signum: int, frame: object) -> None:
        self.seen = True
