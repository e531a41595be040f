"""Tag selection, version reading, prune planning and subset/merge building: pure, no sockets."""

from __future__ import annotations

import json
import logging

import pytest

from regsync.errors import ManifestError, RegistryError, UnsupportedError
from regsync.execute import DeleteGuard, prune_actions
from regsync.oci.artifacts import artifact_subject
from regsync.oci.manifest import Descriptor, Manifest, Platform, parse_manifest
from regsync.plan import Action, Origin, RepoPlan, TagAction, diff_tags
from regsync.platforms import (
    PLATFORMS,
    SOURCE_DIGEST,
    PlatformFilter,
    filter_index,
    subset_index,
)
from regsync.pruneplan import Listing, PrunePolicy, plan_prune
from regsync.referrers import merge_index
from regsync.tagpolicy import TagPattern, TagPolicy, parse_version, select

HEX = "ab" * 32


def policy(
    include: tuple[str, ...] = (".*",),
    exclude: tuple[str, ...] = (),
    semver: str | None = None,
    latest: int | None = None,
) -> TagPolicy:
    return TagPolicy(
        tuple(TagPattern(p) for p in include), tuple(TagPattern(p) for p in exclude), semver, latest
    )


def dropped(tags: list[str], pol: TagPolicy) -> dict[str, str]:
    return {f.tag: f.by for f in select(pol, tags).filtered}


@pytest.mark.parametrize(
    ("tag", "version"),
    [
        ("1.2.3", "1.2.3"),
        ("v1.2", "1.2"),
        ("V2", "2"),
        ("1.2.3-alpine", "1.2.3"),
        ("3.12-slim-bookworm", "3.12"),
        ("1.2.3+build.7", "1.2.3"),
        ("1.2.3-rc1", "1.2.3rc1"),
        ("1.2.3-beta.2", "1.2.3b2"),
        ("1.2.3rc1", "1.2.3rc1"),
        ("1.2.3-rc1-alpine", "1.2.3rc1"),
        ("2.0-alpha", "2.0a0"),
        ("1.0-1", "1.0"),
        ("20240115", "20240115"),
    ],
)
def test_tags_read_as_versions(tag: str, version: str) -> None:
    parsed = parse_version(tag)
    assert parsed is not None and str(parsed) == version


@pytest.mark.parametrize("tag", ["latest", "stable", "1a2b3c4", "alpine-1.2", "v", "1.2-", ""])
def test_tags_that_are_not_versions(tag: str) -> None:
    assert parse_version(tag) is None


def test_one_two_equals_one_two_zero() -> None:
    assert parse_version("1.2") == parse_version("v1.2.0")


def test_include_exclude_full_match_and_report_the_filter() -> None:
    sel = select(
        policy(("1.*", "latest"), (r".*-rc\d*",)), ["1.0", "1.0-rc1", "10", "latest", "x1"]
    )
    assert sel.selected == ("1.0", "10", "latest")
    assert {f.tag: (f.by, f.detail) for f in sel.filtered} == {
        "1.0-rc1": ("exclude", r"matches exclude '.*-rc\\d*'"),
        "x1": ("include", "matches no include pattern"),
    }


def test_semver_drops_non_versions_and_out_of_range_and_prereleases() -> None:
    tags = ["0.9", "1.0", "v1.5", "2.9.9-alpine", "3.0", "2.0-rc1", "latest"]
    sel = select(policy(semver=">=1.0, <3"), tags)
    assert sel.selected == ("1.0", "2.9.9-alpine", "v1.5")
    details = {f.tag: f.detail for f in sel.filtered}
    assert details == {
        "0.9": "0.9 is outside '>=1.0, <3'",
        "2.0-rc1": "2.0rc1 is outside '>=1.0, <3'",
        "3.0": "3.0 is outside '>=1.0, <3'",
        "latest": "not a version",
    }


def test_a_range_naming_a_prerelease_admits_prereleases() -> None:
    assert select(policy(semver=">=2.0rc1"), ["2.0-rc1", "1.9"]).selected == ("2.0-rc1",)


