"""A mapping that keeps only its most recently used keys.

What a run learns per blob or image (where a blob was placed, whether the source proved it
holds one, which images are in place) used to be kept for the whole run: a 50,000-tag copy
held a few hundred bytes for each of 50,000 config blobs it never looked at again. Forgetting
the least recently used costs a request at most (a HEAD, or a mount instead of nothing);
the keys a run keeps touching (base layers many images share) stay.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

RUN_MEMORY = 8192  # keys a run keeps per kind of fact (see the users)


class LRU(Generic[K, V]):
    """``size`` keys at most; reading or writing a key makes it the most recently used."""

    def __init__(self, size: int | None = None) -> None:
        self.size = RUN_MEMORY if size is None else size
        self._items: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K) -> V | None:
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def __contains__(self, key: K) -> bool:
        return self.get(key) is not None

    def __getitem__(self, key: K) -> V:
        value = self.get(key)
        if value is None:
            raise KeyError(key)
        return value

    def __setitem__(self, key: K, value: V) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self.size:
            self._items.popitem(last=False)

    def setdefault(self, key: K, default: V) -> V:
        value = self.get(key)
        if value is None:
            self[key] = value = default
        return value

    def __len__(self) -> int:
        return len(self._items)
