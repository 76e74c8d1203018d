"""The fleet receiver's database (peewee): units, heartbeats, events, settings.

The models are bound to `fleet_db`, a proxy of the receiver's own (never the
unit's config/history databases), opened from a URL with playhouse.db_url:
`sqlite:///fleet.db` (relative to the working directory), `sqlite:////abs/path`
or a plain path, and `postgresql://user:pass@host/db` for a real fleet (same
models; needs the psycopg2 driver). One receiver process binds one database.

Heartbeats of one unit may arrive late and out of order (a unit's outbox
empties after an outage): every one is stored, a repeat of the same
Idempotency-Key is not, and the unit's state shown (health, revision,
firmware) is that of the heartbeat with the newest `sent_at`. `last_seen` is
the receiver's clock at the newest arrival: it says whether the unit is
reachable now, whatever its own clock says.

Events are unique per unit and event id within one numbering of the unit's
events: `unit_uid` (the id the unit sends) and `epoch`, which the receiver
bumps when a heartbeat newer than all others (by `sent_at`) comes with a lower
`seq`: a factory reset wipes the unit's history, so its heartbeat numbers and
event ids start again from 1, and without a new epoch its new events would be
taken for repeats of old ones and lost. (`events_cursor` is no such signal: the
agent legitimately sends it lower again after heartbeats were dropped.) The
cursor answered is the highest event id stored in the current numbering, never
beyond the heartbeat's own `events_cursor` (the agent refuses an
acknowledgement of events it did not send).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import peewee as pw
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from playhouse import db_url
from playhouse.migrate import SchemaMigrator
from playhouse.migrate import migrate as migrate_schema
from playhouse.pool import PooledDatabase

from appliance.errors import ApplianceError, BadRequest, Conflict, NotFound, Unauthorized
from appliance.fleet.validate import (
    KEEP,
    UNIT_NAME_RE,
    HeartbeatIn,
    UnitQuery,
    check_token,
    check_unit_name,
    token_hash,
)
from appliance.jsontext import shown

log = logging.getLogger("appliance.fleet")
fleet_db = pw.DatabaseProxy()

DEFAULT_DB = "sqlite:///fleet.db"
POOL_MAX = 64  # PostgreSQL connections per process, at most (one per thread in use)
MIN_PASSWORD = 10
_hasher = PasswordHasher()


class FleetModel(pw.Model):
    class Meta:
        database = fleet_db


class Unit(FleetModel):
    """A unit the fleet knows: its token (hashed), what it last said, what is asked of it."""

    name = pw.CharField(max_length=64, unique=True)
    token_hash = pw.CharField(max_length=64, unique=True)
    created_at = pw.DoubleField()
    unit_id = pw.CharField(max_length=100, null=True)  # the id the unit sends (a uuid)
    unit_name = pw.CharField(max_length=1000, null=True)  # its configured name
    site = pw.CharField(max_length=1000, null=True)
    serial = pw.CharField(max_length=1000, null=True)
    last_seen = pw.DoubleField(null=True)  # receiver clock, newest arrival
    last_sent_at = pw.DoubleField(null=True)  # unit clock, newest heartbeat
    last_seq = pw.BigIntegerField(null=True)
    last_gap = pw.DoubleField(null=True)  # seconds between its two newest heartbeats
    health = pw.CharField(max_length=32, null=True)
    reasons = pw.TextField(default="[]")
    revision_id = pw.BigIntegerField(null=True)
    revision_sha256 = pw.CharField(max_length=64, null=True)
    revision_state = pw.CharField(max_length=32, null=True)
    firmware = pw.CharField(max_length=100, null=True)
    heartbeat_count = pw.BigIntegerField(default=0)
    events_cursor = pw.BigIntegerField(null=True)  # of the newest heartbeat
    epoch = pw.IntegerField(default=0)  # numbering of its event ids (see module doc)
    interval_request = pw.DoubleField(null=True)
    interval_requested_at = pw.DoubleField(null=True)
    interval_requested_by = pw.CharField(max_length=200, null=True)
    identify_request = pw.BooleanField(default=False)
    identify_requested_at = pw.DoubleField(null=True)
    identify_requested_by = pw.CharField(max_length=200, null=True)
    identify_delivered_at = pw.DoubleField(null=True)
    audit = pw.TextField(null=True)  # the newest heartbeat's audit head (JSON), to compare
    assigned_site = pw.CharField(max_length=200, null=True)  # set by an operator

    class Meta:
        table_name = "units"

    @property
    def reason_list(self) -> list[dict[str, Any]]:
        return list(json.loads(self.reasons or "[]"))

    @property
    def site_shown(self) -> str | None:
        """The unit's site: the one an operator assigned, else the one it reports."""
        return self.assigned_site or self.site

    def as_dict(self, groups: list[str] | None = None) -> dict[str, Any]:
        if groups is None:
            groups = groups_of([self.id]).get(self.id, [])
        return {
            "name": self.name,
            "created_at": self.created_at,
            "site": self.site_shown,
            "groups": groups,
            "placement": {"site": self.assigned_site, "groups": groups},
            "unit": {
                "id": self.unit_id,
                "name": self.unit_name,
                "site": self.site,
                "serial": self.serial,
            },
            "last_seen": self.last_seen,
            "last_sent_at": self.last_sent_at,
            "last_seq": self.last_seq,
            "last_gap": self.last_gap,
            "health": {"state": self.health, "reasons": self.reason_list},
            "revision": {
                "id": self.revision_id,
                "sha256": self.revision_sha256,
                "state": self.revision_state,
            },
            "firmware": self.firmware,
            "heartbeats": self.heartbeat_count,
            "requests": {
                "interval": self.interval_request,
                "interval_requested_at": self.interval_requested_at,
                "interval_requested_by": self.interval_requested_by,
                "identify": self.identify_request,
                "identify_requested_at": self.identify_requested_at,
                "identify_requested_by": self.identify_requested_by,
                "identify_delivered_at": self.identify_delivered_at,
            },
        }


