"""The fleet suite's databases: every test that takes `fleet_url` runs on SQLite and on
PostgreSQL, each time in a fresh empty database.

PostgreSQL is one throw-away cluster per session (appliance/fleet/pgtemp.py: initdb +
pg_ctl in a temporary directory, its own socket, torn down at the end), started only when
a PostgreSQL test runs; each test gets a new database in it (CREATE DATABASE, ~40 ms) that
is dropped afterwards. Where PostgreSQL or psycopg2 is missing the PostgreSQL half is
skipped, except in CI (CI=true), where that is a failure: `scripts/setup-host --test`
installs both, so a skip there would hide a broken install step.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.fleet import pgtemp

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
BACKENDS = ("sqlite", "postgresql")


def _missing(why: str) -> None:
    if IN_CI:
        pytest.fail(f"PostgreSQL tests cannot run in CI: {why}", pytrace=False)
    pytest.skip(why)


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[pgtemp.Cluster]:
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        _missing("psycopg2 is not installed (scripts/setup-host --test: python3-psycopg2)")
    try:
        cluster = pgtemp.start()
    except pgtemp.NoPostgres as e:
        _missing(f"{e} (scripts/setup-host --test installs postgresql)")
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def pg_url(pg_cluster: pgtemp.Cluster) -> Iterator[str]:
    """A fresh, empty PostgreSQL database (dropped after the test)."""
    url = pg_cluster.create_database()
    try:
        yield url
    finally:
        pg_cluster.drop_database(url)


@pytest.fixture(params=BACKENDS)
def fleet_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty fleet database URL: SQLite in tmp_path, then a PostgreSQL one."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'fleet.db'}"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def backend(fleet_url: str) -> str:
    """ "sqlite" or "postgresql": which database this run of the test has."""
    return "postgresql" if fleet_url.startswith("postgresql") else "sqlite"
