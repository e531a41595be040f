"""Rules that would write the same destination repository, found when the config loads.

Two rules writing one repository overwrite each other's tags (a tag both carry flips digest
every run, so `check` never settles) and, with prune, each deletes the other's tags. From the
config alone a rule's destination repositories are a glob (its source glob mapped through the
destination template), so two rules conflict when they write to the same registry or layout
and their destination globs can match a common repository. That is checked conservatively:
a repository both globs could produce counts, whether or not the source has it today.

Rules whose tag filters are disjoint by construction may share repositories: every include
pattern of one starts with a literal text that neither starts nor is started by the literal
start of any include pattern of the other (`v1\\..*` and `v2\\..*`), and neither rule follows
referrers (signature tags are named after digests, not filtered by include, so both rules
would manage them).
"""

from __future__ import annotations

import bisect
import os
from collections.abc import Mapping, Sequence
from dataclasses import replace

from regsync.config.models import RegistryConfig, Rule
from regsync.oci.ref import Kind, normalize_host
from regsync.tagpolicy import TagPattern

_META = set(".^$*+?{}[]()|\\")
_OPTIONAL = set("*?{")


class GlobIndex:
    """Globs grouped by (where, literal prefix): the globs that could match a common
    repository with a given one are those whose literal start (the text before the first
    ``*``) is a prefix of its own, or starts with it. Finding them is a lookup per prefix
    length plus a range of a sorted list, not a pass over every rule: pairs of rules are
    compared only when they could overlap (10,000 rules validate in seconds)."""

    def __init__(self, entries: Sequence[tuple[str, str]]) -> None:
        self._exact: dict[tuple[str, str], list[int]] = {}
        self._sorted: dict[str, list[tuple[str, int]]] = {}
        for index, (where, glob) in enumerate(entries):
            start = literal_start(glob)
            self._exact.setdefault((where, start), []).append(index)
            self._sorted.setdefault(where, []).append((start, index))
        for items in self._sorted.values():
            items.sort()

    def candidates(self, where: str, glob: str) -> set[int]:
        """Indexes of the globs in ``where`` that might match a repository ``glob`` does."""
        start = literal_start(glob)
        found: set[int] = set()
        for cut in range(len(start) + 1):
            found.update(self._exact.get((where, start[:cut]), ()))
        items = self._sorted.get(where, [])
        at = bisect.bisect_left(items, (start, -1))
        while at < len(items) and items[at][0].startswith(start):
            found.add(items[at][1])
            at += 1
        return found


def literal_start(glob: str) -> str:
    """The text every repository a glob matches starts with."""
    return glob.split("*", 1)[0]


def as_served(rule: Rule, registries: Mapping[str, RegistryConfig]) -> Rule:
    """``rule`` with its registries as the servers see them: a `hostname` alias replaced by
    the real host, a `path_prefix` put in front of the paths. Two names for one server, or
    two prefixes, are then compared as what they are."""
    src, dst = rule.source, rule.destination
    if src.kind is Kind.REGISTRY and (served := _served(src.registry, registries)):
        host, prefix = served
        src = replace(
            src, registry=host, pattern=f"{prefix}/{src.pattern}" if prefix else src.pattern
        )
    if dst.kind is Kind.REGISTRY and (served := _served(dst.registry, registries)):
        host, prefix = served
        template = f"{prefix}/{dst.template}" if prefix and dst.template else prefix or dst.template
        dst = replace(dst, registry=host, template=template)
    return rule.model_copy(update={"source": src, "destination": dst})


def _served(name: str, registries: Mapping[str, RegistryConfig]) -> tuple[str, str] | None:
    settings = registries.get(name)
    if settings is None or not (settings.hostname or settings.path_prefix):
        return None
    return normalize_host(settings.hostname or name), settings.path_prefix or ""


def conflicts(rules: Sequence[Rule]) -> list[tuple[int, int, str]]:
    """(earlier rule, later rule, a repository both could write) for every conflicting pair."""
    found = []
    globs = [destination_glob(rule) for rule in rules]
    index = GlobIndex(globs)
    for j, later in enumerate(rules):
        for i in sorted(i for i in index.candidates(*globs[j]) if i < j):
            if tags_disjoint(rules[i], later):
                continue
            common = common_repository(globs[i][1], globs[j][1])
            if common is not None:
                found.append((i, j, common))
    return found


def feeds_itself(rule: Rule) -> str | None:
    """A repository the rule would write that its own source pattern lists again, or None.

    `source: reg/**` with `destination: reg/mirror` copies `mirror/x` to `mirror/mirror/x` on
    the next run, and so on: the mirror grows by one level every run.
    """
    return feeds(rule, rule)


def feedback(rules: Sequence[Rule]) -> list[tuple[int, int, str]]:
    """(earlier, later, a repository the later writes that the earlier lists) for each pair of
    rules that list each other's copies: between them they grow a level every run too."""
    found = []
    sources = GlobIndex([(rule.source.registry, rule.source.pattern) for rule in rules])
    for j, later in enumerate(rules):
        where, written = destination_glob(later)
        for i in sorted(i for i in sources.candidates(where, written) if i < j):
            there, back = feeds(later, rules[i]), feeds(rules[i], later)
            if there is not None and back is not None:
                found.append((i, j, there))
    return found


