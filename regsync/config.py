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
from collections.abc import Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Literal, NamedTuple, TypeVar

import yaml
from croniter import croniter
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    SecretStr,
    StrictBool,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails

from regsync.errors import ConfigError
from regsync.oci.ref import DestinationSpec, SourceSpec, is_host, normalize_host

DEFAULT_INTERVAL = timedelta(hours=1)

Loc = tuple[str | int, ...]

# ---------------------------------------------------------------------------------------------
# Value parsers (each raises ValueError with a message fit for the user)

_DURATION = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")
_PLATFORM = re.compile(r"[a-z0-9]+/[a-z0-9_]+(?:/[a-z0-9]+)?")
_RULE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_HOST = re.compile(rf"(?:{_LABEL}(?:\.{_LABEL})*|\[[0-9A-Fa-f:]+\])(?::[0-9]{{1,5}})?")


def parse_duration(text: str) -> timedelta:
    """Parse ``90s``, ``15m``, ``1h``, ``1h30m``, ``2d``: whole numbers, units largest first."""
    match = _DURATION.fullmatch(text.strip())
    if match is None or not text.strip():
        raise ValueError(f"invalid duration {text!r}: write e.g. 90s, 15m, 1h30m or 2d")
    days, hours, minutes, seconds = (int(group or 0) for group in match.groups())
    return timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)


def _kind(value: object) -> str:
    """What a YAML value is, in YAML words, without showing the value (it may be a secret)."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "a mapping" if isinstance(value, dict) else type(value).__name__


def _no_bool(value: object) -> object:
    # pydantic's lax mode reads true as 1; in a YAML config that is always a slip.
    if isinstance(value, bool):
        raise ValueError("expected a number, got true/false")
    return value


def _duration(value: object) -> object:
    if isinstance(value, timedelta):
        return value
    if not isinstance(value, str):
        raise ValueError(f"expected a duration such as 15m or 1h30m, got {_kind(value)}")
    delta = parse_duration(value)
    if delta <= timedelta(0):
        raise ValueError(f"duration {value!r} must be longer than zero")
    return delta


def _cron(value: str) -> str:
    if len(value.split()) != 5 or not croniter.is_valid(value):
        raise ValueError(
            f"invalid cron schedule {value!r}: expected 5 fields "
            "(minute hour day-of-month month day-of-week), e.g. '*/15 * * * *'"
        )
    return value


def _regex(value: object) -> object:
    if not isinstance(value, str):
        raise ValueError(f"expected a regex string, got {_kind(value)}")
    try:
        return re.compile(value)
    except re.error as exc:
        raise ValueError(f"invalid regex {value!r}: {exc}") from exc


def _semver(value: str) -> str:
    try:
        if value.strip():
            SpecifierSet(value)
            return value
    except InvalidSpecifier:
        pass
    raise ValueError(
        f"invalid version range {value!r}: write comparisons joined by commas, "
        "e.g. '>=1.0, <3', '==1.2.*' or '~=2.4'"
    )


def _platforms(value: object) -> object:
    if value == "all" or isinstance(value, tuple):
        return value
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items:
        raise ValueError("expected 'all' or a list of platforms such as [linux/amd64, linux/arm64]")
    for item in items:
        if not isinstance(item, str) or not _PLATFORM.fullmatch(item):
            raise ValueError(
                f"invalid platform {item!r}: expected os/arch[/variant], e.g. linux/arm64/v8"
            )
    return tuple(dict.fromkeys(items))


def _host(value: str) -> str:
    if not is_host(value) or not _HOST.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a registry host: expected e.g. registry.local:5000, "
            "mirror.gcr.io or 127.0.0.1:5000 (no scheme, no path)"
        )
    return normalize_host(value)


def _source(value: object) -> SourceSpec:
    if isinstance(value, SourceSpec):
        return value
    if not isinstance(value, str) or not value.strip():
        found = "an empty string" if isinstance(value, str) else _kind(value)
        raise ValueError(f"expected a source such as docker.io/team/*, got {found}")
    return SourceSpec.parse(value)


def _destination(value: object) -> DestinationSpec:
    if isinstance(value, DestinationSpec):
        return value
    if not isinstance(value, str) or not value.strip():
        found = "an empty string" if isinstance(value, str) else _kind(value)
        raise ValueError(f"expected a destination such as registry.local:5000, got {found}")
    return DestinationSpec.parse(value)


def _rule_name(value: str) -> str:
    if not _RULE_NAME.fullmatch(value):
        raise ValueError(
            f"invalid rule name {value!r}: use letters, digits, '.', '_' and '-', "
            "starting with a letter or digit"
        )
    return value


def _resolve_path(value: Path, info: ValidationInfo) -> Path:
    """Relative paths are relative to the config file's directory (load_config)."""
    value = value.expanduser()
    base = info.context.get("base_dir") if isinstance(info.context, dict) else None
    return base / value if isinstance(base, Path) and not value.is_absolute() else value


