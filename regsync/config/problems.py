"""What is wrong with a ``sync.yaml``, as the one report a refusal prints.

A :class:`Problem` is a line, the key path it concerns and a message; every source of problems
(the YAML reader, pydantic, the checks between items) makes them, and :func:`refusal` turns
them into one :class:`ConfigError`, a line each, sorted by line::

    rules[1].tags.semver (sync.yaml:14): invalid version range '1.2': ...

Secrets: a password's value never reaches an error message or a repr (``SecretStr``; pydantic's
``input`` is never formatted, only its type: :func:`pydantic_message`); the report masks every
``${VAR}`` value and every literal password, which a validator may quote (:func:`refusal`).
"""

from __future__ import annotations

import difflib
from typing import NamedTuple

from pydantic import BaseModel
from pydantic_core import ErrorDetails

from regsync.config.fields import Loc, _kind
from regsync.config.models import (
    Credentials,
    Defaults,
    Prune,
    RateLimit,
    Referrers,
    RegistryConfig,
    TagFilter,
    _Document,
    _RuleSpec,
)
from regsync.errors import ConfigError
from regsync.secrets import Redactor


class Problem(NamedTuple):
    line: int
    loc: Loc
    message: str


def line_of(lines: dict[Loc, int], loc: Loc) -> int:
    """The line of ``loc``, or of the nearest enclosing key that has one (missing keys)."""
    while loc not in lines and loc:
        loc = loc[:-1]
    return lines.get(loc, 1)


def problem_at(lines: dict[Loc, int], loc: Loc, message: str) -> Problem:
    """A problem at ``loc``'s line (see :func:`line_of`)."""
    return Problem(line_of(lines, loc), loc, message)


def refusal(
    problems: list[Problem], filename: str, expanded: list[str], data: dict[str, object]
) -> ConfigError:
    """The one error of a refused config: every problem, ``expanded`` and passwords masked."""
    # A ${VAR} may hold a password wherever it was placed (`source: ${HUB_TOKEN}`), and a
    # validator may quote the value it refuses: mask them, and every literal password.
    hidden = Redactor([*expanded, *_passwords(data)])
    return ConfigError(hidden.redact(_report(problems, filename)))


def _passwords(data: dict[str, object]) -> list[str]:
    """The literal ``registries.*.credentials.password`` and ``notifications.token`` strings
    of a document."""
    registries = data.get("registries")
    found = []
    for settings in registries.values() if isinstance(registries, dict) else ():
        for key, field in (("credentials", "password"), ("notifications", "token")):
            section = settings.get(key) if isinstance(settings, dict) else None
            secret = section.get(field) if isinstance(section, dict) else None
            if isinstance(secret, str):
                found.append(secret)
    return found


_EXPECTED = {
    "string_type": "a string",
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "a whole number",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "list_type": "a list",
    "tuple_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "path_type": "a file path",
}


def pydantic_message(err: ErrorDetails) -> str:
    """A short message for one pydantic error. ``input`` is used for its type only."""
    kind, ctx = err["type"], err.get("ctx", {})
    if kind in ("value_error", "assertion_error") and "error" in ctx:
        return str(ctx["error"])
    if kind == "missing":
        return "is required"
    if kind == "extra_forbidden":
        return _unknown_key(tuple(err["loc"]))
    if kind == "string_too_short":
        return "must not be empty"
    if kind == "too_long" and "max_length" in ctx:
        return f"has more than {ctx['max_length']} entries"
    if kind in _EXPECTED:
        return f"expected {_EXPECTED[kind]}, got {_kind(err.get('input'))}"
    return err["msg"].replace("Input should be", "must be")


_SECTIONS: dict[str | int, type[BaseModel]] = {
    "credentials": Credentials,
    "rate_limit": RateLimit,
    "tags": TagFilter,
    "prune": Prune,
    "referrers": Referrers,
    "defaults": Defaults,
}
_ITEMS: dict[str | int, type[BaseModel]] = {"registries": RegistryConfig, "rules": _RuleSpec}


def _unknown_key(loc: Loc) -> str:
    parent = loc[:-1]
    if not parent:
        model: type[BaseModel] | None = _Document
    elif len(parent) == 2 and parent[0] in _ITEMS:
        model = _ITEMS[parent[0]]
    else:
        model = _SECTIONS.get(parent[-1])
    if model is None:
        return "unknown key"
    valid = list(model.model_fields)
    close = difflib.get_close_matches(str(loc[-1]), valid, n=1, cutoff=0.5)
    if close:
        return f"unknown key (did you mean {close[0]!r}?)"
    return f"unknown key (valid keys: {', '.join(valid)})"


def _path(loc: Loc) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


def _report(problems: list[Problem], filename: str) -> str:
    lines = []
    for problem in sorted(problems, key=lambda p: p.line):
        where = f"{filename}:{problem.line}"
        path = _path(problem.loc)
        lines.append(
            f"{path} ({where}): {problem.message}" if path else f"{where}: {problem.message}"
        )
    return "\n".join(dict.fromkeys(lines))