def feeds(writer: Rule, reader: Rule) -> str | None:
    """A repository ``writer`` could write that ``reader``'s source pattern lists, or None."""
    where, written = destination_glob(writer)
    if writer.destination.kind is not Kind.REGISTRY or where != reader.source.registry:
        return None
    return common_repository(reader.source.pattern, written)


def destination_glob(rule: Rule) -> tuple[str, str]:
    """(registry or layout directory, glob of the destination repositories the rule writes)."""
    dest, pattern = rule.destination, rule.source.pattern
    stored = dest.kind is not Kind.REGISTRY  # a layout directory or a tar file
    prefix = str(dest).removesuffix(dest.directory)  # oci: or tar:
    where = f"{prefix}{os.path.normpath(dest.directory)}" if stored else dest.registry
    last = pattern.rsplit("/", 1)[-1]
    name = "*" if last == "**" else last
    if "{path}" in dest.template or "{name}" in dest.template:
        return where, dest.template.replace("{path}", pattern).replace("{name}", name)
    return where, f"{dest.template}/{pattern}" if dest.template else pattern


def tags_disjoint(a: Rule, b: Rule) -> bool:
    """Whether no tag name can be in both rules' scope (see the module docstring)."""
    if a.referrers or b.referrers:
        return False
    prefixes_a = [_literal_prefix(p) for p in a.tags.include]
    prefixes_b = [_literal_prefix(p) for p in b.tags.include]
    return all(
        x and y and not x.startswith(y) and not y.startswith(x)
        for x in prefixes_a
        for y in prefixes_b
    )


def _literal_prefix(pattern: TagPattern) -> str:
    """The text every full match of ``pattern`` starts with ("" when unsure)."""
    text = pattern.pattern
    if "(?" in text or "|" in text:  # inline flags (case-insensitive) or alternatives
        return ""
    prefix, at = "", 0
    while at < len(text):
        char, step = text[at], 1
        if char == "\\":
            if at + 1 >= len(text) or text[at + 1].isalnum():
                break  # \d, \w ... are classes, not literals
            char, step = text[at + 1], 2
        elif char in _META:
            break
        follower = text[at + step] if at + step < len(text) else ""
        if follower in _OPTIONAL:
            break
        prefix += char
        if follower == "+":
            break
        at += step
    return prefix


def common_repository(a: str, b: str) -> str | None:
    """A repository path both globs match (``*`` within a segment, ``**`` one or more
    segments), or None when there is none. The memo lives for this call only: nothing keyed
    by config data outlives the check (a daemon reloading for months would keep it all)."""
    return _Matcher().segments(tuple(a.split("/")), tuple(b.split("/")))


class _Matcher:
    """Memoised glob intersection for one ``common_repository`` call."""

    def __init__(self) -> None:
        self._segments: dict[tuple[tuple[str, ...], tuple[str, ...]], str | None] = {}
        self._segment: dict[tuple[str, str], str | None] = {}

    def segments(self, a: tuple[str, ...], b: tuple[str, ...]) -> str | None:
        key = (a, b)
        if key not in self._segments:
            self._segments[key] = self._segments_of(a, b)
        return self._segments[key]

    def _segments_of(self, a: tuple[str, ...], b: tuple[str, ...]) -> str | None:
        if not a or not b:
            return "" if not a and not b else None
        head_a, head_b = a[0], b[0]
        seg = self.segment("*" if head_a == "**" else head_a, "*" if head_b == "**" else head_b)
        if seg is None:
            return None
        # One common segment consumed; a `**` may go on consuming (it matched one already).
        moves = [(a[1:], b[1:])]
        if head_a == "**":
            moves.append((a, b[1:]))
        if head_b == "**":
            moves.append((a[1:], b))
        for rest_a, rest_b in moves:
            if (rest_a, rest_b) == (a, b):
                continue
            rest = self.segments(rest_a, rest_b)
            if rest is not None:
                return f"{seg or 'x'}/{rest}" if rest else seg or "x"
        return None

    def segment(self, a: str, b: str) -> str | None:
        """A text both one-segment globs (``*`` = any run of characters) match, or None."""
        key = (a, b)
        if key not in self._segment:
            self._segment[key] = self._segment_of(a, b)
        return self._segment[key]

    def _segment_of(self, a: str, b: str) -> str | None:
        if not a or not b:
            if not a and not b:
                return ""
            return "" if set(a or b) == {"*"} else None
        if a[0] == "*":
            skip = self.segment(a[1:], b)
            if skip is not None:
                return skip
            if b[0] == "*":
                return self.segment(a, b[1:])
            eaten = self.segment(a, b[1:])
            return None if eaten is None else b[0] + eaten
        if b[0] == "*":
            return self.segment(b, a)
        if a[0] != b[0]:
            return None
        tail = self.segment(a[1:], b[1:])
        return None if tail is None else a[0] + tail
