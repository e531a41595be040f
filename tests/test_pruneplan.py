"""Prune planning, pure: which destination tags are candidates, what each PRUNE says and why.

The rails themselves (max_fraction, an empty source, shared digests) are pinned in
``test_tagpolicy.py``; these cases were added where mutation testing (``make mutate``) showed
a changed rule passing every test: signatures following images, platform subsets, and the
words a user reads in ``check``.
"""

from __future__ import annotations

from regsync.plan import Action
from regsync.pruneplan import Listing, PrunePolicy, candidates, plan_prune
from regsync.tagpolicy import TagPattern, TagPolicy

IMAGES = TagPolicy(include=(TagPattern(r"\d.*"),))  # the rule manages version tags only
LOST = "not selected from the source any more"
SIG_LOST = "signature/referrer of an image no longer mirrored"


def digest(n: int) -> str:
    return f"sha256:{n:064x}"


def sig(n: int) -> str:
    """cosign's signature tag for ``digest(n)``."""
    return f"sha256-{digest(n)[7:]}.sig"


def reasons(policy: PrunePolicy, listing: Listing, wanted: set[str]) -> dict[str, str]:
    decision = plan_prune(policy, IMAGES, listing, wanted, referrers_follow=True)
    assert all(a.action is Action.PRUNE for a in decision.actions)
    return {a.tag: a.reason for a in decision.actions}


def test_candidates_are_unwanted_tags_in_scope_and_with_referrers_their_signatures() -> None:
    dest = ["1.0", "1.1", "local-1", sig(1), sig(2)]
    wanted = {"1.0", sig(1)}
    assert candidates(IMAGES, dest, wanted, follow=False) == {"1.1"}
    assert candidates(IMAGES, dest, wanted, follow=True) == {"1.1", sig(2)}


def test_each_prune_says_why_and_whether_only_the_tag_may_go() -> None:
    """What `check` prints per deletion: the reason, and the kept tags sharing the digest."""
    dest = {"1.0": digest(1), "1.1": digest(2), "1.2": digest(1), "local-1": digest(2)}
    dest |= {"1.3": digest(3), sig(2): digest(9), "local-2": digest(2)}
    listing = Listing(["1.0"], list(dest), dest)
    assert reasons(PrunePolicy(max_fraction=1), listing, {"1.0"}) == {
        "1.1": f"{LOST}; shares its digest with local-1, local-2, so only the tag may go",
        "1.2": f"{LOST}; shares its digest with 1.0, so only the tag may go",
        "1.3": LOST,
        sig(2): SIG_LOST,
    }


def test_a_signature_of_a_kept_image_the_source_dropped_goes_even_when_no_image_does() -> None:
    dest = {"1.0": digest(1), sig(1): digest(7), "local-1": digest(8)}
    listing = Listing(["1.0"], list(dest), dest)
    assert reasons(PrunePolicy(), listing, {"1.0"}) == {sig(1): SIG_LOST}
    assert plan_prune(PrunePolicy(), IMAGES, listing, {"1.0"}).actions == ()


def test_a_platform_subsets_signature_follows_it_by_the_source_digest() -> None:
    """A subset's signatures name the source index digest (recorded in `sources`), not the
    subset's own; tags that are neither images in scope nor signatures never go."""
    subset, source_index = digest(1), digest(5)
    dest = {"1.0": subset, "1.1": digest(2), sig(5): digest(7), "local-1": digest(8)}
    listing = Listing(["1.1"], list(dest), dest, sources={subset: source_index})
    assert reasons(PrunePolicy(max_fraction=1), listing, {"1.1"}) == {"1.0": LOST, sig(5): SIG_LOST}


def test_an_empty_source_refusal_says_how_to_allow_it() -> None:
    dest = {"1.0": digest(1), "1.1": digest(2)}
    decision = plan_prune(PrunePolicy(max_fraction=1), IMAGES, Listing([], list(dest), dest), set())
    assert decision.actions == ()
    assert decision.refusals == (
        "prune skipped: the source listed no tags, so 2 would go; "
        "set prune.allow_empty: true if the source is really empty",
    )
