"""Image references: registry host normalisation and repository path rules.

Docker's convention decides whether the first path segment is a host: it is one when it
contains a "." or a ":" or is "localhost". Docker Hub goes by several names; regsync calls it
``docker.io`` everywhere and talks to ``registry-1.docker.io``.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from regsync.errors import InvalidNameError
from regsync.oci.digest import is_digest

DOCKER_HUB = "docker.io"
DOCKER_HUB_REGISTRY = "registry-1.docker.io"  # the host Docker Hub's registry API answers on
_HUB_ALIASES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
OCI_PREFIX = "oci:"
TAR_PREFIX = "tar:"
_FILE_PREFIXES = {OCI_PREFIX: "directory", TAR_PREFIX: "file"}

# distribution's reference grammar: one repository path component, a tag, and the longest
# name (host and path together). Names from listings, layouts and configs must pass it before
# they go anywhere near a URL or a file: it has no "/" in a tag and no "." or ".." component.
_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
MAX_NAME = 255
_SHOWN = 64  # characters of a refused name worth putting in a log line
_HOST = re.compile(r"[A-Za-z0-9.-]+(?::[0-9]+)?|\[[0-9a-fA-F:]+\](?::[0-9]+)?")


def is_repository(path: str, host: str = "") -> bool:
    """Whether ``path`` is a repository name (with ``host`` in front, under 256 characters)."""
    if not path or len(path) + (len(host) + 1 if host else 0) > MAX_NAME:
        return False
    return all(_COMPONENT.fullmatch(c) for c in path.split("/"))


def is_tag(text: str) -> bool:
    return _TAG.fullmatch(text) is not None


def is_reference(text: str) -> bool:
    """A tag or a digest: what may follow ``/manifests/``."""
    return is_tag(text) or is_digest(text)


def printable(text: str) -> str:
    """Text from outside for a log line: control characters escaped (``\\n``, ``\\x1b``)."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


def shown(name: str) -> str:
    """A name from outside, quoted for a log line: escaped (no control characters), truncated."""
    if len(name) <= _SHOWN:
        return repr(name)
    return f"{name[:_SHOWN]!r}... ({len(name)} characters)"


@dataclass(frozen=True)
class Listed:
    """Names a registry or layout listed, split by the grammar: usable ones and refused ones.

    Every lister returns one: the refused names are never used (never in a URL, a path or a
    plan) and the run reports them as errors of the rule that would have seen them, quoting
    at most ``QUOTED`` of them per listing (``more_rejected`` counts the others: a hostile
    listing of a million bad names costs a count, not a million lines).
    """

    names: tuple[str, ...]
    rejected: tuple[str, ...] = ()
    missing: bool = False  # a tag listing of a repository that does not exist (404)
    more_rejected: int = 0  # refused names beyond those kept in ``rejected``

    @classmethod
    def repositories(cls, listed: Iterable[str], host: str = "") -> Listed:
        return cls.split(listed, lambda name: is_repository(name, host))

    @classmethod
    def tags(cls, listed: Iterable[str]) -> Listed:
        return cls.split(listed, is_tag, keep=QUOTED)

    def skipped(self, kind: str) -> tuple[str, ...]:
        """One line per refused name, for at most ``QUOTED`` of them (``unquoted`` counts
        the rest)."""
        return tuple(skipped_line(kind, n) for n in self.rejected[:QUOTED])

    @property
    def unquoted(self) -> int:
        """Refused names ``skipped`` does not quote."""
        return max(len(self.rejected) - QUOTED, 0) + self.more_rejected

    def report(self, kind: str) -> tuple[str, ...]:
        """``skipped``, and one line counting the unquoted rest (when there is one)."""
        more = f"… and {self.unquoted} more refused {kind} names" if self.unquoted else ""
        return self.skipped(kind) + ((more,) if more else ())

    @classmethod
    def split(
        cls, listed: Iterable[str], valid: Callable[[str], bool], keep: int | None = None
    ) -> Listed:
        """``listed`` split by ``valid``, keeping at most ``keep`` refused names (all: None)."""
        names: list[str] = []
        rejected: list[str] = []
        more = 0
        for name in listed:
            if valid(name):
                names.append(name)
            elif keep is None or len(rejected) < keep:
                rejected.append(name)
            else:
                more += 1
        return cls(tuple(names), tuple(rejected), more_rejected=more)