class UnitGroup(FleetModel):
    """A unit's membership of a group (a unit belongs to any number; a site is one)."""

    unit = pw.ForeignKeyField(Unit, backref="memberships", on_delete="CASCADE")
    name = pw.CharField(max_length=64)

    class Meta:
        table_name = "unit_groups"
        indexes = (
            (("unit", "name"), True),
            (("name",), False),
        )


class Heartbeat(FleetModel):
    """One heartbeat as received (the body kept whole)."""

    unit = pw.ForeignKeyField(Unit, backref="heartbeats", on_delete="CASCADE")
    received_at = pw.DoubleField(index=True)
    seq = pw.BigIntegerField()
    idempotency_key = pw.CharField(max_length=200)
    sent_at = pw.DoubleField()
    health = pw.CharField(max_length=32)
    revision_id = pw.BigIntegerField(null=True)
    revision_state = pw.CharField(max_length=32, null=True)
    firmware = pw.CharField(max_length=100, null=True)
    body = pw.TextField()

    class Meta:
        table_name = "heartbeats"
        indexes = (
            (("unit", "idempotency_key"), True),
            (("unit", "sent_at"), False),
        )

    def as_dict(self, with_body: bool = False) -> dict[str, Any]:
        body = json.loads(self.body)
        out = {
            "id": self.id,
            "received_at": self.received_at,
            "sent_at": self.sent_at,
            "seq": self.seq,
            "idempotency_key": self.idempotency_key,
            "health": {
                "state": self.health,
                "reasons": (body.get("health") or {}).get("reasons") or [],
            },
            "revision": {"id": self.revision_id, "state": self.revision_state},
            "firmware": self.firmware,
            "uptime_s": body.get("uptime_s"),
        }
        if with_body:
            out["body"] = body
        return out


class Event(FleetModel):
    """An event a unit reported (each stored once)."""

    unit = pw.ForeignKeyField(Unit, backref="events", on_delete="CASCADE")
    unit_uid = pw.CharField(max_length=100)
    epoch = pw.IntegerField(default=0)
    event_id = pw.BigIntegerField()
    at = pw.DoubleField()
    received_at = pw.DoubleField(index=True)
    kind = pw.CharField(max_length=100)
    severity = pw.CharField(max_length=16, default="info")
    source = pw.CharField(max_length=32, default="")
    message = pw.TextField()

    class Meta:
        table_name = "events"
        indexes = ((("unit", "unit_uid", "epoch", "event_id"), True),)

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.event_id,
            "at": self.at,
            "received_at": self.received_at,
            "kind": self.kind,
            "severity": self.severity,
            "source": self.source,
            "message": self.message,
        }


class Setting(FleetModel):
    """Receiver-wide values: the operator password hash, the session signing key."""

    key = pw.CharField(max_length=64, primary_key=True)
    value = pw.TextField()

    class Meta:
        table_name = "settings"


class LoginFailure(FleetModel):
    """Failed operator logins per address, for throttling across worker processes."""

    address = pw.CharField(max_length=64, index=True)
    at = pw.DoubleField()

    class Meta:
        table_name = "login_failures"


class OperatorSession(FleetModel):
    """A logged-in operator's session: the cookie carries a random id, the receiver keeps
    its SHA-256 with an expiry, so that logging out (or a new password) really ends it,
    whatever copy of the signed cookie is still around."""

    sid_hash = pw.CharField(max_length=64, primary_key=True)
    created_at = pw.DoubleField()
    expires_at = pw.DoubleField(index=True)
    address = pw.CharField(max_length=64)
    operator = pw.CharField(max_length=64, null=True, index=True)

    class Meta:
        table_name = "sessions"


class Operator(FleetModel):
    """A person who operates the fleet: a name, an argon2id password hash and a role."""

    name = pw.CharField(max_length=64, unique=True)
    password_hash = pw.CharField(max_length=200)
    role = pw.CharField(max_length=16)
    created_at = pw.DoubleField()

    class Meta:
        table_name = "operators"

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "role": self.role, "created_at": self.created_at}


class Job(FleetModel):
    """When a periodic job (pruning) is next due, shared by every worker process."""

    name = pw.CharField(max_length=64, primary_key=True)
    next_at = pw.DoubleField()

    class Meta:
        table_name = "jobs"


MODELS: list[type[pw.Model]] = [
    Unit,
    Heartbeat,
    Event,
    Setting,
    LoginFailure,
    OperatorSession,
    Job,
    UnitGroup,
    Operator,
]


# -- opening ----------------------------------------------------------------------


def normalize_url(url: str | None) -> str:
    """A database URL with an absolute SQLite path (a plain path means SQLite)."""
    url = (url or DEFAULT_DB).strip()
    if "://" not in url:
        return f"sqlite:///{Path(url).absolute()}"
    parsed = urlparse(url)
    if parsed.scheme.startswith("sqlite"):
        path = parsed.path[1:] if parsed.path.startswith("/") else parsed.path
        if not path or path == ":memory:":
            raise ApplianceError(
                f"{url!r} names no database file (sqlite:///fleet.db or sqlite:////abs/path)",
                field="--db",
            )
        if not Path(path).is_absolute():
            path = str(Path(path).absolute())
        query = f"?{parsed.query}" if parsed.query else ""
        return f"{parsed.scheme}:///{path}{query}"
    return url


def redact_url(url: str) -> str:
    """The URL without its password, for messages and logs."""
    parsed = urlparse(url)
    if parsed.password:
        netloc = parsed.netloc.replace(f":{parsed.password}@", ":***@")
        return parsed._replace(netloc=netloc).geturl()
    return url


