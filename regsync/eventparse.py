"""Registry events from outside, parsed: CNCF distribution notifications and Harbor webhooks.

Pure functions, no I/O. Everything in a payload is untrusted: the body is size-bounded by the
endpoint before it gets here, parsed with a depth bound (``boundedjson``), and every name in
it is checked against the distribution grammar before it can become a ``RegistryEvent``. An
event whose names are off the grammar is kept as ``REFUSED`` (counted, never acted on); a body
that is not the documented envelope at all raises ``PayloadError`` (the endpoint answers 400).

What an event means to regsync (``EventKind``):

- ``PUSH``: a manifest was pushed under a tag. The digest is a hint only: the copy HEADs the
  source tag and copies what it resolves to, verifying every byte.
- ``DELETE``: a manifest or tag was deleted; rules that prune run a full cycle.
- ``IGNORED``: blob pushes, pulls, mounts, pushes by digest only, other Harbor event types.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from regsync import boundedjson
from regsync.oci.digest import is_digest
from regsync.oci.ref import is_repository, is_tag, shown

MAX_EVENTS = 1000  # per request; distribution sends one, Harbor one per artifact
DISTRIBUTION_TYPE = "application/vnd.docker.distribution.events.v1+json"
BLOB_TYPES = frozenset({"application/octet-stream"})


class PayloadError(ValueError):
    """The body is not the envelope the endpoint takes (answered 400)."""


class EventKind(enum.Enum):
    PUSH = "push"
    DELETE = "delete"
    IGNORED = "ignored"
    REFUSED = "refused"  # names off the grammar: never acted on


@dataclass(frozen=True)
class RegistryEvent:
    kind: EventKind
    repository: str = ""
    tag: str = ""  # "" for a delete by digest
    digest: str = ""  # a hint; "" when the event carried none
    timestamp: float | None = None  # unix time the registry says it happened
    why: str = ""  # for IGNORED and REFUSED: one line


def parse_distribution(body: bytes) -> list[RegistryEvent]:
    """``{"events": [...]}`` as CNCF distribution's ``notifications`` send it."""
    envelope = _object(_json(body), "the body")
    events = envelope.get("events")
    if not isinstance(events, list):
        raise PayloadError('expected {"events": [...]}')
    return [_distribution_event(item) for item in _bounded(events)]


def parse_harbor(body: bytes) -> list[RegistryEvent]:
    """A Harbor webhook: ``{"type", "occur_at", "event_data": {"resources", "repository"}}``."""
    payload = _object(_json(body), "the body")
    kind = payload.get("type")
    data = payload.get("event_data")
    if not isinstance(kind, str) or not isinstance(data, dict):
        raise PayloadError('expected {"type": ..., "event_data": {...}}')
    timestamp = _unix(payload.get("occur_at"))
    action = {"PUSH_ARTIFACT": EventKind.PUSH, "DELETE_ARTIFACT": EventKind.DELETE}.get(kind)
    if action is None:
        return [RegistryEvent(EventKind.IGNORED, timestamp=timestamp, why=f"type {shown(kind)}")]
    repo = _harbor_repository(data.get("repository"))
    resources = data.get("resources")
    if not isinstance(resources, list) or not resources:
        raise PayloadError("event_data.resources must be a non-empty list")
    events = []
    for item in _bounded(resources):
        resource = _object(item, "a resource")
        tag, digest = resource.get("tag"), resource.get("digest")
        # An untagged artifact comes with no tag (or the digest in `tag`).
        events.append(_event(action, repo, "" if tag is None else tag, digest, timestamp))
    return events


def _distribution_event(item: object) -> RegistryEvent:
    event = _object(item, "an event")
    target = _object(event.get("target"), "an event's target")
    action = event.get("action")
    timestamp = _rfc3339(event.get("timestamp"))
    repo, tag, digest = target.get("repository"), target.get("tag"), target.get("digest")
    if action == "push":
        if target.get("mediaType") in BLOB_TYPES or not tag:
            return RegistryEvent(EventKind.IGNORED, timestamp=timestamp, why="push without a tag")
        return _event(EventKind.PUSH, repo, tag, digest, timestamp)
    if action == "delete":
        return _event(EventKind.DELETE, repo, tag or "", digest or "", timestamp)
    what = shown(action) if isinstance(action, str) else "missing"
    return RegistryEvent(EventKind.IGNORED, timestamp=timestamp, why=f"action {what}")


def _event(
    kind: EventKind, repo: object, tag: object, digest: object, timestamp: float | None
) -> RegistryEvent:
    """One event, its names checked; REFUSED (with why) when any is off the grammar."""
    if not isinstance(repo, str) or not is_repository(repo):
        return _refused(f"repository {_show(repo)} is not a valid name", timestamp)
    if not isinstance(digest, str) or (digest and not is_digest(digest)):
        return _refused(f"digest {_show(digest)} is not a valid digest", timestamp)
    if not isinstance(tag, str):
        return _refused(f"tag {_show(tag)} is not a valid tag", timestamp)
    if kind is EventKind.PUSH and (not tag or is_digest(tag)):
        # Harbor names a push by digest with the digest in `tag`.
        why = "push by digest, without a tag"
        return RegistryEvent(EventKind.IGNORED, repo, "", digest, timestamp, why)
    if tag and not is_tag(tag) and not is_digest(tag):
        return _refused(f"tag {_show(tag)} is not a valid tag", timestamp)
    return RegistryEvent(kind, repo, "" if is_digest(tag) else tag, digest, timestamp)


def _refused(why: str, timestamp: float | None) -> RegistryEvent:
    return RegistryEvent(EventKind.REFUSED, timestamp=timestamp, why=why)


def _harbor_repository(value: object) -> str | None:
    repo = _object(value, "event_data.repository")
    full = repo.get("repo_full_name")
    if isinstance(full, str):
        return full
    namespace, name = repo.get("namespace"), repo.get("name")
    if isinstance(namespace, str) and isinstance(name, str):
        return f"{namespace}/{name}"
    return None


def _json(body: bytes) -> Any:
    try:
        return boundedjson.loads(body, max_depth=16)
    except (ValueError, UnicodeDecodeError) as exc:
        raise PayloadError(f"not JSON: {str(exc)[:120]}") from None


def _object(value: object, what: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise PayloadError(f"{what} must be a JSON object")
    return value


def _bounded(items: list[Any]) -> Iterable[Any]:
    if len(items) > MAX_EVENTS:
        raise PayloadError(f"{len(items)} events in one request (at most {MAX_EVENTS})")
    return items


def _rfc3339(value: object) -> float | None:
    """distribution's timestamp (Go's RFC 3339 with nanoseconds); None when unreadable."""
    if not isinstance(value, str) or len(value) > 64:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed.timestamp() if parsed.tzinfo is not None else None


def _unix(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if 0 < value < 1e11 else None


def _show(value: object) -> str:
    if value is None:
        return "missing"
    return shown(value) if isinstance(value, str) else f"of JSON type {type(value).__name__}"
