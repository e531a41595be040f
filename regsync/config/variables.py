"""``${VAR}`` substitution in ``sync.yaml`` values, from the environment.

``${NAME}`` is the variable's value, ``$$`` a literal ``$``; any other ``$`` stays as written.
An unset variable, or a ``${`` that names none, is a problem at the value's key, and the value
is kept unexpanded (the validation errors it then causes are not the user's mistake: the
loader drops them). Every value substituted is recorded (``expanded``): it may be a password
wherever it was placed, so a refusal masks it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

_VAR = re.compile(r"\$(?:(\$)|\{([A-Za-z_][A-Za-z0-9_]*)\}|(\{))")


class Variables:
    """The environment a document's values are expanded from, and what was taken from it."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.expanded: list[str] = []  # every ${VAR}'s value: never quoted in a message

    def expand(self, text: str) -> tuple[str, list[str]]:
        """``text`` with its references substituted, and a message per reference refused."""
        problems: list[str] = []

        def substitute(match: re.Match[str]) -> str:
            dollar, name, _ = match.groups()
            if dollar:
                return "$"
            if name is not None and name in self.env:
                self.expanded.append(self.env[name])
                return self.env[name]
            problems.append(
                f"environment variable {name} is not set"
                if name is not None
                else "invalid ${...} reference: write ${NAME}, or $$ for a literal $"
            )
            return match.group(0)

        return _VAR.sub(substitute, text), problems