def open_db(url: str | None) -> pw.Database:
    """Open (and create the tables of) the fleet database at `url`; bind the models to it."""
    url = normalize_url(url)
    scheme = urlparse(url).scheme
    params: dict[str, Any] = {}
    connect_url = url
    if scheme.startswith("sqlite"):
        path = Path(urlparse(url).path[1:])  # sqlite:////abs: the path after "///"
        if not path.parent.is_dir():
            raise ApplianceError(
                f"{redact_url(url)}: directory {path.parent} does not exist", field="--db"
            )
        params = {
            "pragmas": {
                "journal_mode": "wal",
                "synchronous": 1,
                "busy_timeout": 10000,
                "foreign_keys": 1,
            },
            "lock_type": "IMMEDIATE",
        }
    elif scheme.startswith("postgres"):
        # a pool per process: a new PostgreSQL connection costs a backend process and
        # ~4 ms, more than the rest of a heartbeat; each request still gets and returns one
        params = {"max_connections": POOL_MAX, "stale_timeout": 300, "timeout": 30}
        plain = scheme.replace("+pool", "")
        connect_url = url.replace(f"{scheme}://", f"{plain}+pool://", 1)
    try:
        db = db_url.connect(connect_url, **params)
    except RuntimeError:
        raise ApplianceError(
            f"unsupported database URL scheme {scheme!r} (use sqlite:///PATH or "
            "postgresql://USER:PASS@HOST/DB)",
            field="--db",
        )
    except ValueError as e:
        raise ApplianceError(str(e), field="--db")
    fleet_db.initialize(db)
    try:
        db.connect(reuse_if_open=True)
        migrate(db)
    except pw.ImproperlyConfigured as e:
        driver = "psycopg2" if "postgres" in scheme else "its driver"
        raise ApplianceError(
            f"{redact_url(url)}: the database needs {driver}, which is not installed "
            f"on this machine ({e})",
            field="--db",
        )
    except pw.DatabaseError as e:
        raise ApplianceError(f"cannot open {redact_url(url)}: {e}", field="--db")
    finally:
        if not db.is_closed():
            db.close()
        release_connections()
    return db


def release_connections() -> None:
    """Close the pool's idle connections (before gunicorn forks: a worker must not share
    its parent's socket to PostgreSQL)."""
    db = fleet_db.obj
    if isinstance(db, PooledDatabase):
        db.close_idle()


# -- schema versions ---------------------------------------------------------------------

SCHEMA_VERSION = 6
SCHEMA_KEY = "schema_version"  # in settings; a database without it is version 1
_MIGRATE_LOCK = 0x666C656574  # pg_advisory_xact_lock key: one migrating process at a time


def _double_precision(db: pw.Database) -> None:
    """1 -> 2: times as double precision on PostgreSQL. Version 1 had peewee's FloatField,
    which PostgreSQL makes a 4-byte REAL: epoch seconds kept 7 digits (1790000180 read back
    as 1790000128), so the newest heartbeat and late arrivals were misjudged there.
    (SQLite's REAL is 8 bytes: nothing to do.) Values already rounded stay rounded."""
    if not isinstance(db, pw.PostgresqlDatabase):
        return
    for model in MODELS:
        table = model._meta.table_name
        if not db.table_exists(table):
            continue
        columns = {c.name for c in db.get_columns(table)}
        for f in model._meta.sorted_fields:
            if isinstance(f, pw.DoubleField) and f.column_name in columns:
                db.execute_sql(
                    f'ALTER TABLE "{table}" ALTER COLUMN "{f.column_name}" TYPE double precision'
                )


# from version N to N+1; each runs in the one transaction of migrate()
def _jobs(db: pw.Database) -> None:
    """2 -> 3: the `jobs` table (made by migrate's create_tables): nothing to change."""


def _unit_audit(db: pw.Database) -> None:
    """3 -> 4: units.audit, the newest heartbeat's audit head (a heartbeat compares with
    it without reading the one before). Empty: the next heartbeat of each unit fills it."""
    migrator = SchemaMigrator.from_database(db)
    migrate_schema(migrator.add_column("units", "audit", Unit.audit))


def _placement(db: pw.Database) -> None:
    """4 -> 5: units.assigned_site; the `unit_groups` table (made by create_tables)."""
    migrator = SchemaMigrator.from_database(db)
    migrate_schema(migrator.add_column("units", "assigned_site", Unit.assigned_site))


def _operators(db: pw.Database) -> None:
    """5 -> 6: operator accounts with roles. The one operator password of before becomes
    the account `admin` (role admin, the same hash); its sessions end (they name no one)."""
    db.create_tables([Operator], safe=True)
    migrator = SchemaMigrator.from_database(db)
    # the column without its index: create_tables (after the migrations) makes that under
    # the model's index name (add_column would make a second one under another name)
    column = pw.CharField(max_length=64, null=True)
    migrate_schema(migrator.add_column("sessions", "operator", column))
    OperatorSession.delete().execute()
    legacy = get_setting("operator_password")
    if legacy:
        Operator.create(name=DEFAULT_OPERATOR, password_hash=legacy, role="admin", created_at=0)
        Setting.delete().where(Setting.key == "operator_password").execute()


MIGRATIONS: dict[int, Callable[[pw.Database], None]] = {
    1: _double_precision,
    2: _jobs,
    3: _unit_audit,
    4: _placement,
    5: _operators,
}


def migrate(db: pw.Database) -> tuple[int, int]:
    """Create the tables of a new database, or bring an older one to SCHEMA_VERSION, in
    one transaction (DDL is transactional on both SQLite and PostgreSQL: a failed step
    leaves the database as it was) -> (version found, 0 for a new one; version now).

    Two processes opening at once take turns: SQLite's BEGIN IMMEDIATE, PostgreSQL's
    advisory lock. A database newer than this receiver is refused, not touched.
    """
    with db.atomic():
        if isinstance(db, pw.PostgresqlDatabase):
            db.execute_sql("SELECT pg_advisory_xact_lock(%s)", (_MIGRATE_LOCK,))
        if not db.table_exists(Unit._meta.table_name):
            db.create_tables(MODELS)
            _set_setting(SCHEMA_KEY, str(SCHEMA_VERSION))
            return 0, SCHEMA_VERSION
        db.create_tables([Setting], safe=True)
        found = int(get_setting(SCHEMA_KEY) or 1)
        if found > SCHEMA_VERSION:
            raise ApplianceError(
                f"the database has schema version {found}, newer than this receiver's "
                f"({SCHEMA_VERSION}): upgrade the receiver",
                field="--db",
            )
        for version in range(found, SCHEMA_VERSION):
            log.info("fleet database: schema %d -> %d", version, version + 1)
            MIGRATIONS[version](db)
        db.create_tables(MODELS, safe=True)  # the tables a newer version added
        if found != SCHEMA_VERSION:
            _set_setting(SCHEMA_KEY, str(SCHEMA_VERSION))
    return found, SCHEMA_VERSION