def _existing_file(value: Path) -> Path:
    if not value.is_file():
        raise ValueError(f"file not found: {value}")
    return value


Int = Annotated[int, BeforeValidator(_no_bool)]
Number = Annotated[float, BeforeValidator(_no_bool)]
Duration = Annotated[timedelta, BeforeValidator(_duration)]
Cron = Annotated[str, AfterValidator(_cron)]
Regex = Annotated[re.Pattern[str], BeforeValidator(_regex)]
SemverRange = Annotated[str, AfterValidator(_semver)]
Platforms = Annotated[Literal["all"] | tuple[str, ...], BeforeValidator(_platforms)]
Host = Annotated[str, AfterValidator(_host)]
Source = Annotated[SourceSpec, PlainValidator(_source)]
Destination = Annotated[DestinationSpec, PlainValidator(_destination)]
RuleName = Annotated[str, AfterValidator(_rule_name)]
ConfigPath = Annotated[Path, AfterValidator(_resolve_path)]
ExistingFile = Annotated[Path, AfterValidator(_resolve_path), AfterValidator(_existing_file)]

# ---------------------------------------------------------------------------------------------
# Models


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)


class RateLimit(_Model):
    """Pause source pulls when the registry's ratelimit-remaining falls below this."""

    min_remaining: Annotated[Int, Field(ge=0)]


class Credentials(_Model):
    username: Annotated[str, Field(min_length=1)]
    password: SecretStr | None = None
    password_file: ConfigPath | None = None

    @field_validator("password")
    @classmethod
    def _password_not_empty(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value():
            raise ValueError("is empty (an environment variable set to ''?)")
        return value

    @model_validator(mode="after")
    def _one_password(self) -> Credentials:
        if (self.password is None) == (self.password_file is None):
            raise ValueError("set exactly one of password or password_file")
        return self

    def secret(self) -> str:
        """The password, or the stripped contents of password_file (read now, not at load)."""
        if self.password is not None:
            return self.password.get_secret_value()
        path = self.password_file
        if path is None:
            raise ConfigError("credentials have no password or password_file")
        try:
            text = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"cannot read password_file {path}: {exc.strerror}") from exc
        except UnicodeDecodeError:
            # Not chained: the decode error carries the file's bytes, i.e. the secret.
            raise ConfigError(f"password_file {path} is not UTF-8 text") from None
        if not text:
            raise ConfigError(f"password_file {path} is empty")
        return text


class RegistryConfig(_Model):
    credentials: Credentials | None = None
    tls: Literal["verify", "insecure", "http"] = "verify"
    ca_file: ExistingFile | None = None
    client_cert: ExistingFile | None = None
    client_key: ExistingFile | None = None
    rate_limit: RateLimit | None = None
    mirrors: list[Host] = Field(default_factory=list)
    max_concurrency: Annotated[Int, Field(ge=1, le=256)] = 8

    @model_validator(mode="after")
    def _check_tls(self) -> RegistryConfig:
        if (self.client_cert is None) != (self.client_key is None):
            raise ValueError("client_cert and client_key must be set together")
        return self


class TagFilter(_Model):
    include: tuple[Regex, ...] = (re.compile(".*"),)
    exclude: tuple[Regex, ...] = ()
    semver: SemverRange | None = None
    latest: Annotated[Int, Field(ge=1)] | None = None

    @field_validator("include")
    @classmethod
    def _include_not_empty(cls, value: tuple[re.Pattern[str], ...]) -> tuple[re.Pattern[str], ...]:
        if not value:
            raise ValueError("an empty include list selects no tags; leave it out to select all")
        return value

    def selects(self, tag: str) -> bool:
        """Whether include/exclude keep ``tag`` (full matches; semver/latest apply elsewhere)."""
        return any(p.fullmatch(tag) for p in self.include) and not any(
            p.fullmatch(tag) for p in self.exclude
        )


class Prune(_Model):
    """Delete destination tags the source lost; guarded by allow_empty and max_fraction."""

    enabled: StrictBool = False
    allow_empty: StrictBool = False
    max_fraction: Annotated[Number, Field(gt=0, le=1)] = 0.5


def _prune(value: object) -> object:
    """YAML's ``prune: true|false``, or a mapping, which means enabled unless it says otherwise."""
    if isinstance(value, bool):
        return {"enabled": value}
    if isinstance(value, dict):
        return {"enabled": True, **value}
    if isinstance(value, Prune):
        return value
    raise ValueError(
        f"expected true, false or a mapping such as {{max_fraction: 0.2}}, got {_kind(value)}"
    )


