"""Which repositories a rule covers, and where each one goes.

Discovery lists the source (the catalog, the Hub API for a Docker Hub namespace, or a layout's
index) and keeps what the rule's glob matches. The mapping then pairs every source repository
with its destination repository and refuses a rule whose mapping is not one-to-one: two source
repositories written into one destination would overwrite each other's tags on every run, and
with prune each one's plan would delete the other's tags.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from regsync.backends.pool import RepositoryLister
from regsync.errors import EmptySourceError, InvalidNameError, MappingError
from regsync.oci.ref import DestinationSpec, Listed, SourceSpec, skipped_line

log = logging.getLogger(__name__)
SHOWN_SOURCES = 4  # colliding source repositories named in the error line, per destination


@dataclass(frozen=True)
class RepoPair:
    source: str
    destination: str


@dataclass(frozen=True)
class Discovered:
    """A rule's repositories paired with their destinations, and the names it had to skip."""

    pairs: tuple[RepoPair, ...]
    skipped: tuple[tuple[str, str], ...] = ()  # (refused source name, why) for the errors


async def discover(lister: RepositoryLister, spec: SourceSpec) -> Listed:
    """The source repositories a rule covers: one, or the listed entries its glob matches.

    ``lister`` is the source's (``BackendPool.lister``: catalog, Hub API or layout index).
    Listed names off the grammar under the rule's prefix come back ``rejected`` (to report,
    not use).
    """
    if not spec.is_glob:
        return Listed((spec.pattern,))
    prefix = spec.prefix + "/" if spec.prefix else ""
    listed = await lister.repositories(spec.prefix)
    repos = sorted(r for r in listed.names if r.startswith(prefix) and spec.matches(r))
    return Listed(tuple(repos), tuple(sorted(r for r in listed.rejected if r.startswith(prefix))))


def empty_source(what: str, *, rule: str, allowed: bool) -> None:
    """A source that matched nothing: EmptySourceError, or (``allow_empty: true``) a warning.

    A run that copied nothing because its source is empty (a typo in a glob, a repository
    that is gone) must not report success: the operator would never hear of it.
    """
    if not allowed:
        raise EmptySourceError(
            f"{what}; nothing was synced (set allow_empty: true on the rule if it may be "
            "empty on purpose)"
        )
    log.warning("rule %s: %s (allow_empty: true)", rule, what)


def map_repositories(dest: DestinationSpec, found: Listed) -> Discovered:
    """Every source repository with its destination; MappingError unless one-to-one.

    The whole rule is refused, not only the colliding repositories: which of two sources
    "wins" a destination is not something to guess, and a partial mirror that looks complete
    is worse than a rule that fails loudly. A source whose mapped name is off the grammar (a
    template can make one too long) is skipped like a refused listed name.
    """
    by_dest: dict[str, list[str]] = {}
    skipped = [(name, skipped_line("repository", name)) for name in found.rejected]
    for repo in dict.fromkeys(found.names):
        try:
            by_dest.setdefault(dest.repo_for(repo), []).append(repo)
        except InvalidNameError as exc:
            skipped.append((repo, f"skipped repository {repo}: {exc}"))
    clashes = sorted((d, s) for d, s in by_dest.items() if len(s) > 1)
    if clashes:
        raise MappingError(_clash_message(dest, clashes))
    pairs = tuple(RepoPair(s[0], d) for d, s in by_dest.items())
    return Discovered(pairs, tuple(skipped))


def _clash_message(dest: DestinationSpec, clashes: list[tuple[str, list[str]]]) -> str:
    target, sources = clashes[0]
    named = ", ".join(sources[:SHOWN_SOURCES])
    if len(sources) > SHOWN_SOURCES:
        named += f" and {len(sources) - SHOWN_SOURCES} more"
    more = f" ({len(clashes) - 1} more destinations collide)" if len(clashes) > 1 else ""
    return (
        f"source repositories {named} all map to destination {target}{more}; nothing of this "
        f"rule was synced: make the destination {dest} one-to-one (e.g. {{path}} instead of "
        "{name}) or narrow the source"
    )
