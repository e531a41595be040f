"""Logging set-up: readable lines (default) or one JSON object per line, on stderr.

Lines about a copy carry ``rule``, ``source`` and ``destination`` as structured fields: given
explicitly (``extra=copy_context(...)``), or taken from the *log scope* of the asyncio task that
logs -- the runner opens one per rule and per image copy, so a retry warning deep in the
transport still says which copy it belongs to. The JSON format emits the fields as keys; the
text format appends the ones the message does not already name.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TextIO

from regsync.secrets import redact

LOG_FORMATS = ("text", "json")
# Attributes every LogRecord has; anything else on a record came from `extra=`.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}


# The rule / copy the current asyncio task works for. A ContextVar rather than shared state:
# every task sees the scope of the code that created it, and leaving a scope restores the last.
_SCOPE: contextvars.ContextVar[Mapping[str, str] | None] = contextvars.ContextVar(
    "regsync_log_scope", default=None
)


def copy_context(rule: str, source: str, destination: str) -> dict[str, str]:
    """The structured fields of a log line about one copy."""
    return {"rule": rule, "source": source, "destination": destination}


@contextmanager
def log_scope(**fields: str) -> Iterator[None]:
    """Every line logged inside (by this task and tasks it starts) carries `fields`."""
    token = _SCOPE.set({**(_SCOPE.get() or {}), **fields})
    try:
        yield
    finally:
        _SCOPE.reset(token)


def log_context(**fields: str) -> contextvars.Context:
    """A copy of the current context with `fields` in its log scope, for `create_task`."""
    context = contextvars.copy_context()
    context.run(_SCOPE.set, {**(_SCOPE.get() or {}), **fields})
    return context


class _ScopeFilter(logging.Filter):
    """Adds the task's log scope to records that did not set those fields themselves."""

    def filter(self, record: logging.LogRecord) -> bool:
        scope = _SCOPE.get()
        added = {k: v for k, v in (scope or {}).items() if not hasattr(record, k)}
        for key, value in added.items():
            setattr(record, key, value)
        record._scope_added = added
        return True


class TextFormatter(logging.Formatter):
    """Readable lines; scope fields the message lacks follow in brackets."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(message)s", "%Y-%m-%dT%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        added: Mapping[str, str] = getattr(record, "_scope_added", {})
        if "source" in added:
            rule = f"rule {added['rule']}: " if "rule" in added else ""
            return f"{line} [{rule}{added['source']} -> {added.get('destination', '?')}]"
        if "rule" in added and f"rule {added['rule']}" not in record.getMessage():
            return f"{line} [rule {added['rule']}]"
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and any structured fields."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                data[key] = value
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str)


class _StderrHandler(logging.StreamHandler[TextIO]):
    """Writes to whatever sys.stderr is at the time, so a live progress display that
    redirects stderr prints log lines above itself instead of through it."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        pass

    def format(self, record: logging.LogRecord) -> str:
        # The whole line, tracebacks and structured fields included: what leaves is masked.
        return redact(super().format(record))


# What `warn_once` has logged in this process. Process-wide on purpose: a daemon opens a run
# per rule and cycle, and a standing fact (a registry configured for plain HTTP) is news once.
_WARNED: set[str] = set()


def warn_once(logger: logging.Logger, msg: str, *args: object) -> None:
    """Log a warning the first time this exact message is logged in the process."""
    text = msg % args if args else msg
    if text not in _WARNED:
        _WARNED.add(text)
        logger.warning("%s", text)


def setup_logging(verbosity: int = 0, fmt: str = "text") -> None:
    """verbosity: -1 quiet (errors only), 0 warnings and the summary, 1 info, 2 debug."""
    level = {-1: logging.ERROR, 0: logging.WARNING, 1: logging.INFO}.get(verbosity, logging.DEBUG)
    handler = _StderrHandler()
    handler.addFilter(_ScopeFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    if verbosity < 2:
        logging.getLogger("aiohttp").setLevel(logging.WARNING)