PruneSetting = Annotated[Prune, BeforeValidator(_prune)]


class _Timing(_Model):
    interval: Duration | None = None
    schedule: Cron | None = None

    @field_validator("schedule")
    @classmethod
    def _not_both(cls, value: str | None, info: ValidationInfo) -> str | None:
        # A field validator, not a model one, so it is reported beside other field errors.
        if value is not None and info.data.get("interval") is not None:
            raise ValueError("set either interval or schedule, not both")
        return value


class Defaults(_Timing):
    prune: PruneSetting = Prune()
    platforms: Platforms = "all"
    referrers: StrictBool = False
    tags: TagFilter = TagFilter()


class _RuleSpec(_Timing):
    """A rule as written: fields left out are None and come from the defaults."""

    name: RuleName
    source: Source
    destination: Destination
    tags: TagFilter | None = None
    platforms: Platforms | None = None
    referrers: StrictBool | None = None
    prune: PruneSetting | None = None

    @model_validator(mode="after")
    def _not_onto_itself(self) -> _RuleSpec:
        src, dst = self.source, self.destination
        if src.registry and src.registry == dst.registry and not dst.template:
            raise ValueError(
                "destination would copy each repository onto itself; add a path such as "
                f"{dst.registry}/mirror"
            )
        return self


class Rule(_Timing):
    """A rule with every setting resolved (rule, then defaults, then built-in)."""

    name: str
    source: Source
    destination: Destination
    tags: TagFilter = TagFilter()
    platforms: Platforms = "all"
    referrers: bool = False
    prune: Prune = Prune()

    @model_validator(mode="before")
    @classmethod
    def _default_timing(cls, data: object) -> object:
        if isinstance(data, dict) and data.get("interval") is None and not data.get("schedule"):
            return {**data, "interval": DEFAULT_INTERVAL}
        return data


def _none_is_empty(value: object) -> object:
    # `registries:` with every entry commented out reads as null.
    return {} if value is None else value


class _Document(_Model):
    version: Int
    registries: Annotated[dict[str, RegistryConfig], BeforeValidator(_none_is_empty)] = {}
    defaults: Annotated[Defaults, BeforeValidator(_none_is_empty)] = Defaults()
    rules: list[_RuleSpec]

    @field_validator("version")
    @classmethod
    def _version_1(cls, value: int) -> int:
        if value != 1:
            raise ValueError(f"unsupported version {value}: this regsync reads version 1")
        return value

    @field_validator("rules")
    @classmethod
    def _some_rules(cls, value: list[_RuleSpec]) -> list[_RuleSpec]:
        if not value:
            raise ValueError("must list at least one rule")
        return value


class Config(_Model):
    version: int
    registries: dict[str, RegistryConfig]  # keyed by canonical host (normalize_host)
    defaults: Defaults
    rules: list[Rule]

    def registry(self, host: str) -> RegistryConfig:
        """Settings for a registry host; a host not configured gets the defaults."""
        return self.registries.get(normalize_host(host)) or RegistryConfig()

    def select_rules(self, names: Sequence[str]) -> list[Rule]:
        """The named rules in config order; every rule when ``names`` is empty."""
        wanted = [names] if isinstance(names, str) else list(names)
        if not wanted:
            return list(self.rules)
        known = [rule.name for rule in self.rules]
        unknown = [name for name in dict.fromkeys(wanted) if name not in known]
        if unknown:
            raise ConfigError(
                f"unknown rule{'s' if len(unknown) > 1 else ''} "
                f"{', '.join(map(repr, unknown))}; the config has: {', '.join(known)}"
            )
        return [rule for rule in self.rules if rule.name in wanted]


_M = TypeVar("_M", bound=BaseModel)


def _merge(base: _M, override: _M | None) -> _M:
    """``base`` with the keys ``override`` was given explicitly."""
    if override is None:
        return base
    return base.model_copy(update={k: getattr(override, k) for k in override.model_fields_set})


def _resolve_rule(spec: _RuleSpec, defaults: Defaults) -> Rule:
    own_timing = spec.interval is not None or spec.schedule is not None
    timing: _Timing = spec if own_timing else defaults
    return Rule(
        name=spec.name,
        source=spec.source,
        destination=spec.destination,
        tags=_merge(defaults.tags, spec.tags),
        platforms=defaults.platforms if spec.platforms is None else spec.platforms,
        referrers=defaults.referrers if spec.referrers is None else spec.referrers,
        prune=_merge(defaults.prune, spec.prune),
        interval=timing.interval,
        schedule=timing.schedule,
    )


