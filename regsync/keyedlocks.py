"""Locks by key that live only while a task holds or waits for them.

Single-flight per (operation, repository, digest) used to keep one ``asyncio.Lock`` per key for
the whole run: a 50,000-tag copy held 50,000 idle locks. Here a key's lock is made by its first
user and dropped with its last, so what is kept is bounded by the work in flight.
"""

from __future__ import annotations

import asyncio
from collections.abc import Hashable
from types import TracebackType
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class _Entry:
    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0


class KeyedLocks(Generic[K]):
    """``async with locks.hold(key):`` one holder per key at a time; a failed or cancelled
    holder releases it like any lock, and the next waiter goes ahead."""

    def __init__(self) -> None:
        self._entries: dict[K, _Entry] = {}

    def __len__(self) -> int:
        """Keys held or waited for now."""
        return len(self._entries)

    def hold(self, key: K) -> _Hold[K]:
        return _Hold(self, key)

    def _enter(self, key: K) -> _Entry:
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = _Entry()
        entry.users += 1
        return entry

    def _leave(self, key: K, entry: _Entry) -> None:
        entry.users -= 1
        if entry.users == 0:
            del self._entries[key]


class _Hold(Generic[K]):
    __slots__ = ("_entry", "_key", "_locks")

    def __init__(self, locks: KeyedLocks[K], key: K) -> None:
        self._locks, self._key = locks, key
        self._entry: _Entry | None = None

    async def __aenter__(self) -> None:
        entry = self._entry = self._locks._enter(self._key)
        try:
            await entry.lock.acquire()
        except BaseException:  # cancelled while waiting: no longer a user
            self._locks._leave(self._key, entry)
            raise

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        assert self._entry is not None
        self._entry.lock.release()
        self._locks._leave(self._key, self._entry)
