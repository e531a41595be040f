"""Backup tags: where a rule's ``backup:`` keeps the image a changed source tag overwrites.

The template names a tag in the same destination repository, with the placeholders ``{tag}``
(the tag about to be overwritten), ``{date}`` (today, UTC, ``YYYYMMDD``) and ``{digest12}``
(the first 12 hex digits of the digest being replaced). It is checked at config load against
a sample, and each name it gives is checked again against the tag grammar before it is used.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from regsync.oci.ref import is_tag, shown

_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
PLACEHOLDERS = ("tag", "date", "digest12")
_SAMPLE = {"tag": "latest", "date": "20260101", "digest12": "0123456789ab"}


@dataclass(frozen=True)
class BackupTemplate:
    text: str

    @classmethod
    def parse(cls, text: str) -> BackupTemplate:
        """The template, or ValueError saying what to fix."""
        stripped = _PLACEHOLDER.sub("", text)
        unknown = [p for p in _PLACEHOLDER.findall(text) if p not in PLACEHOLDERS]
        if unknown or "{" in stripped or "}" in stripped:
            raise ValueError(
                f"invalid backup template {text!r}: placeholders are "
                + ", ".join(f"{{{p}}}" for p in PLACEHOLDERS)
                + ", e.g. '{tag}-prev'"
            )
        template = cls(text)
        sample = template.render(**_SAMPLE)
        if not is_tag(sample):
            raise ValueError(
                f"backup template {text!r} does not give a valid tag (for tag 'latest' it gives "
                f"{shown(sample)}): use letters, digits, '_', '.' and '-', up to 128"
            )
        if "{tag}" in text and template.render(**{**_SAMPLE, "tag": "v1"}) == "v1":
            raise ValueError("a backup template of just {tag} would overwrite the tag itself")
        return template

    def render(self, tag: str, date: str, digest12: str) -> str:
        values = {"tag": tag, "date": date, "digest12": digest12}
        return _PLACEHOLDER.sub(lambda m: values[m.group(1)], self.text)

    def name(self, tag: str, replaced_digest: str, now: datetime | None = None) -> str:
        """The backup tag for ``tag`` (may be invalid, e.g. too long: callers check it)."""
        today = (now or datetime.now(UTC)).strftime("%Y%m%d")
        return self.render(tag, today, replaced_digest.partition(":")[2][:12])