def _set_setting(key: str, value: str) -> None:
    with fleet_db.atomic():  # update-or-insert: portable to PostgreSQL (no REPLACE there)
        if Setting.update(value=value).where(Setting.key == key).execute() == 0:
            Setting.create(key=key, value=value)


# -- units --------------------------------------------------------------------------


def new_token() -> str:
    """A unit token: 32 random bytes, URL-safe base64 (43 characters)."""
    return secrets.token_urlsafe(32)


def add_unit(
    name: str, token: str | None = None, *, replace: bool = False, now: float | None = None
) -> str:
    """Register unit `name` with `token` (or a new one, returned). `replace` rotates a token."""
    check_unit_name(name, "NAME")
    token = check_token(token, "token") if token is not None else new_token()
    digest = token_hash(token)
    with fleet_db.atomic():
        other = Unit.get_or_none(Unit.token_hash == digest)
        if other is not None and other.name != name:
            raise Conflict(f"this token already belongs to unit {other.name!r}", field="token")
        existing = Unit.get_or_none(Unit.name == name)
        if existing is not None:
            if not replace:
                raise Conflict(
                    f"unit {name!r} already exists (--replace gives it a new token)",
                    field="NAME",
                )
            existing.token_hash = digest
            existing.save()
        else:
            Unit.create(name=name, token_hash=digest, created_at=now or time.time())
    return token


def remove_unit(name: str) -> None:
    unit = get_unit(name)
    with fleet_db.atomic():
        Heartbeat.delete().where(Heartbeat.unit == unit).execute()
        Event.delete().where(Event.unit == unit).execute()
        UnitGroup.delete().where(UnitGroup.unit == unit).execute()
        unit.delete_instance()


def get_unit(name: str) -> Unit:
    # a name no unit can have is not looked up (PostgreSQL refuses a NUL in a parameter)
    unit = Unit.get_or_none(Unit.name == name) if UNIT_NAME_RE.match(name) else None
    if unit is None:
        raise NotFound(f"no unit named {shown(name)}", field="unit")
    return unit


def unit_by_token(token: str) -> Unit | None:
    return _unit_where("token_hash", token_hash(token))


# The heartbeat path's statements are SQL written once (in the database's parameter style)
# rather than peewee queries: peewee built the same text again on every call, a third of
# a heartbeat's CPU time. Both databases read `INSERT ... ON CONFLICT DO NOTHING`.


def _p() -> str:
    return str(fleet_db.obj.param)


def _is_pg() -> bool:
    return isinstance(fleet_db.obj, pw.PostgresqlDatabase)


def _unit_where(column: str, value: Any, lock: bool = False) -> Unit | None:
    sql = f'SELECT * FROM "units" WHERE "{column}" = {_p()}'
    if lock and _is_pg():
        sql += " FOR UPDATE"
    return next(iter(Unit.raw(sql, value)), None)


_HB_COLUMNS = (
    "unit_id",
    "received_at",
    "seq",
    "idempotency_key",
    "sent_at",
    "health",
    "revision_id",
    "revision_state",
    "firmware",
    "body",
)
_EV_COLUMNS = (
    "unit_id",
    "unit_uid",
    "epoch",
    "event_id",
    "at",
    "received_at",
    "kind",
    "severity",
    "source",
    "message",
)


def _insert_ignore(table: str, columns: tuple[str, ...], rows: list[tuple[Any, ...]]) -> int:
    """INSERT rows, skipping those a unique index already has -> how many went in."""
    p = _p()
    one = "(" + ", ".join([p] * len(columns)) + ")"
    names = ", ".join(f'"{c}"' for c in columns)
    sql = (
        f'INSERT INTO "{table}" ({names}) VALUES {", ".join([one] * len(rows))} '
        "ON CONFLICT DO NOTHING"
    )
    params = [v for row in rows for v in row]
    return int(fleet_db.execute_sql(sql, params).rowcount)


def units() -> list[Unit]:
    return list(Unit.select().order_by(Unit.name))


def groups_of(unit_ids: list[int]) -> dict[int, list[str]]:
    """The groups of these units (one query), sorted, by unit id."""
    out: dict[int, list[str]] = {}
    if not unit_ids:
        return out
    q = UnitGroup.select(UnitGroup.unit, UnitGroup.name).where(UnitGroup.unit.in_(unit_ids))
    for row in q.order_by(UnitGroup.name).tuples():
        out.setdefault(row[0], []).append(row[1])
    return out


