"""Backends: where content lives, each keeping the contract of ``Backend`` (``base``).

``registry`` holds the registry client and its transport pieces, ``layout`` the OCI image
layout, ``fallback`` a source registry with its mirrors, ``memory.MemoryBackend`` everything in
dicts, for fast unit tests of the engine. ``pool.BackendPool`` is the one place a run opens a
backend for a source or destination spec, and a source's repository lister.
"""

from regsync.backends.base import Backend

__all__ = ["Backend"]
