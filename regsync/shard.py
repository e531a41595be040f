"""Scale-out: split a catalogue over N agents without any coordination between them.

Each (rule, repository) pair belongs to exactly one shard, chosen by rendezvous (highest random
weight) hashing: every shard scores the pair with sha256("rule\\0repo\\0shard") and the highest
score wins. Every agent computes the same answer from the same inputs, so N agents started with
``--shard 0/N`` .. ``--shard N-1/N`` cover every pair exactly once. Going from N to N+1 shards
moves only the pairs the new shard now wins (about 1/(N+1) of them); no pair moves between the
old shards.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass

ENV = "REGSYNC_SHARD"
MAX_SHARDS = 1024
_SHARD = re.compile(r"(?:(?P<name>.*?)-)?(?P<index>\d+)/(?P<count>\d+)")


@dataclass(frozen=True)
class Shard:
    """This agent's share: shard ``index`` of ``count`` (0-based)."""

    index: int = 0
    count: int = 1

    @classmethod
    def parse(cls, text: str) -> Shard:
        """``"i/N"``; ``i`` may be a StatefulSet pod name ending in its ordinal (``regsync-2/3``).

        Raises ValueError with a message fit for the user.
        """
        match = _SHARD.fullmatch(text.strip())
        if match is None:
            raise ValueError(
                f"invalid shard {text!r}: write INDEX/COUNT, e.g. 0/3 "
                "(or a StatefulSet pod name ending in its ordinal, e.g. regsync-0/3)"
            )
        index, count = int(match["index"]), int(match["count"])
        if not 1 <= count <= MAX_SHARDS:
            raise ValueError(f"invalid shard {text!r}: COUNT must be 1..{MAX_SHARDS}")
        if index >= count:
            raise ValueError(f"invalid shard {text!r}: INDEX must be below COUNT (0..{count - 1})")
        return cls(index, count)

    @property
    def is_whole(self) -> bool:
        return self.count == 1

    def owns(self, rule: str, repo: str) -> bool:
        return self.is_whole or owner(rule, repo, self.count) == self.index

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def owner(rule: str, repo: str, count: int) -> int:
    """The shard (0..count-1) that handles ``repo`` of ``rule``."""
    key = f"{rule}\0{repo}\0".encode()
    scores = [hashlib.sha256(key + str(k).encode()).digest() for k in range(count)]
    return max(range(count), key=scores.__getitem__)


def resolve(option: str | None, environ: Mapping[str, str]) -> Shard:
    """``--shard`` if given, else ``$REGSYNC_SHARD``, else the whole catalogue."""
    text = option if option is not None else environ.get(ENV, "")
    try:
        return Shard.parse(text) if text.strip() else Shard()
    except ValueError as exc:
        raise ValueError(f"{'--shard' if option is not None else ENV}: {exc}") from None
