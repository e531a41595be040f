"""Secrets known to this process, and their redaction from every text that leaves it.

A secret is a configured password, a token (a Bearer token or Hub JWT obtained at run time),
and the forms they travel in: the Basic ``user:password`` base64 (with and without padding),
JSON-escaped and URL-quoted. ``redact`` replaces each with ``***``. It is applied where text
leaves the process: the log handler (every logger, aiohttp's included), the run summaries
(``--json`` and the text report), ``/status``, ``ConfigError`` reports, and the error messages
built from registry response bodies (a registry may echo the Authorization header back).

Why one process-wide registry (``SECRETS``) rather than an object passed around: the log
handler is process-wide, and secrets are learned deep in the transport (a token arrives with a
response) where no run object reaches. It only ever grows, holds nothing but the strings to
hide, and is guarded by a lock (log records may come from threads). Tests and the config loader
use their own ``Redactor`` instances.

Strings shorter than ``MIN_LENGTH`` are not treated as secrets: masking them would garble
ordinary words, and no registry accepts such a password or token anyway.

Passwords are few (one per registry) and may hold any character: one regex masks them. Tokens
are many (one per scope set, renewed every few minutes for as long as ``serve`` runs) and are
``token68`` strings (RFC 6750): they are looked up in a set, run by run of token characters,
so adding one costs nothing and masking stays linear; the last ``MAX_TOKENS`` are kept (older
ones have long expired).
"""

from __future__ import annotations

import base64
import json
import re
import threading
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote

MASK = "***"
MIN_LENGTH = 4
MAX_TOKENS = 10_000
# RFC 7235 token68, the alphabet of Bearer tokens and JWTs.
_TOKEN_RUN = re.compile(r"[A-Za-z0-9._~+/=-]{4,}")
_TOKEN_EDGES = "._~+/=-"  # a run may take in the punctuation around a token: "... eyJ...."


def is_header_token(text: str) -> bool:
    """Whether a bearer token we are given fits a header as is: printable ASCII, no spaces."""
    return all(33 <= ord(c) <= 126 for c in text)


class Redactor:
    """A set of secret strings and the one regex that masks them all."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: set[str] = set()
        self._tokens: OrderedDict[str, None] = OrderedDict()
        self._pattern: re.Pattern[str] | None = None
        self._lock = threading.Lock()
        self.add(*secrets)

    def add(self, *secrets: str | None) -> None:
        """Remember secrets (and the forms they may be quoted in); None and short ones are
        ignored."""
        forms = {form for s in secrets if s and len(s) >= MIN_LENGTH for form in _forms(s)}
        with self._lock:
            if not forms <= self._secrets:
                self._secrets |= forms
                self._pattern = None

    def add_token(self, token: str) -> None:
        """A token obtained at run time (a token68 string; anything else is kept as a secret)."""
        if len(token) < MIN_LENGTH:
            return
        if _TOKEN_RUN.fullmatch(token) is None or token.strip(_TOKEN_EDGES) != token:
            self.add(token)
            return
        with self._lock:
            self._tokens[token] = None
            self._tokens.move_to_end(token)
            while len(self._tokens) > MAX_TOKENS:
                self._tokens.popitem(last=False)

    def add_login(self, username: str, password: str) -> None:
        """A password and the Basic credentials it is sent as."""
        basic = base64.b64encode(f"{username}:{password}".encode()).decode()
        self.add(password, basic, basic.rstrip("="))

    def redact(self, text: str) -> str:
        """``text`` with every known secret replaced by ``***``."""
        if not text:
            return text
        pattern = self._compiled()
        if pattern is not None:
            text = pattern.sub(MASK, text)
        if self._tokens:
            text = _TOKEN_RUN.sub(self._mask_token, text)
        return text

    def _mask_token(self, match: re.Match[str]) -> str:
        run = match.group(0)
        if run in self._tokens:
            return MASK
        core = run.strip(_TOKEN_EDGES)
        if core in self._tokens:
            start = run.index(core)
            return run[:start] + MASK + run[start + len(core) :]
        return run

    def redact_data(self, data: Any) -> Any:
        """A copy of JSON-like ``data`` with every string value redacted (keys are ours)."""
        if isinstance(data, str):
            return self.redact(data)
        if isinstance(data, dict):
            return {key: self.redact_data(value) for key, value in data.items()}
        if isinstance(data, list | tuple):
            return [self.redact_data(value) for value in data]
        return data

    def _compiled(self) -> re.Pattern[str] | None:
        with self._lock:
            if self._pattern is None and self._secrets:
                # Longest first: a secret that contains another is masked whole.
                ordered = sorted(self._secrets, key=len, reverse=True)
                self._pattern = re.compile("|".join(map(re.escape, ordered)))
            return self._pattern


def _forms(secret: str) -> set[str]:
    # As written, inside a JSON string (JSON logs, --json, /status) and in a URL.
    forms = {secret, json.dumps(secret)[1:-1], quote(secret, safe="")}
    return {form for form in forms if len(form) >= MIN_LENGTH}


SECRETS = Redactor()


def remember_token(token: str) -> None:
    SECRETS.add_token(token)


def remember_login(username: str, password: str) -> None:
    SECRETS.add_login(username, password)


def redact(text: str) -> str:
    return SECRETS.redact(text)


def redact_data(data: Any) -> Any:
    return SECRETS.redact_data(data)
