"""What a failure means (``registry.retry.verdict``) and the one policy every retry loop uses.

Pure: errors are built by hand, no sockets. The loops themselves (requests, whole-blob
transfers, resumed blob reads) are exercised against live servers in test_retry, test_faults
and test_outages.
"""

from __future__ import annotations

import pytest
from yarl import URL

from regsync.backends.registry.responses import error_from_response
from regsync.backends.registry.retry import (
    REQUEST,
    TRANSFER,
    RetryPolicy,
    Verdict,
    fails_over,
    is_retryable,
    status_verdict,
    verdict,
)
from regsync.errors import (
    IntegrityError,
    NotFoundError,
    RegistryError,
    TlsError,
    TransportError,
    UnreachableError,
    UnsupportedError,
)


@pytest.mark.parametrize(
    ("status", "codes", "expected"),
    [
        (408, (), Verdict.RETRY),
        (429, ("TOOMANYREQUESTS",), Verdict.RETRY),
        (502, (), Verdict.RETRY),
        (503, (), Verdict.RETRY),
        (504, (), Verdict.RETRY),
        (500, (), Verdict.FAIL_OVER),
        (501, (), Verdict.FAIL_OVER),
        (400, ("DIGEST_INVALID",), Verdict.DAMAGED),
        (400, ("SIZE_INVALID",), Verdict.DAMAGED),
        (400, ("BLOB_UPLOAD_INVALID",), Verdict.DAMAGED),
        (405, (), Verdict.UNSUPPORTED),
        (400, ("UNSUPPORTED",), Verdict.UNSUPPORTED),
        (400, ("MANIFEST_INVALID",), Verdict.FINAL),
        (401, ("UNAUTHORIZED",), Verdict.FINAL),
        (404, ("MANIFEST_UNKNOWN",), Verdict.FINAL),
    ],
)
def test_a_status_and_its_codes_have_one_meaning(
    status: int, codes: tuple[str, ...], expected: Verdict
) -> None:
    assert status_verdict(status, codes) is expected
    assert verdict(RegistryError("x", status=status, codes=codes)) is expected


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (TransportError("reset"), Verdict.RETRY),
        (UnreachableError("refused"), Verdict.RETRY),
        (UnreachableError("down", down=True), Verdict.FAIL_OVER),
        (TlsError("bad certificate"), Verdict.FAIL_OVER),
        (IntegrityError("digest mismatch"), Verdict.DAMAGED),
        (ValueError("a bug"), Verdict.FINAL),
    ],
)
def test_an_error_has_one_meaning(error: BaseException, expected: Verdict) -> None:
    assert verdict(error) is expected


def test_what_each_loop_retries_and_what_fails_over() -> None:
    damaged = RegistryError("x", status=400, codes=("DIGEST_INVALID",))
    assert verdict(damaged) in TRANSFER and verdict(damaged) not in REQUEST
    assert not is_retryable(damaged) and not fails_over(damaged)
    assert fails_over(RegistryError("x", status=503)) and is_retryable(TransportError("reset"))
    assert fails_over(TlsError("bad")) and not is_retryable(TlsError("bad"))
    assert not fails_over(NotFoundError("x", status=404))


def test_the_response_mapping_reads_unsupported_from_the_same_verdict() -> None:
    url = URL("http://registry.test/v2/a/manifests/sha256:00")
    by_status = error_from_response("r", "DELETE", url, 405, {}, b"")
    by_code = error_from_response(
        "r", "DELETE", url, 400, {}, b'{"errors":[{"code":"UNSUPPORTED"}]}'
    )
    retryable = error_from_response("r", "GET", url, 503, {}, b"")
    assert isinstance(by_status, UnsupportedError) and isinstance(by_code, UnsupportedError)
    assert type(retryable) is RegistryError and verdict(retryable) is Verdict.RETRY


def test_the_policy_counts_attempts_and_honours_retry_after() -> None:
    policy = RetryPolicy(attempts=3, initial=0.5, maximum=10.0, max_retry_after=5.0)
    reset = TransportError("reset")
    assert policy.may_retry(reset, 1) and policy.may_retry(reset, 2)
    assert not policy.may_retry(reset, 3)  # three tries in all, the first included
    damaged = IntegrityError("mismatch")
    assert not policy.may_retry(damaged, 1) and policy.may_retry(damaged, 1, TRANSFER)

    slow_down = RegistryError("x", status=429, retry_after=2.0)
    assert policy.wait(slow_down, 1) == 2.0
    too_long = RegistryError("x", status=429, retry_after=60.0)
    with pytest.raises(RegistryError) as info:
        policy.wait(too_long, 1)
    assert info.value is too_long
    assert all(0 <= policy.wait(reset, n) <= min(10.0, 0.5 * 2 ** (n - 1)) for n in (1, 2, 5))
