"""Shared fixtures: a clean AWS environment for every test, the asyncio backend, and one emulator.

The emulator runs once per session on 127.0.0.1 (port 0) in a background thread; ``emu`` hands it to
a test freshly reset (counters, quotas, cache, scripts and faults back to the start), so tests stay
independent without paying a server start each. Under pytest-xdist (``make test``) every worker is its
own session, so each worker has its own emulator on its own free port and no test shares one.

``tests/unit`` holds the tests of pure parts (no emulator, no subprocess: ``make test-fast``);
``tests/integration`` the ones that drive the engine, the CLI or the emulator over loopback.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

from runner import catalog
from runner.emulator import EmulatorConfig, EmulatorThread

# Tests check behaviour, not speed: on a loaded two-core machine (CI, parallel workers) Hypothesis's
# timing checks (a per-example deadline, "input generation is slow") failed tests that were right.
settings.register_profile("bedrock-batch", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("bedrock-batch")


@pytest.fixture(autouse=True)
def fixture_clean_aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test reads real credentials or config, and none can reach the instance metadata service."""
    for name in list(os.environ):
        if name.startswith("AWS_") or name == catalog.CATALOG_ENV:
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)


@pytest.fixture(autouse=True)
def fixture_builtin_catalog() -> Iterator[None]:
    """Every test starts and ends with the built-in catalogue (a test may activate a user catalogue)."""
    catalog.reset()
    yield
    catalog.reset()


@pytest.fixture(name="umask_022")
def fixture_umask_022() -> Iterator[None]:
    """The usual umask (group and others may read what is created), put back after the test."""
    old = os.umask(0o022)
    yield
    os.umask(old)


@pytest.fixture(name="anyio_backend")
def fixture_anyio_backend() -> str:
    """aioboto3 runs on asyncio only."""
    return "asyncio"


@pytest.fixture(name="emulator", scope="session")
def fixture_emulator() -> Iterator[EmulatorThread]:
    """One emulator for the session, on loopback and a free port."""
    with EmulatorThread(EmulatorConfig(), host="127.0.0.1", port=0) as emulator:
        yield emulator


@pytest.fixture(name="emu")
def fixture_emu(emulator: EmulatorThread) -> Iterator[EmulatorThread]:
    """The session emulator, reset before and after the test (faults included)."""
    emulator.reset()
    yield emulator
    emulator.reset()