def test_latest_keeps_every_spelling_of_the_n_highest_versions() -> None:
    tags = ["1.0", "1.1", "1.1-alpine", "v1.2", "1.2.0-slim", "1.10", "edge"]
    sel = select(policy(latest=2), tags)
    assert sel.selected == ("1.10", "1.2.0-slim", "v1.2")
    assert dropped(tags, policy(latest=2)) == {
        "1.0": "latest",
        "1.1": "latest",
        "1.1-alpine": "latest",
        "edge": "latest",
    }


def test_filters_compose_in_order() -> None:
    """include -> exclude -> semver -> latest: each tag is reported by the first that drops it."""
    tags = ["1.0", "1.1", "1.2", "2.0", "2.1-rc1", "2.1", "3.0", "nightly", "1.3-debug"]
    pol = policy(include=(r"\d.*",), exclude=(r".*-debug",), semver="<3", latest=2)
    sel = select(pol, tags)
    assert sel.selected == ("2.0", "2.1")
    assert dropped(tags, pol) == {
        "nightly": "include",
        "1.3-debug": "exclude",
        "2.1-rc1": "semver",
        "3.0": "semver",
        "1.0": "latest",
        "1.1": "latest",
        "1.2": "latest",
    }


def test_artifact_tags_are_never_selected_as_images() -> None:
    tags = [f"sha256-{HEX}", f"sha256-{HEX}.sig", f"sha256-{HEX}.att", "1.0"]
    sel = select(policy(), tags)
    assert sel.selected == ("1.0",)
    assert set(dropped(tags, policy()).values()) == {"artifact"}
    assert artifact_subject(f"sha256-{HEX}.sbom") == f"sha256:{HEX}"
    assert artifact_subject("sha256-short.sig") is None


def test_scope_is_name_filters_without_latest() -> None:
    pol = policy(include=(r"\d.*",), semver=">=1", latest=1)
    assert pol.in_scope("0.5") is False and pol.in_scope("local-1") is False
    assert pol.in_scope("1.0") is True  # dropped only by latest: still the rule's to prune


# -- diff with recorded origins ----------------------------------------------------------------


def test_subset_is_up_to_date_when_its_recorded_origin_matches() -> None:
    src, dst = "sha256:" + "1" * 64, "sha256:" + "2" * 64
    origins = {"1.0": Origin(src, "linux/amd64"), "2.0": Origin(src, "linux/arm64")}
    actions = diff_tags(
        {"1.0": src, "2.0": src, "3.0": src},
        {"1.0": dst, "2.0": dst},
        origins=origins,
        platforms="linux/amd64",
    )
    got = {a.tag: (a.action, a.reason) for a in actions}
    assert got["1.0"][0] is Action.SKIP and "platform subset (linux/amd64)" in got["1.0"][1]
    assert got["2.0"] == (Action.COPY, "platforms changed from linux/arm64")
    assert got["3.0"] == (Action.COPY, "missing")


# -- prune planning --------------------------------------------------------------------------


def digest(n: int) -> str:
    return f"sha256:{n:064x}"


def listing(dest: dict[str, str], source: list[str] | None = None, **kw: object) -> Listing:
    return Listing(source if source is not None else ["1.0"], list(dest), dest, **kw)  # type: ignore[arg-type]


def test_prune_deletes_only_scoped_tags_the_source_lost() -> None:
    dest = {"1.0": digest(1), "1.1": digest(2), "local-1": digest(3), "1.2": digest(4)}
    decision = plan_prune(PrunePolicy(), policy(include=(r"\d.*",)), listing(dest), {"1.0", "1.1"})
    assert [(a.tag, a.action, a.shared) for a in decision.actions] == [("1.2", Action.PRUNE, ())]


def test_prune_refuses_over_max_fraction_and_says_so() -> None:
    dest = {t: digest(i) for i, t in enumerate(["1.0", "1.1", "1.2", "1.3"])}
    decision = plan_prune(PrunePolicy(max_fraction=0.5), policy(), listing(dest), {"1.0"})
    assert decision.actions == ()
    assert decision.refusals == (
        "prune refused: it would delete 3 of 4 tags (75%), over prune.max_fraction 0.5; "
        "raise max_fraction or delete them by hand",
    )
    exactly_half = plan_prune(
        PrunePolicy(max_fraction=0.5), policy(), listing(dest), {"1.0", "1.1"}
    )
    assert [a.tag for a in exactly_half.actions] == ["1.2", "1.3"]