@dataclass(frozen=True)
class UnitPage:
    units: list[Unit]
    groups: dict[int, list[str]]
    total: int
    query: UnitQuery

    @property
    def pages(self) -> int:
        if not self.query.per_page:
            return 1
        return max(1, -(-self.total // self.query.per_page))


def _contains(column: Any, needle: str) -> Any:
    """`needle` in `column`, ignoring ASCII case, as a plain substring (no LIKE wildcards)."""
    position = pw.fn.strpos if _is_pg() else pw.fn.instr
    return position(pw.fn.LOWER(pw.fn.COALESCE(column, "")), needle.lower()) > 0


def find_units(q: UnitQuery) -> UnitPage:
    """One page of the units that match `q` (by name), its total and its units' groups:
    three queries whatever the fleet's size."""
    where: list[Any] = []
    if q.search:
        where.append(
            _contains(Unit.name, q.search)
            | _contains(Unit.unit_name, q.search)
            | _contains(Unit.site, q.search)
            | _contains(Unit.assigned_site, q.search)
            | _contains(Unit.serial, q.search)
            | _contains(Unit.unit_id, q.search)
        )
    if q.site:
        where.append(pw.fn.COALESCE(Unit.assigned_site, Unit.site) == q.site)
    if q.group:
        members = UnitGroup.select(UnitGroup.unit).where(UnitGroup.name == q.group)
        where.append(Unit.id.in_(members))
    if q.health == "none":
        where.append(Unit.health.is_null())
    elif q.health:
        where.append(Unit.health == q.health)
    if q.firmware:
        where.append(Unit.firmware == q.firmware)
    if q.revision is not None:
        where.append(Unit.revision_id == q.revision)
    base = Unit.select()
    if where:
        base = base.where(*where)
    total = base.count()
    rows = base.order_by(Unit.name)
    if q.per_page:
        rows = rows.paginate(q.page, q.per_page)
    units_ = list(rows)
    return UnitPage(units_, groups_of([u.id for u in units_]), total, q)


def facets() -> dict[str, list[Any]]:
    """The values the list can be filtered by: sites, groups, firmware, revisions, health."""

    def distinct(expr: Any) -> list[Any]:
        q = Unit.select(expr.alias("v")).where(expr.is_null(False)).distinct()
        return sorted({row[0] for row in q.tuples()})

    return {
        "sites": distinct(pw.fn.COALESCE(Unit.assigned_site, Unit.site)),
        "groups": sorted({r[0] for r in UnitGroup.select(UnitGroup.name).distinct().tuples()}),
        "health": distinct(Unit.health),
        "firmware": distinct(Unit.firmware),
        "revisions": distinct(Unit.revision_id),
    }


def set_placement(name: str, site: str | None = KEEP, groups: list[str] | None = None) -> Unit:
    """Assign unit `name` a site ("" or None: back to the one it reports; KEEP: as is)
    and, when `groups` is given, exactly these groups; in one transaction."""
    unit = get_unit(name)
    with fleet_db.atomic():
        if site is not KEEP:
            Unit.update(assigned_site=site or None).where(Unit.id == unit.id).execute()
        if groups is not None:
            UnitGroup.delete().where(UnitGroup.unit == unit.id).execute()
            if groups:
                UnitGroup.insert_many([{"unit": unit.id, "name": g} for g in groups]).execute()
    return Unit.get_by_id(unit.id)


def heartbeats(unit: Unit, limit: int = 100) -> list[Heartbeat]:
    """The unit's heartbeats, newest `sent_at` first."""
    q = Heartbeat.select().where(Heartbeat.unit == unit)
    return list(q.order_by(Heartbeat.sent_at.desc(), Heartbeat.id.desc()).limit(limit))


def latest_heartbeat(unit: Unit) -> Heartbeat | None:
    found = heartbeats(unit, 1)
    return found[0] if found else None


def events(unit: Unit, limit: int = 100) -> list[Event]:
    """The unit's events, newest first (current incarnation's ids before older ones')."""
    q = Event.select().where(Event.unit == unit)
    return list(q.order_by(Event.at.desc(), Event.event_id.desc()).limit(limit))


# -- receiving -----------------------------------------------------------------------


@dataclass(frozen=True)
class Receipt:
    """What the receiver answers a unit."""

    duplicate: bool
    ack_cursor: int | None
    interval: float | None
    identify: bool

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "ack_cursor": self.ack_cursor,
            "interval": self.interval,
            "identify": self.identify,
        }
        if self.duplicate:
            out["duplicate"] = True
        return out


def record(unit: Unit, hb: HeartbeatIn, key: str, now: float) -> Receipt:
    """Store one heartbeat of `unit` (once per idempotency key) and compute the answer.

    One transaction of few statements (each a round trip to PostgreSQL): the unit's row
    is read and locked (SELECT ... FOR UPDATE on PostgreSQL; SQLite's BEGIN IMMEDIATE
    holds the write lock), the heartbeat inserted unless its key is there (ON CONFLICT
    DO NOTHING / INSERT OR IGNORE: no savepoint), its events inserted, the unit's row
    updated once with everything that changed, and the cursor read. The lock makes the
    comparisons in Python safe: a late heartbeat never overwrites a newer state, two
    heartbeats of one unit take turns.
    """
    p = _p()
    with fleet_db.atomic():
        current = _unit_where("id", unit.id, lock=True)
        if current is None:  # removed since its token was looked up
            raise Unauthorized("unknown unit token", field="Authorization")
        body = json.dumps(hb.body, separators=(",", ":"))
        row = (unit.id, now, hb.seq, key, hb.sent_at, hb.health, hb.revision_id)
        row += (hb.revision_state, hb.firmware, body)
        duplicate = _insert_ignore("heartbeats", _HB_COLUMNS, [row]) != 1
        changes: dict[str, Any] = {}
        if current.last_seen is None or current.last_seen < now:
            changes["last_seen"] = now
        epoch = current.epoch
        if not duplicate:
            newest = current.last_sent_at is None or hb.sent_at >= current.last_sent_at
            if newest:
                epoch = _new_state(current, hb, changes)
            _store_events(current, hb, epoch, now)
            if epoch == current.epoch:  # not across a factory reset
                _check_audit_head(current, hb, newest, epoch, now)
        identify = bool(current.identify_request)
        if identify:
            changes["identify_request"] = False
            changes["identify_delivered_at"] = now
        sets = [f'"{column}" = {p}' for column in changes]
        if not duplicate:
            sets.append('"heartbeat_count" = "heartbeat_count" + 1')
        if sets:
            fleet_db.execute_sql(
                f'UPDATE "units" SET {", ".join(sets)} WHERE "id" = {p}',
                [*changes.values(), unit.id],
            )
        stored = fleet_db.execute_sql(
            f'SELECT MAX("event_id") FROM "events" WHERE "unit_id" = {p} AND "unit_uid" = {p} '
            f'AND "epoch" = {p} AND "event_id" > 0',  # > 0: the unit's own, not the fleet's
            (unit.id, hb.unit_id, epoch),
        ).fetchone()[0]
    return Receipt(
        duplicate, ack_cursor(stored, hb.events_cursor), current.interval_request, identify
    )


def _newest_before(unit: Unit, sent_at: float) -> Heartbeat | None:
    return (
        Heartbeat.select()
        .where((Heartbeat.unit == unit.id) & (Heartbeat.sent_at < sent_at))
        .order_by(Heartbeat.sent_at.desc())
        .first()
    )


def audit_rewound(before: dict[str, Any] | None, after: dict[str, Any] | None) -> str | None:
    """What is wrong when a unit's audit head (`{head_id, head}` of two heartbeats, the
    earlier first) went back or changed in place; None when it only grew (or is missing:
    a unit from before the audit head)."""
    if not before or not after or before.get("head_id") is None:
        return None
    b_id, a_id = before["head_id"], after.get("head_id")
    if a_id is None or a_id < b_id:
        return f"went back from row {b_id} to {'no row' if a_id is None else f'row {a_id}'}"
    if a_id == b_id and after.get("head") != before.get("head"):
        return f"row {a_id} was rewritten"
    return None


def _check_audit_head(unit: Unit, hb: HeartbeatIn, newest: bool, epoch: int, now: float) -> None:
    """A unit's audit log cut or rewritten between two heartbeats is a critical fleet event
    (the unit's own chain cannot show rows cut off its end: this record can).

    The heartbeat before this one (by `sent_at`) is the unit's newest so far when this
    one is newer than all (its audit head is on the unit's row: no query); a late one is
    compared with the stored heartbeat before it."""
    if newest:
        if unit.last_sent_at is None or unit.last_sent_at >= hb.sent_at:
            return
        before_audit = json.loads(unit.audit) if unit.audit else None
        before_seq, before_sent = unit.last_seq, unit.last_sent_at
    else:
        before = _newest_before(unit, hb.sent_at)
        if before is None:
            return
        before_audit = json.loads(before.body).get("audit")
        before_seq, before_sent = before.seq, before.sent_at
    problem = audit_rewound(before_audit, hb.body.get("audit"))
    if problem is None:
        return
    log.warning("unit %s: the audit log %s", unit.name, problem)
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(before_sent))
    Event.insert(
        unit=unit.id,
        unit_uid=hb.unit_id,
        epoch=epoch,
        event_id=-hb.seq,  # the fleet's own events: below the unit's ids, one per heartbeat
        at=hb.sent_at,
        received_at=now,
        kind="fleet.audit_rewound",
        severity="critical",
        source="fleet",
        message=f"the unit's audit log {problem} since its heartbeat {before_seq} ({when} UTC)",
    ).on_conflict_ignore().execute()


