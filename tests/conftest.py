"""Shared fixtures: real registries on loopback, test certificates, regsync runs.

Tests that use a registry fixture are marked ``integration`` automatically (they still run by
default; ``-m "not integration"`` runs the unit tests alone). When such a test fails, the tail
of each of its registries' logs is attached to the report and their storage is kept; otherwise
the storage is removed at teardown.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # so tests can `from tests.support import ...`
    sys.path.insert(0, str(REPO_ROOT))

from tests.support import Registry, RegistryFactory, TlsFiles, make_tls  # noqa: E402

# The container smoke test runs on a built image only: `make image-test` builds one and names it
# in REGSYNC_IMAGE (scripts/image.sh); `make test` does not collect it.
collect_ignore = [] if os.environ.get("REGSYNC_IMAGE") else ["test_image.py"]

# Fixtures that start registry processes; a test using any of them is an integration test.
REGISTRY_FIXTURES = frozenset({"registry_factory", "source_registry", "dest_registry"})

_registries_key = pytest.StashKey[list[Registry]]()
_failed_key = pytest.StashKey[bool]()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if REGISTRY_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed:
        item.stash[_failed_key] = True
        for reg in item.stash.get(_registries_key, []):
            report.sections.append((f"registry {reg.host} log", reg.log_tail(60)))
    return report


@pytest.fixture
def registry_factory(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RegistryFactory]:
    """``registry_factory(**options) -> Registry``, started; all are stopped at teardown.

    Options are ``Registry``'s: ``delete_enabled``, ``htpasswd``, ``tls``, ``ca_file``,
    ``token_auth``, ``readonly``, ``extra_config``, ``log_level``.
    """
    started: list[Registry] = []
    request.node.stash[_registries_key] = started

    def factory(**options: Any) -> Registry:
        reg = Registry(tmp_path_factory.mktemp("registry"), **options)
        started.append(reg)
        return reg.start()

    yield factory
    for reg in started:
        reg.stop()
    if not request.node.stash.get(_failed_key, False):
        for reg in started:  # keep a failed test's storage and logs for a look
            shutil.rmtree(reg.storage, ignore_errors=True)


@pytest.fixture
def source_registry(registry_factory: RegistryFactory) -> Registry:
    """A plain-HTTP registry with deletes enabled, to seed as a sync source."""
    return registry_factory()


@pytest.fixture
def dest_registry(registry_factory: RegistryFactory) -> Registry:
    """A plain-HTTP registry with deletes enabled, to sync into."""
    return registry_factory()


@pytest.fixture(scope="session")
def tls_ca(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    """A trustme CA and a server cert for 127.0.0.1/localhost: ``.ca_pem``, ``.cert``, ``.key``."""
    return make_tls(tmp_path_factory.mktemp("tls"))


@pytest.fixture(autouse=True)
def _isolated_state_dir(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """Each test's regsync runs get their own content index (``REGSYNC_STATE_DIR``): hints
    learned from one test's registries never reach another's (ports are reused)."""
    state = tmp_path_factory.mktemp("state")
    monkeypatch.setenv("REGSYNC_STATE_DIR", str(state))
    return state