def test_prune_refuses_an_empty_source_unless_allowed() -> None:
    dest = {"1.0": digest(1)}
    refused = plan_prune(PrunePolicy(max_fraction=1), policy(), listing(dest, []), set())
    assert refused.actions == () and "source listed no tags" in refused.refusals[0]
    allowed = plan_prune(
        PrunePolicy(allow_empty=True, max_fraction=1), policy(), listing(dest, []), set()
    )
    assert [a.tag for a in allowed.actions] == ["1.0"]


def test_prune_marks_shared_digests_for_tag_deletion() -> None:
    dest = {"1.0": digest(1), "old": digest(1), "gone": digest(2), "also-gone": digest(2)}
    dest |= {"local-x": digest(3), "child": digest(4), "idx": digest(5)}
    dest |= {"1.1": digest(3)}
    decision = plan_prune(
        PrunePolicy(max_fraction=1),
        policy(exclude=("local-.*",)),
        listing(dest, children={"idx": frozenset({digest(4)})}),
        {"1.0", "idx"},
    )
    shared = {a.tag: a.shared for a in decision.actions}
    assert shared == {
        "old": ("1.0",),  # a kept tag holds the digest
        "gone": (),  # both tags on digest 2 go: one delete by digest
        "also-gone": (),
        "1.1": ("local-x",),  # a foreign tag holds it
        "child": ("idx",),  # a kept index lists it
    }


def test_signatures_follow_their_images_into_prune() -> None:
    sig = f"sha256-{digest(2)[7:]}.sig"
    foreign_sig = f"sha256-{digest(9)[7:]}.sig"
    dest = {"1.0": digest(1), "1.1": digest(2), sig: digest(7), foreign_sig: digest(8)}
    decision = plan_prune(PrunePolicy(), policy(), listing(dest), {"1.0"}, referrers_follow=True)
    assert sorted(a.tag for a in decision.actions) == sorted(["1.1", sig])
    without = plan_prune(PrunePolicy(), policy(), listing(dest), {"1.0"})
    assert [a.tag for a in without.actions] == ["1.1"]


# -- platform subsets and referrer merges -----------------------------------------------------


def index(children: list[dict[str, object]]) -> Manifest:
    body = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json"}
    body["manifests"] = children  # type: ignore[assignment]
    return parse_manifest(json.dumps(body).encode())


def child(n: int, platform: str | None, **annotations: str) -> dict[str, object]:
    entry: dict[str, object] = {
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": digest(n),
        "size": 100,
    }
    if platform:
        os_, arch, *variant = platform.split("/")
        entry["platform"] = {
            "os": os_,
            "architecture": arch,
            **({"variant": variant[0]} if variant else {}),
        }
    if annotations:
        entry["annotations"] = annotations
    return entry


def test_subset_keeps_listed_platforms_and_their_attestations_and_records_origin() -> None:
    source = index(
        [
            child(1, "linux/amd64"),
            child(2, "linux/arm64/v8"),
            child(3, "linux/arm/v7"),
            child(4, "unknown/unknown", **{"vnd.docker.reference.digest": digest(2)}),
            child(5, "unknown/unknown", **{"vnd.docker.reference.digest": digest(3)}),
        ]
    )
    subset = subset_index(source, PlatformFilter.parse(["linux/arm64", "linux/amd64"]))
    assert [c.digest for c in subset.children] == [digest(1), digest(2), digest(4)]
    assert subset.annotations == {
        SOURCE_DIGEST: source.digest,
        PLATFORMS: "linux/arm64,linux/amd64",
    }
    assert subset.digest != source.digest
    assert subset_index(source, PlatformFilter.parse(["linux/arm64", "linux/amd64"])) == subset