QUOTED = 10  # refused names quoted per listing (and per rule: see runner)


def skipped_line(kind: str, name: str) -> str:
    noun = kind.rsplit(" ", 1)[-1]
    return f"skipped {kind} {shown(name)}: not a valid {noun} name"


def is_host(segment: str) -> bool:
    return "." in segment or ":" in segment or segment == "localhost"


def normalize_host(host: str) -> str:
    """The canonical name of a registry host (Docker Hub aliases become docker.io)."""
    host = host.lower()
    return DOCKER_HUB if host in _HUB_ALIASES else host


def api_host(host: str) -> str:
    """The host name to send HTTP requests to."""
    return DOCKER_HUB_REGISTRY if normalize_host(host) == DOCKER_HUB else host


def split_name(name: str) -> tuple[str, str]:
    """Split ``[host/]path`` into (canonical host, normalised path)."""
    first, sep, rest = name.partition("/")
    if sep and is_host(first):
        host, path = normalize_host(first), rest
    elif not sep and is_host(first) and name.count("/") == 0 and ":" in first:
        host, path = normalize_host(first), ""
    else:
        host, path = DOCKER_HUB, name
    if host == DOCKER_HUB and path and "/" not in path and not _has_glob(path):
        path = f"library/{path}"  # `nginx` means the official image library/nginx
    return host, path


def _has_glob(path: str) -> bool:
    return "*" in path


def _check_path(path: str, *, allow_glob: bool, allow_placeholders: bool = False) -> None:
    for segment in path.split("/"):
        if allow_glob and segment in ("*", "**"):
            continue
        if allow_placeholders and segment in ("{path}", "{name}"):
            continue
        if not _COMPONENT.fullmatch(segment):
            raise ValueError(f"invalid repository path segment {shown(segment)} in {shown(path)}")


class Kind(enum.Enum):
    """What kind of store a source or destination spec names; ``backends.pool`` opens each."""

    REGISTRY = "registry"  # a registry host (``registry`` holds it)
    LAYOUT = "layout"  # an OCI image layout directory (``directory`` holds it)
    TARBALL = "tarball"  # an OCI layout packed in one tar file (``directory`` holds its path)


def _store(text: str) -> tuple[Kind, str, str] | None:
    """(kind, prefix, the rest) of an ``oci:`` or ``tar:`` spec; None for a registry."""
    for prefix, kind in ((OCI_PREFIX, Kind.LAYOUT), (TAR_PREFIX, Kind.TARBALL)):
        if text.startswith(prefix):
            return kind, prefix, text[len(prefix) :]
    return None


def _prefix(kind: Kind) -> str:
    return TAR_PREFIX if kind is Kind.TARBALL else OCI_PREFIX


