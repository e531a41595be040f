"""JSON from outside (registries, layouts, token servers, credential helpers), parsed bounded.

``json.loads`` recurses once per nesting level, so 100,000 nested brackets raise a
``RecursionError`` that no ``except ValueError`` catches. :func:`loads` first measures the
nesting outside strings (a C-speed regex finds the brackets and skips strings whole) and refuses
anything deeper than :data:`MAX_DEPTH` with a ``ValueError``, like any other invalid JSON.
The size of the text is bounded where it is read (each response and file has its own limit).
"""

from __future__ import annotations

import json
import re
from typing import Any

MAX_DEPTH = 64  # an OCI index nests 4 deep; 64 leaves room for any real document

# A string (skipped whole; possessive, so an unterminated one cannot backtrack) or a bracket.
_TOKENS = re.compile(rb'"(?:[^"\\]++|\\.)*+"|[\[\]{}]')
_OPENERS = frozenset(b"[{")


class JSONTooDeepError(ValueError):
    """Nested deeper than MAX_DEPTH: refused before parsing."""


def loads(data: bytes | str, max_depth: int = MAX_DEPTH) -> Any:
    """``json.loads`` for untrusted text; ValueError when invalid or nested too deep."""
    raw = data.encode("utf-8", errors="surrogatepass") if isinstance(data, str) else data
    if raw.count(b"[") + raw.count(b"{") > max_depth:  # else it cannot be too deep: skip the scan
        _check_depth(raw, max_depth)
    return json.loads(data)


def _check_depth(raw: bytes, max_depth: int) -> None:
    depth = 0
    for token in _TOKENS.finditer(raw):
        first = token.group()[0]
        if first in _OPENERS:
            depth += 1
            if depth > max_depth:
                raise JSONTooDeepError(f"JSON nested deeper than {max_depth} levels")
        elif first != 0x22:  # a closing bracket (0x22 is a string's opening quote)
            depth -= 1
