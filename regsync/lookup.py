"""`regsync ls | digest | delete`: the everyday questions, through the backend contract.

Each opens the run setup `once` uses (`session.open_run`: one HTTP session, the backend pool,
the registries' settings) and asks a backend directly. `ls` lists (the catalog, the Hub API for
a Docker Hub namespace, or a layout's index); for `--digests` a Docker Hub repository's tags
API answers 100 tags a request, and every tag it does not name is HEADed (no pull on Docker
Hub). `digest` is one HEAD. `delete` is `Backend.manifest_delete` for a digest and
`Backend.tag_delete` for a tag (exactly that tag: the placeholder method on registries that
delete by digest only).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from regsync import aio
from regsync.backends import Backend
from regsync.clioutput import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from regsync.commands import split_tag, usage_error
from regsync.config import Config
from regsync.discovery import discover
from regsync.errors import EmptySourceError, NotFoundError, RegsyncError
from regsync.oci.digest import is_digest
from regsync.oci.ref import Kind, SourceSpec, is_host, is_repository, normalize_host, split_name
from regsync.secrets import redact
from regsync.session import RunSetup, open_run

HEAD_CONCURRENCY = 16  # tag HEADs in flight for `ls --digests`


@dataclass(frozen=True)
class Ref:
    """``host/repo`` with a tag or a digest (``ref``)."""

    host: str
    repo: str
    ref: str

    def __str__(self) -> str:
        sep = "@" if is_digest(self.ref) else ":"
        return f"{self.host}/{self.repo}{sep}{self.ref}"


def parse_ref(text: str, default_tag: str | None) -> Ref:
    """``[host/]repo:tag`` or ``[host/]repo@digest``; ValueError naming what is wrong."""
    if text.startswith(("oci:", "tar:")):
        raise ValueError(
            f"{text}: digest and delete take a registry reference (host/repo:tag); "
            "`regsync ls oci:DIR//repo --digests` lists a layout's or bundle's digests"
        )
    name, at, digest = text.partition("@")
    ref: str | None = digest
    if at:
        if not is_digest(digest):
            raise ValueError(f"{text}: invalid digest {digest!r} (sha256:<64 hex>)")
    else:
        name, ref = split_tag(text)
    if "/" not in name and is_host(name):
        raise ValueError(f"{text} names no repository (e.g. {name}/team/app:1)")
    host, repo = split_name(name)
    if not is_repository(repo, host):
        raise ValueError(f"{text}: invalid repository name {repo!r}")
    ref = ref or default_tag
    if ref is None:
        raise ValueError(f"{text}: give a tag (repo:tag) or a digest (repo@sha256:...)")
    return Ref(host, repo, ref)


def ls(args: argparse.Namespace, config: Config) -> int:
    try:
        spec = _ls_spec(args.spec)
    except ValueError as exc:
        return usage_error(args, str(exc))
    return _run(args, config, lambda setup: _ls(setup, spec, args.digests, args.json))


def digest(args: argparse.Namespace, config: Config) -> int:
    try:
        ref = parse_ref(args.ref, "latest")
    except ValueError as exc:
        return usage_error(args, str(exc))

    async def head(setup: RunSetup) -> int:
        desc = await setup.pool.registry(ref.host).manifest_head(ref.repo, ref.ref)
        if desc is None:
            return _failed(args, f"{ref}: no such tag or manifest")
        print(desc.digest)
        return EXIT_OK

    return _run(args, config, head)


def delete(args: argparse.Namespace, config: Config) -> int:
    try:
        ref = parse_ref(args.ref, None)
    except ValueError as exc:
        return usage_error(args, str(exc))
    by_digest = is_digest(ref.ref)
    what = (
        f"manifest {ref} and every tag of {ref.host}/{ref.repo} pointing at it"
        if by_digest
        else f"tag {ref} only (other tags on its digest stay)"
    )
    if not args.yes:
        print(f"regsync delete: would delete {what}; add --yes to delete it", file=sys.stderr)
        return EXIT_USAGE

    async def remove(setup: RunSetup) -> int:
        client = setup.pool.registry(ref.host)
        if by_digest:
            await client.manifest_delete(ref.repo, ref.ref)
        else:
            await client.tag_delete(ref.repo, ref.ref)
        print(f"regsync delete: deleted {what}", file=sys.stderr)
        return EXIT_OK

    return _run(args, config, remove)


def _run(
    args: argparse.Namespace, config: Config, work: Callable[[RunSetup], Awaitable[int]]
) -> int:
    async def main() -> int:
        async with open_run(config) as setup:
            try:
                return await work(setup)
            except NotFoundError as exc:
                return _failed(args, f"not found: {exc}")
            except RegsyncError as exc:
                return _failed(args, str(exc))

    try:
        return aio.run(main())
    except KeyboardInterrupt:
        return 130


def _failed(args: argparse.Namespace, message: str) -> int:
    print(redact(f"regsync {args.command}: {message}"), file=sys.stderr)
    return EXIT_FAILED


@dataclass(frozen=True)
class _LsSpec:
    source: SourceSpec
    whole_registry: bool = False  # a bare host: every repository of its catalog

    @property
    def lists_tags(self) -> bool:
        return not self.whole_registry and not self.source.is_glob

    @property
    def whole_store(self) -> bool:
        """A bare host, `oci:DIR` or `tar:FILE`: its empty listing is an answer, not a typo."""
        return self.whole_registry or (
            self.source.kind is not Kind.REGISTRY and self.source.pattern == "**"
        )


def _ls_spec(text: str) -> _LsSpec:
    if not text.startswith(("oci:", "tar:")) and "/" not in text and is_host(text):
        return _LsSpec(SourceSpec(registry=normalize_host(text), pattern="**"), True)
    return _LsSpec(SourceSpec.parse(text))


async def _ls(setup: RunSetup, spec: _LsSpec, digests: bool, as_json: bool) -> int:
    source = spec.source
    if spec.whole_registry:
        listed = await setup.pool.registry(source.registry).repositories()
    elif not spec.lists_tags:
        listed = await discover(setup.pool.lister(source), source)
    else:
        backend = setup.source(source)
        listed = await backend.tags(source.pattern)
        if listed.missing:  # a registry's 404, a layout without it: not an empty answer
            raise NotFoundError(f"{source.named}: no such repository", registry=source.registry)
        rows = {tag: "" for tag in listed.names}
        if digests:
            known = await _listed_digests(setup, source)
            rest = [tag for tag in listed.names if tag not in known]
            rows = {**await _digests(backend, source.pattern, rest), **known}
            rows = {tag: rows[tag] for tag in listed.names}
        _warn_rejected(listed.report("tag"))
        _print_tags(f"{source.named}", rows, digests, as_json)
        return EXIT_OK
    _warn_rejected(listed.report("repository"))
    if not listed.names and not listed.rejected and not spec.whole_store:
        raise EmptySourceError(f"{source.named} matches no repository")  # a typo, as in once
    names = sorted(listed.names)
    if as_json:
        print(json.dumps({"repositories": names}, indent=2))
    else:
        for name in names:
            print(name)
    return EXIT_OK


async def _listed_digests(setup: RunSetup, source: SourceSpec) -> dict[str, str]:
    """The cheapest answer first: a Docker Hub repository's tags API names every tag's digest,
    100 a request; whatever it leaves out (or all, if it fails) is HEADed."""
    hub = setup.pool.hub(source.registry) if source.kind is Kind.REGISTRY else None
    if hub is None:
        return {}
    try:
        return {tag: desc.digest for tag, desc in (await hub.tag_digests(source.pattern)).items()}
    except RegsyncError as exc:
        print(redact(f"regsync ls: Hub tags API failed, HEADing tags: {exc}"), file=sys.stderr)
        return {}


async def _digests(backend: Backend, repo: str, tags: list[str]) -> dict[str, str]:
    """Each tag's digest by a HEAD, ``HEAD_CONCURRENCY`` workers (not a task per tag)."""

    async def head(tag: str) -> str:
        desc = await backend.manifest_head(repo, tag)
        return desc.digest if desc is not None else ""

    found = await aio.bounded_map(head, tags, HEAD_CONCURRENCY)  # the first error as itself
    return dict(zip(tags, found, strict=True))


def _print_tags(repository: str, rows: dict[str, str], digests: bool, as_json: bool) -> None:
    if as_json:
        tags: list[dict[str, Any]] = [
            {"name": tag, **({"digest": rows[tag] or None} if digests else {})}
            for tag in sorted(rows)
        ]
        print(json.dumps({"repository": repository, "tags": tags}, indent=2))
        return
    for tag in sorted(rows):
        print(f"{tag}\t{rows[tag]}" if digests else tag)


def _warn_rejected(lines: tuple[str, ...]) -> None:
    for line in lines:
        print(redact(f"regsync ls: {line}"), file=sys.stderr)
