"""JSON from outside (registries, layouts, token servers, credential helpers), parsed bounded.

``json.loads`` recurses once per nesting level, so 100,000 nested brackets raise a
``RecursionError`` that no ``except ValueError`` catches. :func:`loads` first measures the
nesting outside strings and refuses anything deeper than :data:`MAX_DEPTH` with a
``ValueError``, like any other invalid JSON. The measure runs at C speed (byte translations,
two regex substitutions and an ``accumulate``), cheaper than the parse itself. The size of the
text is bounded where it is read (each response and file has its own limit).

Bytes alone do not bound the memory a parse builds: ``[{},{},...]`` makes a Python object of
~70 bytes for every 3 bytes of text (16 MiB would cost ~400 MiB). Real documents (descriptors,
platforms, listings, Hub pages) spend 100 bytes or more per object or array, so a text with
more than one bracket per :data:`MIN_BYTES_PER_CONTAINER` bytes (past a small allowance) is
refused before parsing, which keeps any parse within a few times its size.
"""

from __future__ import annotations

import json
import re
from itertools import accumulate
from typing import Any

MAX_DEPTH = 64  # an OCI index nests 4 deep; 64 leaves room for any real document
MIN_BYTES_PER_CONTAINER = 32  # real JSON from registries spends 100+ bytes per {} or []
FREE_CONTAINERS = 10_000  # small documents are never refused for their density

_ESCAPE = re.compile(rb"\\.", re.DOTALL)  # \" or \\ inside a string: neither ends it
_STRING = re.compile(rb'"[^"]*"')  # once escapes are gone, a string is quote to quote
_QUOTES_AND_BRACKETS = bytes(sorted(set(range(256)) - set(b'"[]{}')))  # what to delete
_BRACKETS = bytes(sorted(set(range(256)) - set(b"[]{}")))
_STEP = [0] * 256
_STEP[ord("[")] = _STEP[ord("{")] = 1
_STEP[ord("]")] = _STEP[ord("}")] = -1


class JSONTooDeepError(ValueError):
    """Nested deeper than MAX_DEPTH: refused before parsing."""


class JSONTooDenseError(ValueError):
    """More objects and arrays than its size accounts for: refused before parsing."""


def loads(data: bytes | str, max_depth: int = MAX_DEPTH) -> Any:
    """``json.loads`` for untrusted text; ValueError when invalid or nested too deep."""
    raw = data.encode("utf-8", errors="surrogatepass") if isinstance(data, str) else data
    containers = raw.count(b"[") + raw.count(b"{")  # strings' brackets too: an upper bound
    # Fewer brackets than the bound cannot nest deeper than it: no need to measure.
    if containers > max_depth and depth(raw) > max_depth:
        raise JSONTooDeepError(f"JSON nested deeper than {max_depth} levels")
    if containers > FREE_CONTAINERS + len(raw) // MIN_BYTES_PER_CONTAINER:
        raise JSONTooDenseError(
            f"JSON with {containers} objects and arrays in {len(raw)} bytes: "
            "more than a real document holds"
        )
    return json.loads(data)


def depth(raw: bytes) -> int:
    """The deepest nesting of brackets outside strings (over-counted only for invalid JSON)."""
    if b"\\" in raw:
        raw = _ESCAPE.sub(b"", raw)
    outside = _STRING.sub(b"", raw.translate(None, _QUOTES_AND_BRACKETS))
    brackets = outside.translate(None, _BRACKETS)
    return max(accumulate(map(_STEP.__getitem__, brackets)), default=0)
