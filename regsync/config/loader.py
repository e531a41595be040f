"""Load and validate ``sync.yaml`` (version 1): the entry points and the order of the checks.

The text is read into plain data with each key's line (``config.yamlread``, bounded, with
``${VAR}`` substitution from ``config.variables``), checked between items
(``config.crosscheck``), validated by the frozen pydantic models (``config.models``), and the
rules resolved. Every problem found becomes one line of a single :class:`ConfigError`
(``config.problems``), secrets masked.

Rules are resolved at load: a field a rule leaves out comes from ``defaults``, then from the
built-in default (``interval: 1h`` when no interval or schedule is set anywhere). ``tags`` and
``prune`` merge key by key, so a rule may override one key of the defaults and keep the rest.
A rule that sets ``interval`` or ``schedule`` replaces the defaults' timing as a whole.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import yaml
from pydantic import ValidationError

from regsync.config import overlap
from regsync.config.crosscheck import item_problems, rule_problems
from regsync.config.fields import _kind
from regsync.config.models import Config, _Document, _resolve_rule
from regsync.config.problems import problem_at, pydantic_message, refusal
from regsync.config.variables import Variables
from regsync.config.yamlread import Reader, yaml_error
from regsync.errors import ConfigError
from regsync.oci.ref import normalize_host

MAX_CONFIG_BYTES = 1024 * 1024


def load_config(
    path: str | os.PathLike[str],
    env: Mapping[str, str] | None = None,
    *,
    settings_only: bool = False,
) -> Config:
    """Read and validate a sync.yaml; relative file paths in it are relative to its directory.

    ``settings_only``: the file is read for its ``registries:`` (the one-line commands), so it
    may have no rules; rules it has are still checked.
    """
    file = Path(path)
    try:
        with file.open("rb") as stream:  # read no more than the bound: the file may be huge
            raw = stream.read(MAX_CONFIG_BYTES + 1)
        if len(raw) > MAX_CONFIG_BYTES:
            raise ConfigError(f"{file}: the config is over {MAX_CONFIG_BYTES} bytes")
        text = raw.decode("utf-8")
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read the config: {exc.strerror}") from exc
    except UnicodeDecodeError:
        # Not chained: the decode error quotes the file's bytes, which may hold a password.
        raise ConfigError(f"{file}: the config is not UTF-8 text") from None
    return _parse(text, file.name, env, file.absolute().parent, settings_only)


def parse_config(
    text: str, filename: str = "sync.yaml", env: Mapping[str, str] | None = None
) -> Config:
    """Validate sync.yaml text; ``filename`` is only used in messages. Touches no network."""
    return _parse(text, filename, env, None)


def _parse(
    text: str,
    filename: str,
    env: Mapping[str, str] | None,
    base_dir: Path | None,
    settings_only: bool = False,
) -> Config:
    if len(text) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{filename}: the config is over {MAX_CONFIG_BYTES} bytes")
    variables = Variables(os.environ if env is None else env)
    reader = Reader(text, variables, filename)
    try:
        data, line = reader.read()
    except yaml.YAMLError as exc:
        # Not chained: str(exc) quotes the offending line, which may hold a password.
        raise yaml_error(exc, filename) from None
    if not isinstance(data, dict):
        found = "the file is empty" if data is None else f"found {_kind(data)}"
        raise ConfigError(f"{filename}:{line}: {found}; expected a mapping with version and rules")
    if settings_only:
        data.setdefault("rules", [])
    problems = [*reader.problems, *item_problems(data, reader.lines)]
    env_locs = {problem.loc for problem in reader.problems}
    doc: _Document | None = None
    try:
        context = {"base_dir": base_dir, "settings_only": settings_only}
        doc = _Document.model_validate(data, context=context)
    except ValidationError as exc:
        for err in exc.errors(include_url=False):
            loc = tuple(err["loc"])
            if loc not in env_locs:  # the unexpanded value is not the user's mistake
                problems.append(problem_at(reader.lines, loc, pydantic_message(err)))
    if problems or doc is None:
        raise refusal(problems, filename, variables.expanded, data)
    rules = [_resolve_rule(spec, doc.defaults) for spec in doc.rules]
    registries = {normalize_host(host): entry for host, entry in doc.registries.items()}
    served = [overlap.as_served(rule, registries) for rule in rules]
    problems = rule_problems(served, rules, doc.registries, reader.lines)
    if problems:
        raise refusal(problems, filename, variables.expanded, data)
    return Config(
        version=doc.version,
        registries=registries,
        defaults=doc.defaults,
        rules=rules,
    )
