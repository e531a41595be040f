"""Load and validate ``sync.yaml`` (version 1).

The YAML is composed into nodes first, so every value keeps the line it came from; the plain
data is then validated by frozen pydantic models. Every problem found -- YAML, pydantic, or the
cross-item checks here -- becomes one line of a single :class:`ConfigError`::

    rules[1].tags.semver (sync.yaml:14): invalid version range '1.2': ...

Rules are resolved at load: a field a rule leaves out comes from ``defaults``, then from the
built-in default (``interval: 1h`` when no interval or schedule is set anywhere). ``tags`` and
``prune`` merge key by key, so a rule may override one key of the defaults and keep the rest.
A rule that sets ``interval`` or ``schedule`` replaces the defaults' timing as a whole.

Secrets: a password's value never reaches an error message or a repr (``SecretStr``; pydantic's
``input`` is never formatted; the ``ValidationError`` is not chained onto the ``ConfigError``).
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple, cast

import yaml
from pydantic import (
    BaseModel,
    ValidationError,
)
from pydantic_core import ErrorDetails

from regsync.config import overlap
from regsync.config.fields import Loc, _host, _kind
from regsync.config.models import (
    Config,
    Credentials,
    Defaults,
    Prune,
    RateLimit,
    Referrers,
    RegistryConfig,
    Rule,
    TagFilter,
    _Document,
    _resolve_rule,
    _RuleSpec,
)
from regsync.config.sources import source_problems
from regsync.errors import ConfigError
from regsync.oci.ref import normalize_host
from regsync.secrets import Redactor

# ---------------------------------------------------------------------------------------------
# Loading: YAML nodes with lines, ${VAR} expansion, one report of every problem


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


class _Problem(NamedTuple):
    line: int
    loc: Loc
    message: str


_VAR = re.compile(r"\$(?:(\$)|\{([A-Za-z_][A-Za-z0-9_]*)\}|(\{))")
_MERGE_TAG = "tag:yaml.org,2002:merge"


MAX_CONFIG_BYTES = 1024 * 1024
MAX_VALUES = 10_000  # values built again through an alias or a merge (a real config: dozens)
MAX_DEPTH = 64  # a real config nests 5 deep; the composer recurses, so bound it before Python does


class _BoundedLoader(yaml.SafeLoader):
    """A SafeLoader whose composer refuses nesting deeper than MAX_DEPTH (it recurses per level).

    The scanner refuses deep ``[``/``{`` first: it keeps a possible key per open bracket and
    walks them all per token, so a line of brackets costs it seconds before the composer sees
    the 65th level.
    """

    _depth = 0

    def fetch_flow_collection_start(self, TokenClass: Any) -> None:
        if self.flow_level >= MAX_DEPTH:
            raise yaml.scanner.ScannerError(None, None, _TOO_DEEP, self.get_mark())
        super().fetch_flow_collection_start(TokenClass)

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                event: yaml.Event = self.peek_event()  # type: ignore[no-untyped-call]
                mark = cast(yaml.error.Mark, event.start_mark)
                raise yaml.composer.ComposerError(None, None, _TOO_DEEP, mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


_TOO_DEEP = f"nested deeper than {MAX_DEPTH} levels"
_TOO_BIG = f"aliases expand the document beyond {MAX_VALUES} values"


class _Reader:
    """Builds plain data from YAML nodes, recording each key's line and ${VAR} problems.

    Aliases are followed here, not by PyYAML: every value built a second time (through an alias
    or a ``<<`` merge) counts against MAX_VALUES, and every level against MAX_DEPTH, so a
    "billion laughs" of a few hundred bytes is refused at the line where it passes the bound
    instead of taking minutes and gigabytes. Values as written are bounded by the file's size.
    """

    def __init__(self, text: str, env: Mapping[str, str], filename: str) -> None:
        self.loader = _BoundedLoader(text)
        self.filename = filename
        self.env = env
        self.lines: dict[Loc, int] = {}
        self.problems: list[_Problem] = []
        self.expanded: list[str] = []  # every ${VAR}'s value: never quoted in a message
        self._active: set[int] = set()
        self._seen: set[int] = set()
        self._again = 0
        self._written = 1  # line of the last value built as written: where an alias is expanded

    def read(self) -> tuple[object, int]:
        try:
            node = self.loader.get_single_node()
            if node is None:
                return None, 1
            self.lines[()] = node.start_mark.line + 1
            return self._build(node, ()), self.lines[()]
        finally:
            self.loader.dispose()

    def _count(self, node: yaml.Node, again: bool = False) -> None:
        if again or id(node) in self._seen:
            self._again += 1
        else:
            self._seen.add(id(node))
            self._written = node.start_mark.line + 1
        if self._again > MAX_VALUES or len(self._active) >= MAX_DEPTH:
            # Deep through aliases though shallow as written, or wide through aliases.
            problem = _TOO_BIG if self._again > MAX_VALUES else _TOO_DEEP
            raise ConfigError(f"{self.filename}:{self._written}: {problem}")

    def _build(self, node: yaml.Node, loc: Loc) -> object:
        self._count(node)
        if isinstance(node, yaml.ScalarNode):
            value = self.loader.construct_object(node)
            return self._expand(value, loc) if isinstance(value, str) else value
        if id(node) in self._active:
            self.problems.append(_Problem(_line(self.lines, loc), loc, "alias refers to itself"))
            return None
        self._active.add(id(node))
        try:
            if isinstance(node, yaml.MappingNode):
                return self._mapping(node, loc)
            return [self._item(item, (*loc, i)) for i, item in enumerate(node.value)]
        finally:
            self._active.discard(id(node))

    def _item(self, node: yaml.Node, loc: Loc) -> object:
        self.lines[loc] = node.start_mark.line + 1
        return self._build(node, loc)

    def _mapping(self, node: yaml.MappingNode, loc: Loc) -> dict[str, object]:
        # `<<: *anchor` merges: the mapping's own keys win over merged ones, without complaint.
        out: dict[str, object] = {}
        for key_node, value_node, own in self._pairs(node, loc):
            line = key_node.start_mark.line + 1
            if own:
                self._written = line
            if not isinstance(key_node, yaml.ScalarNode):
                self.problems.append(_Problem(line, loc, "mapping keys must be plain names"))
                continue
            child = (*loc, key_node.value)
            if _extension(key_node.value, loc):
                # Built all the same, so its anchors and aliases count against the bounds.
                self._build(value_node, child)
                continue
            if key_node.value not in out:
                self.lines[child] = line
                out[key_node.value] = self._build(value_node, child)
            elif own:
                first = f"first at line {self.lines[child]}"
                self.problems.append(_Problem(line, child, f"duplicate key ({first})"))
        return out

    def _pairs(
        self, node: yaml.MappingNode, loc: Loc, own: bool = True
    ) -> Iterator[tuple[yaml.Node, yaml.Node, bool]]:
        """The mapping's own pairs, then those of each ``<<`` source in order (earlier wins).

        PyYAML's own merge (``flatten_mapping``) copies pairs eagerly, doubling per level of a
        merge chain; here each pair followed is counted, so such a chain stops at the bound.
        """
        merges: list[yaml.Node] = []
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                merges.append(value_node)
                continue
            if not own:
                self._count(value_node, again=True)
            yield key_node, value_node, own
        for merge in merges:
            sources = merge.value if isinstance(merge, yaml.SequenceNode) else [merge]
            for source in sources:
                if not isinstance(source, yaml.MappingNode) or id(source) in self._active:
                    message = "<< must merge mappings, and not the mapping itself"
                    line = source.start_mark.line + 1
                    self.problems.append(_Problem(line, loc, message))
                    continue
                self._active.add(id(source))
                try:
                    yield from self._pairs(source, loc, own=False)
                finally:
                    self._active.discard(id(source))

    def _expand(self, text: str, loc: Loc) -> str:
        """``${NAME}`` from the environment, ``$$`` a literal ``$``; any other ``$`` stays."""

        def substitute(match: re.Match[str]) -> str:
            dollar, name, _ = match.groups()
            if dollar:
                return "$"
            if name is not None and name in self.env:
                self.expanded.append(self.env[name])
                return self.env[name]
            message = (
                f"environment variable {name} is not set"
                if name is not None
                else "invalid ${...} reference: write ${NAME}, or $$ for a literal $"
            )
            self.problems.append(_Problem(_line(self.lines, loc), loc, message))
            return match.group(0)

        return _VAR.sub(substitute, text)


# Mappings whose keys are data (registry hosts, annotation names), not settings: an `x-` key
# there is a name like any other.
_DATA_MAPS = frozenset({"registries", "annotations"})


def _extension(key: str, loc: Loc) -> bool:
    """Whether ``key`` is an ``x-`` extension key, ignored wherever settings are named."""
    return key.startswith("x-") and not (loc and loc[-1] in _DATA_MAPS)


def _parse(
    text: str,
    filename: str,
    env: Mapping[str, str] | None,
    base_dir: Path | None,
    settings_only: bool = False,
) -> Config:
    if len(text) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{filename}: the config is over {MAX_CONFIG_BYTES} bytes")
    reader = _Reader(text, os.environ if env is None else env, filename)
    try:
        data, line = reader.read()
    except yaml.YAMLError as exc:
        # Not chained: str(exc) quotes the offending line, which may hold a password.
        raise _yaml_error(exc, filename) from None
    if not isinstance(data, dict):
        found = "the file is empty" if data is None else f"found {_kind(data)}"
        raise ConfigError(f"{filename}:{line}: {found}; expected a mapping with version and rules")
    if settings_only:
        data.setdefault("rules", [])
    problems = [*reader.problems, *_cross_checks(data, reader.lines)]
    env_locs = {problem.loc for problem in reader.problems}
    doc: _Document | None = None
    try:
        context = {"base_dir": base_dir, "settings_only": settings_only}
        doc = _Document.model_validate(data, context=context)
    except ValidationError as exc:
        for err in exc.errors(include_url=False):
            loc = tuple(err["loc"])
            if loc not in env_locs:  # the unexpanded value is not the user's mistake
                problems.append(_Problem(_line(reader.lines, loc), loc, _message(err)))
    if problems or doc is None:
        raise _refusal(problems, filename, reader, data)
    rules = [_resolve_rule(spec, doc.defaults) for spec in doc.rules]
    registries = {normalize_host(host): entry for host, entry in doc.registries.items()}
    served = [overlap.as_served(rule, registries) for rule in rules]
    problems = _shared_destinations(served, reader.lines)
    for at, message in source_problems(rules, doc.registries):  # what a run would refuse
        problems.append(
            _Problem(_line(reader.lines, ("rules", at, "source")), ("rules", at, "source"), message)
        )
    if problems:
        raise _refusal(problems, filename, reader, data)
    return Config(
        version=doc.version,
        registries=registries,
        defaults=doc.defaults,
        rules=rules,
    )


def _refusal(
    problems: list[_Problem], filename: str, reader: _Reader, data: dict[str, object]
) -> ConfigError:
    # A ${VAR} may hold a password wherever it was placed (`source: ${HUB_TOKEN}`), and a
    # validator may quote the value it refuses: mask them, and every literal password.
    hidden = Redactor([*reader.expanded, *_passwords(data)])
    return ConfigError(hidden.redact(_report(problems, filename)))


def _shared_destinations(rules: list[Rule], lines: dict[Loc, int]) -> list[_Problem]:
    """Pairs of rules that could write one destination repository (see config.overlap)."""
    problems = []
    for at, rule in enumerate(rules):
        if (repo := overlap.feeds_itself(rule)) is not None:
            where: Loc = ("rules", at, "destination")
            problems.append(
                _Problem(
                    _line(lines, where),
                    where,
                    f"the source {rule.source} also lists what this rule writes (e.g. {repo}):"
                    " every run would copy the last run's copies again, one level deeper;"
                    " write to a path the source pattern does not match, or to another registry",
                )
            )
    for first, later, repo in overlap.feedback(rules):
        where = ("rules", later, "destination")
        problems.append(
            _Problem(
                _line(lines, where),
                where,
                f"rule {rules[later].name!r} writes what rule {rules[first].name!r} (line "
                f"{_line(lines, ('rules', first, 'destination'))}) lists (e.g. {repo}), and that"
                " rule writes what this one lists: every run would copy the last run's copies"
                " again, one level deeper; write to paths the other source does not match",
            )
        )
    for first, later, repo in overlap.conflicts(rules):
        loc: Loc = ("rules", later, "destination")
        earlier = _line(lines, ("rules", first, "destination"))
        problems.append(
            _Problem(
                _line(lines, loc),
                loc,
                f"rule {rules[later].name!r} and rule {rules[first].name!r} (line {earlier}) "
                f"can both write destination repository {repo}: they would overwrite and "
                "prune each other's tags; give them different destination paths, or "
                "tags.include patterns with different literal prefixes",
            )
        )
    return problems


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


def _cross_checks(data: dict[str, object], lines: dict[Loc, int]) -> list[_Problem]:
    """Problems between items, which pydantic sees one at a time."""
    problems: list[_Problem] = []
    registries = data.get("registries")
    hosts: dict[str, Loc] = {}
    for key in registries if isinstance(registries, dict) else ():
        loc: Loc = ("registries", key)
        try:
            host = _host(key)
        except ValueError as exc:
            problems.append(_Problem(lines[loc], loc, str(exc)))
            continue
        if host in hosts:
            first = hosts[host]
            message = f"same registry as {first[-1]!r} (line {lines[first]})"
            problems.append(_Problem(lines[loc], loc, message))
        hosts.setdefault(host, loc)
    rules = data.get("rules")
    names: dict[str, Loc] = {}
    for index, rule in enumerate(rules if isinstance(rules, list) else ()):
        name = rule.get("name") if isinstance(rule, dict) else None
        if not isinstance(name, str):
            continue
        loc = ("rules", index, "name")
        if name in names:
            message = f"duplicate rule name {name!r} (first at line {lines[names[name]]})"
            problems.append(_Problem(lines[loc], loc, message))
        names.setdefault(name, loc)
    return problems


def _yaml_error(exc: yaml.YAMLError, filename: str) -> ConfigError:
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        context = ""
        if exc.context and exc.context_mark is not None:
            context = f" ({exc.context} at line {exc.context_mark.line + 1})"
        problem = exc.problem or "invalid YAML"
        return ConfigError(f"{filename}:{exc.problem_mark.line + 1}: {problem}{context}")
    return ConfigError(f"{filename}: invalid YAML: {exc}")


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


def _message(err: ErrorDetails) -> str:
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


def _line(lines: dict[Loc, int], loc: Loc) -> int:
    """The line of ``loc``, or of the nearest enclosing key that has one (missing keys)."""
    while loc not in lines and loc:
        loc = loc[:-1]
    return lines.get(loc, 1)


def _path(loc: Loc) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


def _report(problems: list[_Problem], filename: str) -> str:
    lines = []
    for problem in sorted(problems, key=lambda p: p.line):
        where = f"{filename}:{problem.line}"
        path = _path(problem.loc)
        lines.append(
            f"{path} ({where}): {problem.message}" if path else f"{where}: {problem.message}"
        )
    return "\n".join(dict.fromkeys(lines))