@dataclass(frozen=True)
class SourceSpec:
    """A rule's source: a registry repository or glob, or an OCI layout directory."""

    registry: str  # canonical host, or "" for a layout
    pattern: str  # repository path or glob; for a layout, optional glob over its repositories
    directory: str = ""  # of the OCI image layout, with kind LAYOUT; else ""
    kind: Kind = Kind.REGISTRY

    @classmethod
    def parse(cls, text: str) -> SourceSpec:
        if (store := _store(text)) is not None:
            kind, prefix, rest = store
            directory, _, pattern = rest.partition("//")
            if not directory:
                what = _FILE_PREFIXES[prefix]
                raise ValueError(f"a {prefix} source needs a {what}, e.g. {prefix}/srv/mirror")
            if pattern:
                _check_path(pattern, allow_glob=True)
            return cls(registry="", pattern=pattern or "**", directory=directory, kind=kind)
        host, path = split_name(text)
        if not path:
            raise ValueError(f"source {text!r} names no repository (e.g. {text}/team/*)")
        _check_path(path, allow_glob=True)
        if not _has_glob(path) and not is_repository(path, host):
            raise ValueError(f"source {shown(text)} is over {MAX_NAME} characters")
        return cls(registry=host, pattern=path)

    @property
    def is_glob(self) -> bool:
        return _has_glob(self.pattern)

    @property
    def prefix(self) -> str:
        """The literal leading segments before the first glob ("" when it starts with one)."""
        literal: list[str] = []
        for segment in self.pattern.split("/"):
            if _has_glob(segment):
                break
            literal.append(segment)
        return "/".join(literal)

    def matches(self, repo: str) -> bool:
        return _glob_regex(self.pattern).fullmatch(repo) is not None

    @property
    def named(self) -> str:
        """The spec with its repository or glob (``oci:DIR//team/app``; str() is the store)."""
        if self.kind is not Kind.REGISTRY and self.pattern != "**":
            return f"{self}//{self.pattern}"
        return str(self)

    def __str__(self) -> str:
        if self.kind is not Kind.REGISTRY:
            return f"{_prefix(self.kind)}{self.directory}"
        return f"{self.registry}/{self.pattern}"


def _glob_regex(pattern: str) -> re.Pattern[str]:
    parts = []
    for segment in pattern.split("/"):
        if segment == "**":
            parts.append(r"[^/]+(?:/[^/]+)*")
        else:
            parts.append("[^/]*".join(re.escape(p) for p in segment.split("*")))
    return re.compile("/".join(parts))


@dataclass(frozen=True)
class DestinationSpec:
    """A rule's destination: a registry host with an optional path template, or a layout."""

    registry: str  # canonical host, or "" for a layout
    template: str  # "", a prefix ("mirror"), or a template with {path}/{name}
    directory: str = ""  # of the OCI image layout, with kind LAYOUT; else ""
    kind: Kind = Kind.REGISTRY

    @classmethod
    def parse(cls, text: str) -> DestinationSpec:
        if (store := _store(text)) is not None:
            kind, prefix, directory = store
            if not directory:
                what = _FILE_PREFIXES[prefix]
                raise ValueError(f"a {prefix} destination needs a {what}, e.g. {prefix}/srv/mirror")
            return cls(registry="", template="", directory=directory, kind=kind)
        first, _, rest = text.partition("/")
        if not is_host(first) or not _HOST.fullmatch(first):
            raise ValueError(
                f"destination {text!r} must start with a registry host (e.g. registry.local:5000)"
            )
        if rest:
            _check_path(rest, allow_glob=False, allow_placeholders=True)
        return cls(registry=normalize_host(first), template=rest)

    def repo_for(self, source_path: str) -> str:
        """The destination repository path for a (valid) source repository path.

        Both the source name and the result are checked: a destination repository is only
        ever the rule's mapping of a valid name (a template can still make one too long).
        """
        if not is_repository(source_path):
            raise InvalidNameError(f"invalid source repository name {shown(source_path)}")
        name = source_path.rsplit("/", 1)[-1]
        if "{path}" in self.template or "{name}" in self.template:
            repo = self.template.replace("{path}", source_path).replace("{name}", name)
        else:
            repo = f"{self.template}/{source_path}" if self.template else source_path
        if not is_repository(repo, self.registry):
            raise InvalidNameError(f"destination repository {shown(repo)} is not a valid name")
        return repo

    def __str__(self) -> str:
        if self.kind is not Kind.REGISTRY:
            return f"{_prefix(self.kind)}{self.directory}"
        return f"{self.registry}/{self.template}" if self.template else self.registry
