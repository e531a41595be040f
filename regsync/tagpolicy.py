"""Tag selection: which source tags a rule mirrors, and why each other tag was dropped.

Filters apply in this order; a tag dropped by one is not shown to the next:

0. ``artifact``: ``sha256-<hex>`` referrer tags and cosign's ``sha256-<hex>.sig|.att|.sbom``
   are never selected as images; with ``referrers: true`` they follow the image they belong to.
1. ``include``: some pattern must match the whole tag (default ``.*``).
2. ``exclude``: no pattern may match the whole tag.
3. ``semver``: when set, the tag must read as a version (below) inside the range.
4. ``latest``: when set, only tags spelling one of the N highest versions left are kept.

Reading a tag as a version (``parse_version``): an optional ``v``, then dotted numbers, then
optionally a pre-release marker (``1.2.3-rc1``, ``1.2.3-beta.2``, ``1.2.3rc1``), then optionally a
variant after ``-``, ``+`` or ``_`` (``1.2.3-alpine``, ``3.12-slim-bookworm``). ``v1.2`` is 1.2,
``1.2`` equals ``1.2.0``, ``1.2.3-alpine`` is 1.2.3 (variant ``alpine``), ``1.2.3-rc1`` is the
pre-release 1.2.3rc1, which a range only admits when it names a pre-release itself (PEP 440).
Anything else (``latest``, ``stable``, ``1a2b3c4``) is not a version.

Scope (what prune may touch) is filters 1-3: they judge the name alone, so a destination tag
the source no longer has is in scope exactly when the source would have selected it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import re2
from packaging.specifiers import SpecifierSet
from packaging.version import InvalidVersion, Version

from regsync.oci.artifacts import ARTIFACT_TAG

_VERSION = re.compile(
    r"[vV]?(?P<number>\d+(?:\.\d+)*)"
    r"(?:[-.]?(?P<pre>alpha|beta|preview|pre|rc|a|b|c)[-.]?(?P<pre_n>\d*)(?![A-Za-z]))?"
    r"(?:[-+_](?P<variant>[A-Za-z0-9][A-Za-z0-9._+-]*))?"
)
_PRE = {"alpha": "a", "a": "a", "beta": "b", "b": "b", "c": "rc", "rc": "rc"}
_PRE |= {"pre": "rc", "preview": "rc"}

INCLUDE, EXCLUDE, SEMVER, LATEST, ARTIFACT = "include", "exclude", "semver", "latest", "artifact"

_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # the error is raised to the caller; RE2 would also print it


class TagPattern:
    """A tag regex from the config, on RE2: matching is linear in the tag's length, so a tag
    the source controls cannot make a pattern like ``(a+)+`` run for minutes. The syntax is
    Go's ``regexp`` (as in regclient and skopeo): no lookaround, no backreferences.

    A value compared by its text; not a dataclass, because pydantic would then try to describe
    the compiled RE2 object inside it.
    """

    __slots__ = ("_compiled", "pattern")

    def __init__(self, pattern: str) -> None:
        """Raises ValueError naming what RE2 refused."""
        try:
            self._compiled = re2.compile(pattern, _RE2_OPTIONS)
        except re2.error as exc:
            reason = exc.args[0] if exc.args else exc
            text = reason.decode(errors="replace") if isinstance(reason, bytes) else str(reason)
            raise ValueError(
                f"invalid regex {pattern!r}: {text}"
                " (regexes use RE2 syntax, as in Go: no lookaround or backreferences)"
            ) from None
        self.pattern = pattern

    def fullmatch(self, tag: str) -> bool:
        return self._compiled.fullmatch(tag) is not None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TagPattern) and other.pattern == self.pattern

    def __hash__(self) -> int:
        return hash(self.pattern)

    def __repr__(self) -> str:
        return f"TagPattern({self.pattern!r})"


MATCH_ALL = TagPattern(".*")


@dataclass(frozen=True)
class TagPolicy:
    """The tag filters of one rule (built by the runner from ``rule.tags``)."""

    include: tuple[TagPattern, ...] = (MATCH_ALL,)
    exclude: tuple[TagPattern, ...] = ()
    semver: str | None = None
    latest: int | None = None

    def first_filter_dropping(self, tag: str) -> tuple[str, str] | None:
        """The name-only filter (0-3) that drops ``tag`` and why, or None if it passes them."""
        if ARTIFACT_TAG.fullmatch(tag):
            return ARTIFACT, "a referrer/signature tag: it follows its image"
        if not any(p.fullmatch(tag) for p in self.include):
            return INCLUDE, "matches no include pattern"
        for pattern in self.exclude:
            if pattern.fullmatch(tag):
                return EXCLUDE, f"matches exclude {pattern.pattern!r}"
        if self.semver is not None:
            version = parse_version(tag)
            if version is None:
                return SEMVER, "not a version"
            spec = SpecifierSet(self.semver)
            # PEP 440: a range admits pre-releases only when it names one itself (explicit,
            # as packaging's default for contains() changed across releases).
            if not spec.contains(version, prereleases=bool(spec.prereleases)):
                return SEMVER, f"{version} is outside {self.semver!r}"
        return None

    def in_scope(self, tag: str) -> bool:
        """Whether the rule manages ``tag`` (filters 1-3); prune touches nothing else."""
        return self.first_filter_dropping(tag) is None


@dataclass(frozen=True)
class Filtered:
    tag: str
    by: str  # include | exclude | semver | latest | artifact
    detail: str


@dataclass(frozen=True)
class Selection:
    selected: tuple[str, ...]  # sorted
    filtered: tuple[Filtered, ...]


def select(policy: TagPolicy, tags: Iterable[str]) -> Selection:
    """Apply the filters in order; every tag ends up selected or with the filter that dropped it."""
    passed: list[str] = []
    filtered: list[Filtered] = []
    for tag in sorted(set(tags)):
        dropped = policy.first_filter_dropping(tag)
        if dropped is None:
            passed.append(tag)
        else:
            filtered.append(Filtered(tag, *dropped))
    if policy.latest is not None:
        passed, cut = newest(passed, policy.latest)
        filtered.extend(cut)
    return Selection(tuple(passed), tuple(sorted(filtered, key=lambda f: f.tag)))


def newest(tags: Sequence[str], count: int) -> tuple[list[str], list[Filtered]]:
    """Keep the tags spelling one of the ``count`` highest versions (all their variants)."""
    versions = {tag: parse_version(tag) for tag in tags}
    ranked = sorted({v for v in versions.values() if v is not None}, reverse=True)
    top = set(ranked[:count])
    kept, cut = [], []
    for tag in tags:
        version = versions[tag]
        if version is None:
            cut.append(Filtered(tag, LATEST, "not a version"))
        elif version in top:
            kept.append(tag)
        else:
            cut.append(Filtered(tag, LATEST, f"not among the {count} highest versions"))
    return kept, cut


def parse_version(tag: str) -> Version | None:
    """The version a tag spells (see the module docstring), or None."""
    match = _VERSION.fullmatch(tag)
    if match is None:
        return None
    text = match["number"]
    if match["pre"]:
        text += _PRE[match["pre"]] + (match["pre_n"] or "0")
    try:
        return Version(text)
    except InvalidVersion:  # pragma: no cover - the pattern only admits valid spellings
        return None
