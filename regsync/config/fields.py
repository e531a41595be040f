"""Value parsers for sync.yaml fields; each raises ValueError with a message for the user."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Literal

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from pydantic import (
    AfterValidator,
    BeforeValidator,
    PlainValidator,
    ValidationInfo,
)

from regsync.backup import BackupTemplate
from regsync.oci.mediatypes import MANIFESTS, is_media_type
from regsync.oci.ref import DestinationSpec, SourceSpec, is_host, is_repository, normalize_host
from regsync.tagpolicy import TagPattern

DEFAULT_INTERVAL = timedelta(hours=1)
DEFAULT_FULL_CHECK = timedelta(hours=24)

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
    from croniter import croniter  # only a config with a `schedule:` pays for it

    if len(value.split()) != 5 or not croniter.is_valid(value):
        raise ValueError(
            f"invalid cron schedule {value!r}: expected 5 fields "
            "(minute hour day-of-month month day-of-week), e.g. '*/15 * * * *'"
        )
    return value


def _regex(value: object) -> object:
    if isinstance(value, TagPattern):
        return value
    if not isinstance(value, str):
        raise ValueError(f"expected a regex string, got {_kind(value)}")
    return TagPattern(value)


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
    return SourceSpec.parse(_spec_text(value, "a source such as docker.io/team/*"))


def _destination(value: object) -> DestinationSpec:
    if isinstance(value, DestinationSpec):
        return value
    return DestinationSpec.parse(_spec_text(value, "a destination such as registry.local:5000"))


def _spec_text(value: object, expected: str) -> str:
    """The text of a source or destination, or a ValueError saying what was found instead."""
    if not isinstance(value, str) or not value.strip():
        found = "an empty string" if isinstance(value, str) else _kind(value)
        raise ValueError(f"expected {expected}, got {found}")
    return value


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


def _hub_api(value: str) -> str:
    if not re.fullmatch(r"https?://[^/\s]+/?", value):
        raise ValueError(f"expected a base URL such as https://hub.docker.com, got {value!r}")
    return value.rstrip("/")


def _user_agent(value: str) -> str:
    # Printable ASCII only: a header value with CR/LF or controls could split the request.
    if not value or len(value) > 256 or not all(" " <= c <= "~" for c in value):
        raise ValueError("expected 1 to 256 printable ASCII characters, e.g. 'regsync-lab/1.0'")
    return value


def _backup(value: object) -> BackupTemplate:
    if isinstance(value, BackupTemplate):
        return value
    if not isinstance(value, str) or not value:
        raise ValueError(f"expected a tag template such as '{{tag}}-prev', got {_kind(value)}")
    return BackupTemplate.parse(value)


_MEDIA_TYPE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]{0,126}/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}")


def _media_types(value: object) -> object:
    if isinstance(value, frozenset):
        return value
    if not isinstance(value, list) or not value or len(value) > 64:
        raise ValueError(
            "expected a list of 1 to 64 media types, e.g. "
            "[application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json]"
        )
    for item in value:
        if not isinstance(item, str) or not _MEDIA_TYPE.fullmatch(item):
            shown = repr(item) if isinstance(item, str) else _kind(item)
            raise ValueError(f"invalid media type {shown}: expected type/subtype in lower case")
    if not MANIFESTS.intersection(value):
        raise ValueError(
            "lists no manifest media type, so nothing would be copied; include some of: "
            + ", ".join(sorted(MANIFESTS))
        )
    return frozenset(value)


def _artifact_type(value: str) -> str:
    """A referrer's type as manifests write it, parameters included (GitHub's attestations:
    ``application/vnd.dev.sigstore.bundle+json;version=0.2``); compared exactly."""
    kind, _, _ = value.partition(";")
    if not _MEDIA_TYPE.fullmatch(kind.rstrip(" \t")) or not is_media_type(value):
        raise ValueError(
            f"invalid artifact type {value!r}: expected type/subtype in lower case, "
            "then any ;name=value parameters"
        )
    return value


def _path_prefix(value: str) -> str:
    prefix = value.strip("/")
    if not prefix or not is_repository(prefix):
        raise ValueError(
            f"invalid path_prefix {value!r}: expected repository path segments such as "
            "'dockerhub' or 'cache/hub' (lower case, no '.' or '..' segments)"
        )
    return prefix


def _redirects(value: object) -> str | tuple[str, ...]:
    """``allow``, or the hosts a registry's redirects may lead to besides the defaults."""
    if value == "allow":
        return "allow"
    if isinstance(value, list) and all(isinstance(h, str) for h in value):
        return tuple(_host(h) for h in value)
    raise ValueError(f"expected 'allow' or a list of hosts, got {value!r}")


def _existing_file(value: Path) -> Path:
    if not value.is_file():
        raise ValueError(f"file not found: {value}")
    return value


Int = Annotated[int, BeforeValidator(_no_bool)]
Number = Annotated[float, BeforeValidator(_no_bool)]
Duration = Annotated[timedelta, BeforeValidator(_duration)]
Cron = Annotated[str, AfterValidator(_cron)]
Regex = Annotated[TagPattern, PlainValidator(_regex)]
SemverRange = Annotated[str, AfterValidator(_semver)]
Platforms = Annotated[Literal["all"] | tuple[str, ...], BeforeValidator(_platforms)]
Host = Annotated[str, AfterValidator(_host)]
HubApi = Annotated[str, AfterValidator(_hub_api)]
UserAgent = Annotated[str, AfterValidator(_user_agent)]
Backup = Annotated[BackupTemplate, PlainValidator(_backup)]
MediaTypes = Annotated[frozenset[str], BeforeValidator(_media_types)]
ArtifactType = Annotated[str, AfterValidator(_artifact_type)]
PathPrefix = Annotated[str, AfterValidator(_path_prefix)]
Redirects = Annotated[str | tuple[str, ...], PlainValidator(_redirects)]
Source = Annotated[SourceSpec, PlainValidator(_source)]
Destination = Annotated[DestinationSpec, PlainValidator(_destination)]
RuleName = Annotated[str, AfterValidator(_rule_name)]
ConfigPath = Annotated[Path, AfterValidator(_resolve_path)]
ExistingFile = Annotated[Path, AfterValidator(_resolve_path), AfterValidator(_existing_file)]