def test_platform_variants() -> None:
    arm = PlatformFilter.parse(["linux/arm64/v8"])
    assert arm.matches(Platform("linux", "arm64", "")) and arm.matches(
        Platform("linux", "arm64", "v8")
    )
    assert not PlatformFilter.parse(["linux/arm/v6"]).matches(Platform("linux", "arm", "v7"))
    assert PlatformFilter.parse(["linux/arm"]).matches(Platform("linux", "arm", "v7"))


def test_subset_with_no_wanted_platform_is_an_error() -> None:
    with pytest.raises(ManifestError, match="none of the platforms linux/s390x"):
        subset_index(index([child(1, "linux/amd64")]), PlatformFilter.parse(["linux/s390x"]))


def test_merge_index_appends_without_duplicates() -> None:
    a = Descriptor(
        "application/vnd.oci.image.manifest.v1+json",
        digest(1),
        10,
        artifact_type="application/vnd.example.x",
    )
    b = Descriptor(
        "application/vnd.oci.image.manifest.v1+json",
        digest(2),
        10,
        artifact_type="application/vnd.example.y",
    )
    first = merge_index(None, [a], None)
    assert first is not None and [c.digest for c in first.children] == [digest(1)]
    second = merge_index(first, [a, b], None)
    assert second is not None and [c.digest for c in second.children] == [digest(1), digest(2)]
    assert merge_index(second, [b, a], None) is None  # nothing new: no push


# -- prune execution against a fake destination (no sockets) ---------------------------------


class FakeDestination:
    """Records deletes; ``tag_deletes`` False: the backend cannot remove one tag alone."""

    name = "fake:5000"

    def __init__(self, tag_deletes: bool, refuse: bool = False) -> None:
        self.tag_deletes, self.refuse = tag_deletes, refuse
        self.deleted: list[tuple[str, str]] = []
        self.fail: RegistryError | None = None  # raised by a delete by digest

    async def manifest_delete(self, repo: str, digest: str) -> None:
        if self.refuse:
            raise UnsupportedError("405 UNSUPPORTED", status=405, codes=("UNSUPPORTED",))
        assert digest.startswith("sha256:"), digest
        if self.fail is not None:
            raise self.fail
        self.deleted.append((repo, digest))

    async def tag_delete(self, repo: str, tag: str) -> None:
        if self.refuse:
            raise UnsupportedError("405 UNSUPPORTED", status=405, codes=("UNSUPPORTED",))
        if not self.tag_deletes:
            raise RegistryError("fake:5000/app:old: cannot remove this tag alone", status=400)
        self.deleted.append((repo, tag))

    async def manifest_head(self, repo: str, tag: str) -> Descriptor | None:
        """What prune_plan's tags point at, until the tag or its digest is deleted."""
        target = {"old": digest(1), "gone": digest(2), "gone-too": digest(2)}.get(tag, digest(0))
        if {(repo, tag), (repo, target)} & set(self.deleted):
            return None
        return Descriptor("application/vnd.oci.image.manifest.v1+json", target, 100)


def prune_plan(repo: str = "app") -> RepoPlan:
    return RepoPlan(
        repo,
        repo,
        (
            TagAction("old", Action.PRUNE, None, digest(1), shared=("1.0",)),
            TagAction("gone", Action.PRUNE, None, digest(2)),
            TagAction("gone-too", Action.PRUNE, None, digest(2)),
        ),
    )


async def test_shared_digest_is_deleted_by_tag_where_the_registry_can() -> None:
    dest = FakeDestination(tag_deletes=True)
    outcome = await prune_actions(dest, prune_plan(), DeleteGuard(dest.name))  # type: ignore[arg-type]
    assert dest.deleted == [("app", "old"), ("app", digest(2))]
    assert sorted(outcome.pruned) == ["gone", "gone-too", "old"] and not outcome.notes


async def test_a_tag_the_backend_cannot_remove_alone_is_an_error_not_pruned() -> None:
    dest = FakeDestination(tag_deletes=False)
    outcome = await prune_actions(dest, prune_plan(), DeleteGuard(dest.name))  # type: ignore[arg-type]
    assert dest.deleted == [("app", digest(2))]
    assert sorted(outcome.pruned) == ["gone", "gone-too"] and not outcome.notes
    assert outcome.errors == ["app:old: prune: fake:5000/app:old: cannot remove this tag alone"]


