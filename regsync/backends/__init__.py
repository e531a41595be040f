"""Backends: where content lives, each keeping the contract of ``Backend`` (``base``).

``registry`` holds the registry client and its transport pieces, ``layout`` the OCI image
layout, ``fallback`` a source registry with its mirrors, ``memory.MemoryBackend`` everything in
dicts, for fast unit tests of the engine.
"""

from regsync.backends.base import Backend

__all__ = ["Backend"]
