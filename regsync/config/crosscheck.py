"""Problems between the items of a ``sync.yaml``, which pydantic sees one at a time.

Before validation, on the plain data: two registries keys naming one host, two rules with one
name. After the rules are resolved: rules that could write one destination repository, or
feed each other's sources (``config.overlap`` finds them; here they become problems at the
rule's ``destination`` line), and sources no run could list (``config.sources``).
"""

from __future__ import annotations

from regsync.config import overlap
from regsync.config.fields import Loc, _host
from regsync.config.models import RegistryConfig, Rule
from regsync.config.problems import Problem, line_of, problem_at
from regsync.config.sources import source_problems


def item_problems(data: dict[str, object], lines: dict[Loc, int]) -> list[Problem]:
    """Duplicate registry hosts and rule names in the plain document."""
    problems: list[Problem] = []
    registries = data.get("registries")
    hosts: dict[str, Loc] = {}
    for key in registries if isinstance(registries, dict) else ():
        loc: Loc = ("registries", key)
        try:
            host = _host(key)
        except ValueError as exc:
            problems.append(Problem(lines[loc], loc, str(exc)))
            continue
        if host in hosts:
            first = hosts[host]
            message = f"same registry as {first[-1]!r} (line {lines[first]})"
            problems.append(Problem(lines[loc], loc, message))
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
            problems.append(Problem(lines[loc], loc, message))
        names.setdefault(name, loc)
    return problems


def rule_problems(
    served: list[Rule],
    rules: list[Rule],
    registries: dict[str, RegistryConfig],
    lines: dict[Loc, int],
) -> list[Problem]:
    """What the resolved rules would do wrong together: ``served`` are the rules as their
    registries serve them (``overlap.as_served``), ``registries`` as written."""
    problems = _shared_destinations(served, lines)
    for at, message in source_problems(rules, registries):  # what a run would refuse
        problems.append(problem_at(lines, ("rules", at, "source"), message))
    return problems


def _shared_destinations(rules: list[Rule], lines: dict[Loc, int]) -> list[Problem]:
    """Pairs of rules that could write one destination repository (see config.overlap);
    each problem is at the later rule's ``destination``."""

    def where(at: int) -> Loc:
        return ("rules", at, "destination")

    found: list[tuple[int, str]] = []
    for at, rule in enumerate(rules):
        if (repo := overlap.feeds_itself(rule)) is not None:
            found.append(
                (
                    at,
                    f"the source {rule.source} also lists what this rule writes (e.g. {repo}):"
                    " every run would copy the last run's copies again, one level deeper;"
                    " write to a path the source pattern does not match, or to another registry",
                )
            )
    for first, later, repo in overlap.feedback(rules):
        earlier = line_of(lines, where(first))
        found.append(
            (
                later,
                f"rule {rules[later].name!r} writes what rule {rules[first].name!r} (line "
                f"{earlier}) lists (e.g. {repo}), and that rule writes what this one lists:"
                " every run would copy the last run's copies again, one level deeper; write"
                " to paths the other source does not match",
            )
        )
    for first, later, repo in overlap.conflicts(rules):
        earlier = line_of(lines, where(first))
        found.append(
            (
                later,
                f"rule {rules[later].name!r} and rule {rules[first].name!r} (line {earlier}) "
                f"can both write destination repository {repo}: they would overwrite and "
                "prune each other's tags; give them different destination paths, or "
                "tags.include patterns with different literal prefixes",
            )
        )
    return [problem_at(lines, where(at), message) for at, message in found]
