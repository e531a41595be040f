"""Backends: where content lives, each keeping the contract of ``regsync.backend.Backend``.

``memory.MemoryBackend`` holds everything in dicts, for fast unit tests of the engine.
"""
