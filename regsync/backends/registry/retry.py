"""What a failure means, and the retry policy built on it: the one place for both.

``verdict`` reads an error (or ``status_verdict`` a status and the registry's error codes) as:

- RETRY: transient (connection errors, timeouts, 408, 429, 502/503/504): the same request is
  tried again, with capped exponential backoff and full jitter, honouring Retry-After; a
  source with mirrors moves on to the next one once the retries are spent;
- FAIL_OVER: this registry is failing and retrying will not help (found down, a bad TLS
  certificate, any other 5xx): a mirror may still answer;
- DAMAGED: the bytes were damaged in transit (a digest or size mismatch, either leg): the blob
  is sent again whole, never stored;
- UNSUPPORTED: the registry does not do this (405, UNSUPPORTED): callers switch method or
  report it once;
- FINAL: an answer (404, auth, a bad request): returned or raised as is.

Every retry loop (requests in the transport, whole-blob transfers in the copy engine, resumed
blob reads in the client) uses one ``RetryPolicy``: its attempts, backoff and Retry-After cap.
A request's first try runs bare (``retried``): tenacity's loop starts only once a try failed in
a way worth retrying, so the common success path pays nothing for it.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass
from typing import TypeVar

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt

from regsync.backends.registry.observer import RequestObserver
from regsync.errors import (
    ConfigError,
    IntegrityError,
    RegistryError,
    TlsError,
    TransportError,
    UnreachableError,
)

T = TypeVar("T")

RETRYABLE_STATUS = frozenset({408, 429, 502, 503, 504})
# The destination saying the bytes it received do not match: damaged in transit.
TRANSIT_CODES = frozenset({"DIGEST_INVALID", "SIZE_INVALID", "BLOB_UPLOAD_INVALID"})


class Verdict(enum.Enum):
    RETRY = "retry"
    FAIL_OVER = "fail_over"
    DAMAGED = "damaged"
    UNSUPPORTED = "unsupported"
    FINAL = "final"


# What each loop retries: a request its transient failures; a whole-blob transfer those and
# damaged bytes too (a flaky proxy or a bad cache node, not the blob, is the usual cause).
REQUEST = frozenset({Verdict.RETRY})
TRANSFER = frozenset({Verdict.RETRY, Verdict.DAMAGED})


def status_verdict(status: int, codes: Collection[str] = ()) -> Verdict:
    """What an error status (with the registry's error codes) means."""
    if status in RETRYABLE_STATUS:
        return Verdict.RETRY
    if TRANSIT_CODES.intersection(codes):
        return Verdict.DAMAGED
    if status == 405 or "UNSUPPORTED" in codes:
        return Verdict.UNSUPPORTED
    return Verdict.FAIL_OVER if status >= 500 else Verdict.FINAL


def verdict(exc: BaseException) -> Verdict:
    """What an error raised by a backend means (anything not regsync's own is FINAL)."""
    if isinstance(exc, TlsError) or (isinstance(exc, UnreachableError) and exc.down):
        return Verdict.FAIL_OVER  # a bad certificate stays bad; a registry found down stays down
    if isinstance(exc, TransportError):
        return Verdict.RETRY
    if isinstance(exc, IntegrityError):
        return Verdict.DAMAGED
    if isinstance(exc, RegistryError):
        return status_verdict(exc.status, exc.codes)
    return Verdict.FINAL


def fails_over(exc: BaseException) -> bool:
    """Whether this error means "try the next mirror" rather than "that is the answer"."""
    return verdict(exc) in (Verdict.RETRY, Verdict.FAIL_OVER)


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5  # tries per request, including the first
    initial: float = 0.5  # first backoff ceiling; doubles per retry (full jitter below it)
    maximum: float = 10.0  # backoff cap
    max_retry_after: float = 60.0  # a longer Retry-After fails the request instead of hanging

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> RetryPolicy:
        """REGSYNC_RETRY_ATTEMPTS / _INITIAL / _MAX / _AFTER_MAX override the defaults."""
        return cls(
            attempts=int(_env_number(env, "REGSYNC_RETRY_ATTEMPTS", cls.attempts, minimum=1)),
            initial=_env_number(env, "REGSYNC_RETRY_INITIAL", cls.initial),
            maximum=_env_number(env, "REGSYNC_RETRY_MAX", cls.maximum),
            max_retry_after=_env_number(env, "REGSYNC_RETRY_AFTER_MAX", cls.max_retry_after),
        )

    def delay(self, retry: int) -> float:
        """Backoff before retry number ``retry`` (1-based): full jitter, uniform between 0
        and the capped exponential, so many clients retrying at once spread out."""
        return random.uniform(0, min(self.maximum, self.initial * 2.0 ** (retry - 1)))

    def may_retry(self, exc: BaseException, tries: int, on: frozenset[Verdict] = REQUEST) -> bool:
        """Whether ``exc``, ending try number ``tries``, is worth another try."""
        return verdict(exc) in on and tries < self.attempts

    def wait(self, exc: BaseException | None, retry: int) -> float:
        """Seconds before retry number ``retry`` after ``exc``: the registry's Retry-After
        when it sent one (raising ``exc`` when that is over ``max_retry_after``: failing beats
        hanging), else the backoff."""
        if isinstance(exc, RegistryError) and exc.retry_after is not None:
            if exc.retry_after > self.max_retry_after:
                raise exc
            return exc.retry_after
        return self.delay(retry)


@dataclass(frozen=True)
class Timeouts:
    """How long one try may take. A server that trickles (one byte before each idle timeout)
    is bounded too: a small request by ``total``, a streamed body by ``min_rate``."""

    connect: float = 15.0
    read: float = 60.0  # idle time between bytes: a stalled server fails, a slow one does not
    total: float = 300.0  # a whole small request (listing, manifest, token), body included
    min_rate: float = 1024.0  # bytes/s a streamed body must average over each window (0: off)
    rate_window: float = 60.0  # seconds of waiting on the server per window

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Timeouts:
        """REGSYNC_CONNECT_TIMEOUT / _READ_TIMEOUT / _REQUEST_TIMEOUT (seconds),
        REGSYNC_MIN_RATE (bytes/s) and REGSYNC_RATE_WINDOW (seconds) override the defaults."""
        return cls(
            connect=_env_number(env, "REGSYNC_CONNECT_TIMEOUT", cls.connect, minimum=0.01),
            read=_env_number(env, "REGSYNC_READ_TIMEOUT", cls.read, minimum=0.01),
            total=_env_number(env, "REGSYNC_REQUEST_TIMEOUT", cls.total, minimum=0.01),
            min_rate=_env_number(env, "REGSYNC_MIN_RATE", cls.min_rate),
            rate_window=_env_number(env, "REGSYNC_RATE_WINDOW", cls.rate_window, minimum=0.01),
        )

    def for_body(self, size: int) -> float | None:
        """The deadline of a request that sends ``size`` bytes: ``total``, plus the time the
        body takes at ``min_rate`` (so a large PATCH or PUT on a slow link is not cut off);
        None (no deadline) for a body when the minimum rate is switched off."""
        if not size:
            return self.total
        return self.total + size / self.min_rate if self.min_rate else None


def _env_number(env: Mapping[str, str], name: str, default: float, minimum: float = 0) -> float:
    text = env.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value >= minimum or value == float("inf"):
        raise ConfigError(f"environment {name}={text!r}: expected a number >= {minimum:g}")
    return value


env_number = _env_number  # public: other environment knobs are read the same way


def is_retryable(exc: BaseException) -> bool:
    return verdict(exc) is Verdict.RETRY


def retry_reason(exc: BaseException | None) -> str:
    """A low-cardinality label for a retry: the status, or ``connection``/``integrity``."""
    if isinstance(exc, RegistryError) and exc.status:
        return str(exc.status)
    if isinstance(exc, TransportError):
        return "connection"
    return type(exc).__name__.lower().removesuffix("error") if exc else "unknown"


def retrying(
    policy: RetryPolicy,
    observer: RequestObserver,
    registry: str,
    *,
    on: frozenset[Verdict] = REQUEST,
) -> AsyncRetrying:
    """The retry loop: the policy's attempts and wait, retrying the verdicts ``on``, each
    retry counted."""

    def wait(state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        return policy.wait(exc, state.attempt_number)

    def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        # Charged to the registry that failed: a copy's transfer retries a source's failure.
        failed = getattr(exc, "registry", "") or registry
        observer.request_retried(failed, retry_reason(exc))

    return AsyncRetrying(
        stop=stop_after_attempt(policy.attempts),
        wait=wait,
        retry=retry_if_exception(lambda exc: verdict(exc) in on),
        before_sleep=before_sleep,
        reraise=True,
    )


async def retried(
    policy: RetryPolicy,
    observer: RequestObserver,
    registry: str,
    attempt: Callable[[], Awaitable[T]],
    *,
    on: frozenset[Verdict] = REQUEST,
) -> T:
    """``attempt()``, retried as ``retrying`` retries. The first try runs outside the loop:
    building tenacity's objects cost more client CPU than the rest of a HEAD's own work, and
    almost every request succeeds at once. A failure worth retrying starts the loop, which
    takes that failure as its first try (counted, waited on, Retry-After honoured): the tries,
    waits and errors are the same as a loop from the start."""
    try:
        return await attempt()
    except Exception as exc:  # the verdict decides; BaseException (a cancel) goes up as is
        if not policy.may_retry(exc, 1, on):
            raise
        first: Exception | None = exc
    async for tried in retrying(policy, observer, registry, on=on):
        with tried:
            if first is not None:
                failed, first = first, None
                raise failed  # the first try's failure, as the loop's try 1
            return await attempt()
    raise AssertionError("unreachable: the loop returns or re-raises")  # pragma: no cover
