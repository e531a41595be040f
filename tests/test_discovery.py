"""Discovery, pure: which listed repositories a rule's glob covers, and what a refused
mapping says. The one-to-one rail and its end-to-end cases are in ``test_mapping.py``."""

from __future__ import annotations

import asyncio
import logging

import pytest

from regsync.discovery import discover, empty_source, map_repositories
from regsync.errors import EmptySourceError, MappingError
from regsync.oci.ref import DestinationSpec, Listed, SourceSpec


class Lister:
    """A source listing what it was given, recording the prefixes it was asked for."""

    def __init__(self, names: tuple[str, ...], rejected: tuple[str, ...] = ()) -> None:
        self.listed = Listed(names, rejected)
        self.asked: list[str] = []

    async def repositories(self, prefix: str) -> Listed:
        self.asked.append(prefix)
        return self.listed


def test_one_repository_is_the_rule_itself_and_lists_nothing() -> None:
    lister = Lister(("team/other",))
    found = asyncio.run(discover(lister, SourceSpec.parse("r.io/team/app")))
    assert found == Listed(("team/app",)) and lister.asked == []


def test_a_glob_keeps_what_it_matches_under_its_prefix_sorted() -> None:
    lister = Lister(
        ("team/web", "team/app", "team/app/deep", "teamx/app", "other/app"),
        ("team/Bad", "other/Bad"),
    )
    found = asyncio.run(discover(lister, SourceSpec.parse("r.io/team/*")))
    assert found == Listed(("team/app", "team/web"), ("team/Bad",))
    assert lister.asked == ["team"]


def test_a_glob_without_a_literal_prefix_asks_for_everything() -> None:
    lister = Lister(("a/app", "b/app", "b/web", "app"), ("X/app",))
    found = asyncio.run(discover(lister, SourceSpec.parse("r.io/*/app")))
    assert found == Listed(("a/app", "b/app"), ("X/app",))
    assert lister.asked == [""]


def test_a_refused_mapping_names_the_sources_the_destination_and_the_fix() -> None:
    flat = DestinationSpec.parse("r.io/flat/{name}")
    five = tuple(f"team{n}/app" for n in range(5))
    with pytest.raises(MappingError) as caught:
        map_repositories(flat, Listed(five))
    assert str(caught.value) == (
        "source repositories team0/app, team1/app, team2/app, team3/app and 1 more all map to "
        f"destination flat/app; nothing of this rule was synced: make the destination {flat} "
        "one-to-one (e.g. {path} instead of {name}) or narrow the source"
    )
    with pytest.raises(MappingError) as caught:
        map_repositories(flat, Listed(five[:4]))
    assert str(caught.value).startswith(
        "source repositories team0/app, team1/app, team2/app, team3/app all map to "
        "destination flat/app; nothing"
    )


def test_a_source_whose_mapped_name_is_off_the_grammar_is_skipped_with_the_reason() -> None:
    long = DestinationSpec.parse("r.io/" + "x" * 200 + "/{path}")
    found = map_repositories(long, Listed(("a/app", "b" * 60 + "/app")))
    assert [p.source for p in found.pairs] == ["a/app"]
    ((repo, why),) = found.skipped
    assert repo == "b" * 60 + "/app" and why.startswith(f"skipped repository {repo}: ")


def test_a_source_matching_nothing_is_an_error_saying_how_to_allow_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    what = "source r.io/team/* matched no repository"
    with pytest.raises(EmptySourceError) as caught:
        empty_source(what, rule="team", allowed=False)
    assert str(caught.value) == (
        f"{what}; nothing was synced (set allow_empty: true on the rule if it may be empty "
        "on purpose)"
    )
    with caplog.at_level(logging.WARNING, logger="regsync.discovery"):
        empty_source(what, rule="team", allowed=True)
    assert caplog.messages == [f"rule team: {what} (allow_empty: true)"]