# ---------------------------------------------------------------------------------------------
# Loading: YAML nodes with lines, ${VAR} expansion, one report of every problem


def load_config(path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> Config:
    """Read and validate a sync.yaml; relative file paths in it are relative to its directory."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read the config: {exc.strerror}") from exc
    except UnicodeDecodeError:
        # Not chained: the decode error quotes the file's bytes, which may hold a password.
        raise ConfigError(f"{file}: the config is not UTF-8 text") from None
    return _parse(text, file.name, env, file.absolute().parent)


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


class _Reader:
    """Builds plain data from YAML nodes, recording each key's line and ${VAR} problems."""

    def __init__(self, text: str, env: Mapping[str, str]) -> None:
        self.loader = yaml.SafeLoader(text)
        self.env = env
        self.lines: dict[Loc, int] = {}
        self.problems: list[_Problem] = []
        self._own_pairs: dict[int, list[tuple[yaml.Node, yaml.Node]]] = {}
        self._active: set[int] = set()

    def read(self) -> tuple[object, int]:
        try:
            node = self.loader.get_single_node()
            if node is None:
                return None, 1
            self.lines[()] = node.start_mark.line + 1
            return self._build(node, ()), self.lines[()]
        finally:
            self.loader.dispose()

    def _build(self, node: yaml.Node, loc: Loc) -> object:
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
        own = self._own_pairs.setdefault(
            id(node), [pair for pair in node.value if pair[0].tag != _MERGE_TAG]
        )
        self.loader.flatten_mapping(node)
        merged = node.value[: len(node.value) - len(own)]
        out: dict[str, object] = {}
        for key_node, value_node in [*own, *merged]:
            line = key_node.start_mark.line + 1
            if not isinstance(key_node, yaml.ScalarNode):
                self.problems.append(_Problem(line, loc, "mapping keys must be plain names"))
                continue
            child = (*loc, key_node.value)
            if key_node.value not in out:
                self.lines[child] = line
                out[key_node.value] = self._build(value_node, child)
            elif (key_node, value_node) not in merged:
                first = f"first at line {self.lines[child]}"
                self.problems.append(_Problem(line, child, f"duplicate key ({first})"))
        return out

    def _expand(self, text: str, loc: Loc) -> str:
        """``${NAME}`` from the environment, ``$$`` a literal ``$``; any other ``$`` stays."""

        def substitute(match: re.Match[str]) -> str:
            dollar, name, _ = match.groups()
            if dollar:
                return "$"
            if name is not None and name in self.env:
                return self.env[name]
            message = (
                f"environment variable {name} is not set"
                if name is not None
                else "invalid ${...} reference: write ${NAME}, or $$ for a literal $"
            )
            self.problems.append(_Problem(_line(self.lines, loc), loc, message))
            return match.group(0)

        return _VAR.sub(substitute, text)


def _parse(
    text: str, filename: str, env: Mapping[str, str] | None, base_dir: Path | None
) -> Config:
    reader = _Reader(text, os.environ if env is None else env)
    try:
        data, line = reader.read()
    except yaml.YAMLError as exc:
        # Not chained: str(exc) quotes the offending line, which may hold a password.
        raise _yaml_error(exc, filename) from None
    if not isinstance(data, dict):
        found = "the file is empty" if data is None else f"found {_kind(data)}"
        raise ConfigError(f"{filename}:{line}: {found}; expected a mapping with version and rules")
    problems = [*reader.problems, *_cross_checks(data, reader.lines)]
    env_locs = {problem.loc for problem in reader.problems}
    doc: _Document | None = None
    try:
        doc = _Document.model_validate(data, context={"base_dir": base_dir})
    except ValidationError as exc:
        for err in exc.errors(include_url=False):
            loc = tuple(err["loc"])
            if loc not in env_locs:  # the unexpanded value is not the user's mistake
                problems.append(_Problem(_line(reader.lines, loc), loc, _message(err)))
    if problems or doc is None:
        raise ConfigError(_report(problems, filename))
    return Config(
        version=doc.version,
        registries={normalize_host(host): settings for host, settings in doc.registries.items()},
        defaults=doc.defaults,
        rules=[_resolve_rule(spec, doc.defaults) for spec in doc.rules],
    )


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
    if kind in _EXPECTED:
        return f"expected {_EXPECTED[kind]}, got {_kind(err.get('input'))}"
    return err["msg"].replace("Input should be", "must be")


_SECTIONS: dict[str | int, type[BaseModel]] = {
    "credentials": Credentials,
    "rate_limit": RateLimit,
    "tags": TagFilter,
    "prune": Prune,
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