def ack_cursor(stored_max: int | None, events_cursor: int | None) -> int | None:
    """The cursor to acknowledge: the highest event id stored, not beyond what the unit sent."""
    if stored_max is None or events_cursor is None:
        return stored_max
    return min(stored_max, events_cursor)


def _store_events(unit: Unit, hb: HeartbeatIn, epoch: int, now: float) -> None:
    rows = [
        (unit.id, hb.unit_id, epoch, e.id, e.at, now, e.kind, e.severity, e.source, e.message)
        for e in hb.events
    ]
    for i in range(0, len(rows), 100):
        _insert_ignore("events", _EV_COLUMNS, rows[i : i + 100])


def _new_state(current: Unit, hb: HeartbeatIn, changes: dict[str, Any]) -> int:
    """The unit's state follows `hb`, its newest heartbeat: add that to `changes` -> the
    event numbering (epoch) its events belong to."""
    gap = current.last_gap
    if current.last_sent_at is not None and hb.sent_at > current.last_sent_at:
        gap = hb.sent_at - current.last_sent_at
    epoch = current.epoch
    if current.last_seq is not None and hb.seq < current.last_seq:
        epoch += 1
        log.warning(
            "unit %s: heartbeat numbers went back from %s to %s (factory reset?): "
            "its event ids start a new numbering (%d)",
            current.name,
            current.last_seq,
            hb.seq,
            epoch,
        )
    audit = hb.body.get("audit")
    changes.update(
        {
            "unit_id": hb.unit_id,
            "unit_name": hb.unit_name,
            "site": hb.site,
            "serial": hb.serial,
            "last_sent_at": hb.sent_at,
            "last_seq": hb.seq,
            "last_gap": gap,
            "health": hb.health,
            "reasons": json.dumps(list(hb.reasons)),
            "revision_id": hb.revision_id,
            "revision_sha256": hb.revision_sha256,
            "revision_state": hb.revision_state,
            "firmware": hb.firmware,
            "events_cursor": hb.events_cursor,
            "epoch": epoch,
            "audit": json.dumps(audit, separators=(",", ":")) if audit else None,
        }
    )
    return epoch


# -- operator requests -------------------------------------------------------------------


def request_identify(name: str, actor: str, now: float) -> Unit:
    unit = get_unit(name)
    Unit.update(
        identify_request=True, identify_requested_at=now, identify_requested_by=actor
    ).where(Unit.id == unit.id).execute()
    return Unit.get_by_id(unit.id)


def request_interval(name: str, seconds: float | None, actor: str, now: float) -> Unit:
    """Ask the unit for another heartbeat interval; None withdraws the request."""
    unit = get_unit(name)
    Unit.update(
        interval_request=seconds, interval_requested_at=now, interval_requested_by=actor
    ).where(Unit.id == unit.id).execute()
    return Unit.get_by_id(unit.id)


# -- retention ---------------------------------------------------------------------------

PRUNE_BATCH = 2000  # rows per DELETE: each is its own short transaction


@dataclass(frozen=True)
class Pruned:
    """What one prune() call deleted; `done` is False when it stopped at its time budget
    with rows left (the caller comes back soon rather than in an hour)."""

    heartbeats: int
    events: int
    done: bool

    def as_dict(self) -> dict[str, Any]:
        return {"heartbeats": self.heartbeats, "events": self.events, "done": self.done}