async def test_refused_deletes_are_reported_once_per_rule() -> None:
    dest = FakeDestination(tag_deletes=True, refuse=True)
    guard = DeleteGuard(dest.name)
    first = await prune_actions(dest, prune_plan("a"), guard)  # type: ignore[arg-type]
    second = await prune_actions(dest, prune_plan("b"), guard)  # type: ignore[arg-type]
    assert first.errors + second.errors == [
        "prune: fake:5000 refuses deletes (405 UNSUPPORTED); enable deletion there "
        "(distribution: storage.delete.enabled) or set prune: false"
    ]
    assert not first.pruned and not second.pruned


async def test_a_digest_a_copy_of_this_run_points_at_is_deleted_tag_by_tag() -> None:
    """1.0 was just copied onto the digest ``old`` still holds: a delete by digest would
    take the new 1.0 along."""
    dest = FakeDestination(tag_deletes=True)
    plan = RepoPlan(
        "app",
        "app",
        (
            TagAction("1.0", Action.COPY, digest(2)),
            TagAction("gone", Action.PRUNE, None, digest(2)),
        ),
    )
    outcome = await prune_actions(dest, plan, DeleteGuard(dest.name))  # type: ignore[arg-type]
    assert dest.deleted == [("app", "gone")] and outcome.pruned == ["gone"]


async def test_a_prune_whose_digest_is_unknown_is_deleted_tag_by_tag() -> None:
    dest = FakeDestination(tag_deletes=True)
    plan = RepoPlan("app", "app", (TagAction("gone", Action.PRUNE, None, None),))
    outcome = await prune_actions(dest, plan, DeleteGuard(dest.name))  # type: ignore[arg-type]
    assert dest.deleted == [("app", "gone")] and outcome.pruned == ["gone"]


async def test_a_failed_delete_by_digest_names_the_repository_and_the_digest() -> None:
    dest = FakeDestination(tag_deletes=True)
    dest.fail = RegistryError("fake:5000: DELETE -> 500 UNKNOWN", status=500)
    plan = RepoPlan("app", "app", (TagAction("gone", Action.PRUNE, None, digest(2)),))
    outcome = await prune_actions(dest, plan, DeleteGuard(dest.name))  # type: ignore[arg-type]
    assert outcome.errors == [f"app: prune {digest(2)[:19]}: fake:5000: DELETE -> 500 UNKNOWN"]
    assert outcome.pruned == []


async def test_each_prune_is_logged_with_how_it_went(caplog: pytest.LogCaptureFixture) -> None:
    """The log is the audit trail of deletions: repository, tag, and the digest or "tag only"."""
    dest = FakeDestination(tag_deletes=True)
    with caplog.at_level(logging.INFO, logger="regsync.execute"):
        await prune_actions(dest, prune_plan(), DeleteGuard(dest.name))  # type: ignore[arg-type]
    assert sorted(r.getMessage() for r in caplog.records) == [
        "pruned app:gone (" + digest(2) + ")",
        "pruned app:gone-too (" + digest(2) + ")",
        "pruned app:old (tag only)",
    ]


def test_filter_index_keeps_a_nested_subset_in_place_and_drops_an_unwanted_nested_index() -> None:
    inner_subset = index([child(1, "linux/amd64")])
    nested_wanted = {**child(7, None), "mediaType": "application/vnd.oci.image.index.v1+json"}
    nested_unwanted = {**child(8, None), "mediaType": "application/vnd.oci.image.index.v1+json"}
    source = index([nested_wanted, child(2, "linux/arm64"), nested_unwanted])
    wanted = PlatformFilter.parse(["linux/amd64", "linux/arm64"])

    subset = filter_index(source, wanted, {digest(7): inner_subset, digest(8): None})

    assert subset is not None
    assert [c.digest for c in subset.children] == [inner_subset.digest, digest(2)]
    assert subset.children[0].size == len(inner_subset.raw)
    assert subset.annotations[SOURCE_DIGEST] == source.digest
    only_nested = index([nested_unwanted])
    assert filter_index(only_nested, wanted, {digest(8): None}) is None
