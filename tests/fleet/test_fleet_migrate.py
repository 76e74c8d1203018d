"""Schema versions: a database made by an older receiver is migrated in place, on SQLite and
PostgreSQL, to exactly the schema a new database gets, and keeps its rows."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher

from appliance.errors import ApplianceError
from appliance.fleet import pgtemp, store

DATA = Path(__file__).parent / "data"
T0 = 1_790_000_000.0
LEGACY_PASSWORD = "the one password of schema 1"
LEGACY_HASH = PasswordHasher(time_cost=1, memory_cost=1024).hash(LEGACY_PASSWORD)


def load_v1(url: str, backend: str) -> None:
    """The tables exactly as the receiver of schema 1 made them (its own DDL, dumped)."""
    ddl = (DATA / f"schema-v1.{backend}.sql").read_text()
    if backend == "sqlite":
        conn = sqlite3.connect(url.removeprefix("sqlite:///"))
        conn.executescript(ddl)
        conn.execute(
            "INSERT INTO units (id, name, token_hash, created_at, reasons, heartbeat_count, "
            "epoch, identify_request, last_sent_at) VALUES (1, 'press-3', ?, ?, '[]', 1, 0, 0, ?)",
            ("ab" * 32, T0, T0 + 180),
        )
        conn.execute(
            "INSERT INTO settings (key, value) VALUES ('operator_password', ?)", (LEGACY_HASH,)
        )
        conn.commit()
        conn.close()
        return
    import psycopg2

    conn = psycopg2.connect(url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(ddl)  # it sets an empty search_path for this connection only
        cur.execute(
            "INSERT INTO public.units (name, token_hash, created_at, reasons, heartbeat_count, "
            "epoch, identify_request, last_sent_at) "
            "VALUES ('press-3', %s, %s, '[]', 1, 0, false, %s)",
            ("ab" * 32, T0, T0 + 180),
        )
        cur.execute(
            "INSERT INTO public.settings (key, value) VALUES ('operator_password', %s)",
            (LEGACY_HASH,),
        )
    conn.close()


def schema(url: str) -> dict[str, Any]:
    """Every table's columns (name, type, null) and indexes (columns, unique), by name."""
    db = store.open_db(url)
    with db.connection_context():
        return {
            table: (
                sorted((c.name, c.data_type.lower(), c.null) for c in db.get_columns(table)),
                sorted((tuple(i.columns), i.unique) for i in db.get_indexes(table)),
            )
            for table in sorted(db.get_tables())
        }


@pytest.fixture
def fresh_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """A second empty database on the same backend."""
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'fresh.db'}"
    cluster: pgtemp.Cluster = request.getfixturevalue("pg_cluster")
    url = cluster.create_database("fresh")
    request.addfinalizer(lambda: cluster.drop_database(url))
    return url


def test_a_new_database_gets_the_current_version(fleet_url: str) -> None:
    store.open_db(fleet_url)
    with store.fleet_db.connection_context():
        assert store.get_setting(store.SCHEMA_KEY) == str(store.SCHEMA_VERSION)
        assert store.migrate(store.fleet_db.obj) == (store.SCHEMA_VERSION, store.SCHEMA_VERSION)


def test_a_version_1_database_is_migrated_keeping_its_rows(
    fleet_url: str, backend: str, fresh_url: str
) -> None:
    load_v1(fleet_url, backend)
    migrated = schema(fleet_url)  # open_db migrates
    assert migrated == schema(fresh_url)
    store.open_db(fleet_url)
    with store.fleet_db.connection_context():
        assert store.get_setting(store.SCHEMA_KEY) == str(store.SCHEMA_VERSION)
        unit = store.get_unit("press-3")
        assert unit.created_at == T0
        unit.last_sent_at = T0 + 181.25  # a time of day to the quarter second, kept exactly
        unit.save()
        assert store.get_unit("press-3").last_sent_at == T0 + 181.25
        # the one operator password of before is the admin account now
        admin = store.verify_password(LEGACY_PASSWORD, "admin")
        assert admin is not None and admin.role == "admin"
        assert store.get_setting("operator_password") is None


def test_a_database_newer_than_the_receiver_is_refused_untouched(fleet_url: str) -> None:
    store.open_db(fleet_url)
    with store.fleet_db.connection_context():
        store.Setting.update(value="99").where(store.Setting.key == store.SCHEMA_KEY).execute()
    with pytest.raises(ApplianceError) as exc:
        store.open_db(fleet_url)
    assert exc.value.field == "--db"
    assert "schema version 99, newer than this receiver's" in str(exc.value)
    with store.fleet_db.connection_context():
        assert store.get_setting(store.SCHEMA_KEY) == "99"