def prune(
    before: float | None,
    keep_per_unit: int | None = None,
    *,
    batch: int = PRUNE_BATCH,
    budget_s: float | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> Pruned:
    """Delete heartbeats received before `before` and, per unit, all but its newest
    `keep_per_unit` (by `sent_at`); delete events received before `before` (None: no age
    limit) -> what went.

    In batches of `batch` rows, each its own transaction, so that neither SQLite's single
    writer nor a PostgreSQL row lock is held long and heartbeats keep arriving meanwhile;
    with `budget_s`, it stops after the batch that used the budget up (`done` False).

    The newest event of each unit incarnation stays: it carries the acknowledged
    cursor, and the cursor must never go back (the unit would send old events again).
    """
    started = clock()
    counts = {"hb": 0, "ev": 0}

    def spent() -> bool:
        return budget_s is not None and clock() - started >= budget_s

    def drain(key: str, model: type[FleetModel], ids: Any) -> bool:
        """Delete the rows `ids` selects, a batch at a time -> True when none are left."""
        while True:
            with fleet_db.atomic():
                gone = model.delete().where(model.id.in_(ids.limit(batch))).execute()
            counts[key] += gone
            if gone < batch:
                return True
            if spent():
                return False

    def result(done: bool) -> Pruned:
        return Pruned(counts["hb"], counts["ev"], done)

    if before is not None:
        old = Heartbeat.select(Heartbeat.id).where(Heartbeat.received_at < before)
        if not drain("hb", Heartbeat, old):
            return result(False)
    if keep_per_unit is not None:
        over = (
            Heartbeat.select(Heartbeat.unit)
            .group_by(Heartbeat.unit)
            .having(pw.fn.COUNT(Heartbeat.id) > keep_per_unit)
        )
        for unit_id in [row.unit_id for row in over]:
            oldest_kept = (
                Heartbeat.select(Heartbeat.sent_at, Heartbeat.id)
                .where(Heartbeat.unit == unit_id)
                .order_by(Heartbeat.sent_at.desc(), Heartbeat.id.desc())
                .offset(keep_per_unit - 1)
                .limit(1)
                .first()
            )
            if oldest_kept is None:
                continue
            older = Heartbeat.select(Heartbeat.id).where(
                (Heartbeat.unit == unit_id)
                & (
                    (Heartbeat.sent_at < oldest_kept.sent_at)
                    | ((Heartbeat.sent_at == oldest_kept.sent_at) & (Heartbeat.id < oldest_kept.id))
                )
            )
            if not drain("hb", Heartbeat, older) or spent():
                return result(False)
    if before is not None:
        newer = Event.alias("newer")
        newest = newer.select(pw.fn.MAX(newer.event_id)).where(
            (newer.unit == Event.unit)
            & (newer.unit_uid == Event.unit_uid)
            & (newer.epoch == Event.epoch)
        )
        old_events = Event.select(Event.id).where(
            (Event.received_at < before) & (Event.event_id < newest)
        )
        if not drain("ev", Event, old_events):
            return result(False)
    return result(True)


def claim_job(name: str, now: float, every_s: float) -> bool:
    """Whether this process should run job `name` now: at most one claim per `every_s`
    across every worker process (a conditional UPDATE: only one of them wins)."""
    Job.insert(name=name, next_at=now).on_conflict_ignore().execute()
    claimed = (
        Job.update(next_at=now + every_s).where((Job.name == name) & (Job.next_at <= now)).execute()
    )
    return claimed == 1


def reschedule_job(name: str, at: float) -> None:
    Job.update(next_at=at).where(Job.name == name).execute()


# -- size and counts -----------------------------------------------------------------------


def stats() -> dict[str, Any]:
    """The database's size on disk and what it holds (for `fleet stats`, /api/v1/stats)."""
    db = fleet_db.obj
    if isinstance(db, pw.PostgresqlDatabase):
        size = int(db.execute_sql("SELECT pg_database_size(current_database())").fetchone()[0])
        backend = "postgresql"
    else:
        pages = db.execute_sql("PRAGMA page_count").fetchone()[0]
        page_size = db.execute_sql("PRAGMA page_size").fetchone()[0]
        size = int(pages * page_size)
        wal = Path(db.database + "-wal")
        if wal.exists():
            size += wal.stat().st_size
        backend = "sqlite"
    hb = Heartbeat.select(
        pw.fn.COUNT(Heartbeat.id),
        pw.fn.MIN(Heartbeat.received_at),
        pw.fn.MAX(Heartbeat.received_at),
    ).tuples()[0]
    return {
        "backend": backend,
        "schema_version": int(get_setting(SCHEMA_KEY) or 1),
        "size_bytes": size,
        "units": Unit.select().count(),
        "heartbeats": int(hb[0]),
        "oldest_heartbeat": hb[1],
        "newest_heartbeat": hb[2],
        "events": Event.select().count(),
    }


# -- settings: operator password, session key ---------------------------------------------


def get_setting(key: str) -> str | None:
    row = Setting.get_or_none(Setting.key == key)
    return row.value if row else None


def secret_key() -> str:
    """The key Flask signs sessions with: made once, shared by every worker process."""
    Setting.insert(key="secret_key", value=secrets.token_hex(32)).on_conflict_ignore().execute()
    value = get_setting("secret_key")
    assert value is not None
    return value


ROLES: tuple[str, ...] = ("viewer", "operator", "admin")  # each may do what those before may
OPERATOR_RE = UNIT_NAME_RE
DEFAULT_OPERATOR = "admin"


def role_rank(role: str) -> int:
    return ROLES.index(role)


def check_role(role: Any, field: str = "role") -> str:
    if role not in ROLES:
        raise BadRequest(f"must be one of {', '.join(ROLES)}", field)
    return str(role)


def check_operator_name(name: Any, field: str = "name") -> str:
    if not isinstance(name, str) or not OPERATOR_RE.match(name):
        raise BadRequest(
            "must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit",
            field,
        )
    return name


def set_password(password: str, name: str = DEFAULT_OPERATOR, role: str | None = None) -> Operator:
    """Set operator `name`'s password (argon2id), making the account if it is new (with
    `role`, else admin for the first one, viewer after that) and changing its role when
    given; every session of that operator ends."""
    check_operator_name(name, "operator")
    if role is not None:
        check_role(role)
    if len(password) < MIN_PASSWORD:
        raise BadRequest(f"must be at least {MIN_PASSWORD} characters", "password")
    digest = _hasher.hash(password)
    with fleet_db.atomic():
        existing = Operator.get_or_none(Operator.name == name)
        if existing is None:
            first = not Operator.select().exists()
            Operator.create(
                name=name,
                password_hash=digest,
                role=role or ("admin" if first else "viewer"),
                created_at=time.time(),
            )
        else:
            changes: dict[Any, Any] = {Operator.password_hash: digest}
            if role is not None:
                changes[Operator.role] = role
            Operator.update(changes).where(Operator.name == name).execute()
        OperatorSession.delete().where(OperatorSession.operator == name).execute()
    return Operator.get(Operator.name == name)


def set_role(name: str, role: str) -> Operator:
    check_role(role)
    if Operator.update(role=role).where(Operator.name == name).execute() == 0:
        raise NotFound(f"no operator named {shown(name)}", field="name")
    return Operator.get(Operator.name == name)


def remove_operator(name: str) -> None:
    with fleet_db.atomic():
        if Operator.delete().where(Operator.name == name).execute() == 0:
            raise NotFound(f"no operator named {shown(name)}", field="name")
        OperatorSession.delete().where(OperatorSession.operator == name).execute()


def operators() -> list[Operator]:
    return list(Operator.select().order_by(Operator.name))


def has_operators() -> bool:
    return bool(Operator.select().exists())


def password_hash(name: str = DEFAULT_OPERATOR) -> str | None:
    row = Operator.get_or_none(Operator.name == name) if OPERATOR_RE.match(name) else None
    return row.password_hash if row else None


def verify_password(password: str, name: str = DEFAULT_OPERATOR) -> Operator | None:
    """The operator `name` when `password` is theirs, else None. An unknown name is hashed
    against a dummy too, so the answer's time does not say which names exist."""
    row = Operator.get_or_none(Operator.name == name) if OPERATOR_RE.match(name) else None
    digest = row.password_hash if row else _dummy_hash()
    try:
        _hasher.verify(digest, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return None
    return row


_dummy: list[str] = []


def _dummy_hash() -> str:
    if not _dummy:
        _dummy.append(_hasher.hash(secrets.token_hex(16)))
    return _dummy[0]


def note_login_failure(address: str, now: float) -> int:
    """Count a failed login (or one about to be checked) -> its row's id."""
    with fleet_db.atomic():
        row = LoginFailure.create(address=address[:64], at=now)
        prune_login_failures(now)
    return int(row.id)


def login_attempt(address: str, now: float, since: float, limit: int) -> int | None:
    """Count a login attempt before its password is checked: its row's id (take it back
    with `forget_login_failure` when the password is right), or None when `address` had
    `limit` failures since `since` (then nothing is counted).

    Counted first, then compared: attempts in flight at once each see the others' rows,
    so a burst of them gets no more password checks than the same attempts in a row
    (reading the count, hashing, then writing it let 26 of 40 concurrent guesses in)."""
    attempt = note_login_failure(address, now)
    if login_failures(address, since) > limit:
        forget_login_failure(attempt)
        return None
    return attempt


def forget_login_failure(attempt: int) -> None:
    LoginFailure.delete().where(LoginFailure.id == attempt).execute()


def login_failures(address: str, since: float) -> int:
    q = LoginFailure.select().where(
        (LoginFailure.address == address[:64]) & (LoginFailure.at >= since)
    )
    return q.count()


def clear_login_failures(address: str) -> None:
    LoginFailure.delete().where(LoginFailure.address == address[:64]).execute()


def prune_login_failures(now: float) -> int:
    """Forget failed logins older than a day (the throttle looks back minutes)."""
    return LoginFailure.delete().where(LoginFailure.at < now - 86400).execute()


# -- operator sessions ------------------------------------------------------------------------

SID_RE = re.compile(r"^[A-Za-z0-9_-]{43}$")  # secrets.token_urlsafe(32)


def _sid_hash(sid: str) -> str:
    return hashlib.sha256(sid.encode()).hexdigest()


def open_session(
    now: float, lifetime_s: float, address: str, operator: str = DEFAULT_OPERATOR
) -> str:
    """A new operator session valid for `lifetime_s` -> its id (for the signed cookie).

    Expired sessions are pruned here, so the table holds about one row per live login.
    """
    sid = secrets.token_urlsafe(32)
    with fleet_db.atomic():
        prune_sessions(now)
        OperatorSession.create(
            sid_hash=_sid_hash(sid),
            created_at=now,
            expires_at=now + lifetime_s,
            address=address[:64],
            operator=operator,
        )
    return sid


def session_operator(sid: Any, now: float) -> Operator | None:
    """The operator whose live session `sid` (from a cookie: any type) names, with their
    role as it is now; None for an ended, expired or unknown session."""
    if not isinstance(sid, str) or not SID_RE.match(sid):
        return None
    q = (
        Operator.select()
        .join(OperatorSession, on=(OperatorSession.operator == Operator.name))
        .where((OperatorSession.sid_hash == _sid_hash(sid)) & (OperatorSession.expires_at > now))
    )
    return q.first()


def session_valid(sid: Any, now: float) -> bool:
    return session_operator(sid, now) is not None


def end_session(sid: Any) -> None:
    """Log a session out (nothing happens for an unknown or malformed id)."""
    if isinstance(sid, str) and SID_RE.match(sid):
        OperatorSession.delete().where(OperatorSession.sid_hash == _sid_hash(sid)).execute()


def prune_sessions(now: float) -> int:
    return OperatorSession.delete().where(OperatorSession.expires_at <= now).execute()
