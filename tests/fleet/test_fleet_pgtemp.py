"""The throw-away PostgreSQL cluster and the suite's rule for it: skipped only outside CI."""

from __future__ import annotations

import pytest

from appliance.fleet import pgtemp

from . import conftest


def test_without_server_binaries_it_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pgtemp, "pg_bin", lambda name: None)
    with pytest.raises(pgtemp.NoPostgres, match="no PostgreSQL server binaries"):
        pgtemp.start()


def test_a_missing_postgresql_fails_in_ci_and_skips_elsewhere(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(conftest, "IN_CI", True)
    with pytest.raises(pytest.fail.Exception, match="cannot run in CI: gone"):
        conftest._missing("gone")
    monkeypatch.setattr(conftest, "IN_CI", False)
    with pytest.raises(pytest.skip.Exception, match="gone"):
        conftest._missing("gone")


def test_databases_are_fresh_and_dropped(pg_cluster: pgtemp.Cluster) -> None:
    url = pg_cluster.create_database("probe")
    name = pgtemp.database_of(url)
    listed = "SELECT datname FROM pg_database"
    assert (name,) in pg_cluster.sql(listed)
    assert pg_cluster.sql("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'", name) == [
        (0,)
    ]
    pg_cluster.drop_database(url)
    assert (name,) not in pg_cluster.sql(listed)
