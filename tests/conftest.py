"""Test configuration shared by the whole suite.

Services (PostgreSQL, Redis, Chromium) are started by ``tests/run.py`` (``make test``) and passed in
through the environment. A test that lacks its service fails under ``CI=true`` (see
``tests.fixtures.services.require_service``), and any skip at all fails a CI run.
"""
from __future__ import annotations

import os
import sys

import pytest

pytest_plugins = ["tests.fixtures.services", "tests.fixtures.emulator", "tests.fixtures.registry"]

IN_CI = os.environ.get("CI", "").lower() == "true"
_skipped: list[str] = []


def _close_connection_pools() -> None:
    from django.db import connections

    connections.close_all()
    for conn in connections.all(initialized_only=True):
        if getattr(conn, "pool", None) is not None:
            conn.close_pool()


@pytest.fixture(autouse=True)
def _fresh_connection_pool():
    """Each test ends with its own connection pool closed (PostgreSQL pools by default).

    Threads a test starts and leaves (``asyncio.to_thread``, a new event loop's executor) take
    their pooled connection with them; over a whole session that would drain the pool.
    """
    yield
    _close_connection_pools()


@pytest.fixture(autouse=True)
def _no_elo_window_claimed():
    """Each test starts with no online Elo drain window claimed by this process (the window a
    test claimed ends with its Redis keys or its in-process marks)."""
    services = sys.modules.get("leaderboard.services")
    if services is not None:
        services._elo_claimed_until[0] = 0.0
    yield


def pytest_runtest_logreport(report):
    if report.skipped:
        _skipped.append(report.nodeid)


def pytest_sessionfinish(session, exitstatus):
    if IN_CI and _skipped and session.exitstatus == 0:
        session.exitstatus = 1


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if _skipped:
        verdict = "FAILS the run under CI=true" if IN_CI else "reported here; under CI=true this fails"
        terminalreporter.write_sep("!", f"{len(_skipped)} test(s) skipped: {verdict}", red=True)
        for nodeid in _skipped:
            terminalreporter.write_line(f"  skipped: {nodeid}")
