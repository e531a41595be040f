"""The frozen pydantic models of sync.yaml version 1, and how rules inherit defaults."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Literal, TypeVar

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    StrictBool,
    ValidationInfo,
    field_validator,
    model_validator,
)

from regsync.backends.registry.tls import ssl_context
from regsync.config.fields import (
    DEFAULT_FULL_CHECK,
    DEFAULT_INTERVAL,
    ArtifactType,
    Backup,
    ConfigPath,
    Cron,
    Destination,
    Duration,
    ExistingFile,
    Host,
    HubApi,
    Int,
    MediaTypes,
    Number,
    PathPrefix,
    Platforms,
    Redirects,
    Regex,
    RuleName,
    SemverRange,
    Source,
    UserAgent,
    _kind,
)
from regsync.errors import ConfigError
from regsync.oci.ref import Kind, normalize_host
from regsync.referrerfilter import ReferrerMatch
from regsync.secrets import is_header_token
from regsync.tagpolicy import MATCH_ALL, TagPattern

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


class Notifications(_Model):
    """Events this registry sends to `serve` (``POST /v1/notifications/HOST``, Harbor's webhook).

    ``token`` is the bearer token the registry sends with them (``Authorization: Bearer``)."""

    token: SecretStr

    @field_validator("token")
    @classmethod
    def _token_not_empty(cls, value: SecretStr) -> SecretStr:
        text = value.get_secret_value()
        if not text.strip():
            raise ValueError("is empty (an environment variable set to ''?)")
        if not is_header_token(text):
            raise ValueError("must be printable ASCII without spaces (it travels in a header)")
        return value


class RegistryConfig(_Model):
    credentials: Credentials | None = None
    notifications: Notifications | None = None
    tls: Literal["verify", "insecure", "http"] = "verify"
    ca_file: ExistingFile | None = None
    client_cert: ExistingFile | None = None
    client_key: ExistingFile | None = None
    rate_limit: RateLimit | None = None
    mirrors: list[Host] = Field(default_factory=list)
    max_concurrency: Annotated[Int, Field(ge=1, le=256)] = 8
    # Docker Hub-style API that lists namespaces (docker.io uses https://hub.docker.com).
    hub_api: HubApi | None = None
    user_agent: UserAgent | None = None  # default: regsync/<version>
    # Cap on request starts per second (a decimal: 0.5 is one every 2 s); None: no cap.
    requests_per_second: Annotated[Number, Field(gt=0, le=10_000)] | None = None
    # The server this name stands for (one real host under two names, e.g. two logins).
    hostname: Host | None = None
    # Repositories live below this path at the server (a mirror serving an upstream there).
    path_prefix: PathPrefix | None = None
    # Where its redirects may lead besides public addresses and its own address class:
    # "allow" (anywhere) or these hosts (see regsync.backends.registry.redirects).
    redirects: Redirects | None = None

    @model_validator(mode="after")
    def _check_tls(self) -> RegistryConfig:
        if (self.client_cert is None) != (self.client_key is None):
            raise ValueError("client_cert and client_key must be set together")
        # Files that exist but are no certificate or key: a config error (exit 2) here, not a
        # failure of every rule using the registry once a run opens its client.
        if self.tls != "verify":
            return self  # plain HTTP or no certificate checks: the files are not used
        try:
            ssl_context(
                self.tls, _path(self.ca_file), _path(self.client_cert), _path(self.client_key)
            )
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        return self


class TagFilter(_Model):
    include: tuple[Regex, ...] = (MATCH_ALL,)
    exclude: tuple[Regex, ...] = ()
    semver: SemverRange | None = None
    latest: Annotated[Int, Field(ge=1)] | None = None
    # Tags that never change once mirrored: between full checks no HEAD on either side.
    immutable: tuple[Regex, ...] = ()

    @field_validator("include")
    @classmethod
    def _include_not_empty(cls, value: tuple[TagPattern, ...]) -> tuple[TagPattern, ...]:
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


class Referrers(_Model):
    """Copy signatures/SBOMs with the images; optionally only those matching the filter."""

    enabled: StrictBool = False
    artifact_types: Annotated[tuple[ArtifactType, ...], Field(max_length=64)] = ()
    annotations: Annotated[dict[str, str], Field(max_length=64)] = {}

    @field_validator("artifact_types", "annotations")
    @classmethod
    def _not_empty(
        cls, value: tuple[str, ...] | dict[str, str]
    ) -> tuple[str, ...] | dict[str, str]:
        """Given empty, a filter would let every referrer through: refused."""
        if not value:
            raise ValueError("is empty: list at least one, or leave the key out")
        return value

    def match(self) -> ReferrerMatch | None:
        """The filter, or None when every referrer is copied."""
        if not self.artifact_types and not self.annotations:
            return None
        return ReferrerMatch(frozenset(self.artifact_types), dict(self.annotations))


def _referrers(value: object) -> object:
    """``referrers: true|false``, or a filter mapping, which means enabled."""
    if isinstance(value, bool):
        return {"enabled": value}
    if isinstance(value, dict):
        if not value:
            raise ValueError(
                "an empty mapping filters nothing: write referrers: true to copy every "
                "referrer, or give artifact_types or annotations"
            )
        return {"enabled": True, **value}
    if isinstance(value, Referrers):
        return value
    raise ValueError(
        "expected true, false or a mapping such as {artifact_types: [...], annotations: {...}}, "
        f"got {_kind(value)}"
    )


ReferrersSetting = Annotated[Referrers, BeforeValidator(_referrers)]


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
    full_check: Duration = DEFAULT_FULL_CHECK
    platforms: Platforms = "all"
    referrers: ReferrersSetting = Referrers()
    tags: TagFilter = TagFilter()
    backup: Backup | None = None
    media_types: MediaTypes | None = None


class _RuleSpec(_Timing):
    """A rule as written: fields left out are None and come from the defaults."""

    name: RuleName
    source: Source
    destination: Destination
    tags: TagFilter | None = None
    platforms: Platforms | None = None
    referrers: ReferrersSetting | None = None
    prune: PruneSetting | None = None
    full_check: Duration | None = None
    allow_empty: StrictBool = False  # a source matching nothing is a success with a warning
    prune_repositories: StrictBool = False  # delete the tags of repositories the source lost
    backup: Backup | None = None
    media_types: MediaTypes | None = None
    delta: StrictBool = False  # tar: destinations: leave out what earlier bundles carried

    @field_validator("delta")
    @classmethod
    def _delta_needs_a_tar(cls, value: bool, info: ValidationInfo) -> bool:
        dest = info.data.get("destination")
        if value and dest is not None and dest.kind is not Kind.TARBALL:
            raise ValueError("delta bundles need a tar: destination (e.g. tar:/media/usb/b.tar)")
        return value

    @model_validator(mode="after")
    def _not_onto_itself(self) -> _RuleSpec:
        src, dst = self.source, self.destination
        registries = src.kind is dst.kind is Kind.REGISTRY
        if registries and src.registry == dst.registry and not dst.template:
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
    referrer_filter: ReferrerMatch | None = None  # None: every referrer
    prune: Prune = Prune()
    # How often a cycle HEADs every tag instead of trusting what the content index recorded.
    full_check: timedelta = DEFAULT_FULL_CHECK
    allow_empty: bool = False
    prune_repositories: bool = False
    backup: Backup | None = None  # tag template keeping the image a changed tag overwrites
    media_types: MediaTypes | None = None  # None: every manifest type, any artifact
    delta: bool = False

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
    def _some_rules(cls, value: list[_RuleSpec], info: ValidationInfo) -> list[_RuleSpec]:
        if not value and not (info.context or {}).get("settings_only"):
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

    def served_host(self, host: str) -> str:
        """The server a registry name stands for (its `hostname`, else itself), canonical:
        what decides Docker Hub's ways (pulls, its listing API) for an alias of it too."""
        return normalize_host(self.registry(host).hostname or host)

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
    referrers = defaults.referrers if spec.referrers is None else spec.referrers
    own_timing = spec.interval is not None or spec.schedule is not None
    timing: _Timing = spec if own_timing else defaults
    return Rule(
        name=spec.name,
        source=spec.source,
        destination=spec.destination,
        tags=_merge(defaults.tags, spec.tags),
        platforms=defaults.platforms if spec.platforms is None else spec.platforms,
        referrers=referrers.enabled,
        referrer_filter=referrers.match() if referrers.enabled else None,
        prune=_merge(defaults.prune, spec.prune),
        full_check=defaults.full_check if spec.full_check is None else spec.full_check,
        allow_empty=spec.allow_empty,
        prune_repositories=spec.prune_repositories,
        backup=defaults.backup if spec.backup is None else spec.backup,
        media_types=defaults.media_types if spec.media_types is None else spec.media_types,
        delta=spec.delta,
        interval=timing.interval,
        schedule=timing.schedule,
    )


def _path(value: Path | None) -> str | None:
    return str(value) if value is not None else None
