"""The SQLite databases (peewee): config DB (revisions, audit) and history DB (events).

The config DB is small and written rarely: synchronous=FULL. The history DB takes
many small writes: WAL with synchronous=NORMAL. Both use BEGIN IMMEDIATE so that
the CLI, the web role and the net role serialise their writes instead of failing.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import peewee as pw

from appliance.errors import ApplianceError, AuditBroken, AuditFailed, PermissionDenied
from appliance.state import auditlog

config_db = pw.DatabaseProxy()
history_db = pw.DatabaseProxy()

log = logging.getLogger(__name__)


class ConfigModel(pw.Model):
    class Meta:
        database = config_db


class HistoryModel(pw.Model):
    class Meta:
        database = history_db


class Revision(ConfigModel):
    """An immutable configuration document and where it is in its life."""

    created_at = pw.FloatField()
    author = pw.TextField()
    comment = pw.TextField(default="")
    sha256 = pw.CharField(max_length=64, index=True)
    document = pw.TextField()  # canonical JSON of the validated Config
    source = pw.TextField()  # the text as a person wrote it (YAML, comments kept)
    state = pw.CharField(max_length=16, index=True)
    reason = pw.TextField(default="")  # why the state is what it is
    committed_at = pw.FloatField(null=True)
    committed_by = pw.TextField(null=True)
    confirm_deadline = pw.FloatField(null=True)
    auto_confirm = pw.BooleanField(default=False)
    confirmed_at = pw.FloatField(null=True)
    confirmed_by = pw.TextField(null=True)
    ended_at = pw.FloatField(null=True)
    rollback_of = pw.IntegerField(null=True)

    def as_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in self._meta.fields if k not in ("document", "source")}
        d["id"] = self.id
        return d


class Audit(ConfigModel):
    """Who did what, from where, with what result."""

    at = pw.FloatField(index=True)
    actor = pw.TextField()
    source = pw.TextField(default="cli")
    action = pw.TextField()
    target = pw.TextField(default="")
    result = pw.TextField(default="ok")
    detail = pw.TextField(default="")
    # the hash chain (state/auditlog.py): this row's fields and the previous row's digest
    digest = pw.CharField(max_length=64, default="")


class AuditAnchor(ConfigModel):
    """Where the audit log's hash chain starts once old rows were pruned: the last pruned
    row's id and digest (one row, id 1), and how many rows went in all."""

    last_id = pw.IntegerField()
    digest = pw.CharField(max_length=64)
    pruned_rows = pw.IntegerField(default=0)
    pruned_at = pw.FloatField()


class AuditProbe(ConfigModel):
    """One row the agent rewrites now and then: whether the config DB, where the audit log
    lives, still takes a committed write (`Store.probe_audit`)."""

    at = pw.FloatField()


class Event(HistoryModel):
    """Something a person should see: changes, drift, expiries, faults."""

    at = pw.FloatField(index=True)
    source = pw.CharField(max_length=16)
    kind = pw.CharField(max_length=48, index=True)
    severity = pw.CharField(max_length=8, default="info")
    message = pw.TextField()
    data = pw.TextField(default="{}")

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "at": self.at,
            "source": self.source,
            "kind": self.kind,
            "severity": self.severity,
            "message": self.message,
            "data": json.loads(self.data or "{}"),
        }


# The tables every process has: revisions and audit (config DB), events (history DB).
# The security events this process made lately (one a minute per action, actor, source).
SECURITY_REPEATS = auditlog.Repeats()
CORE_MODELS: tuple[type[pw.Model], ...] = (Revision, Audit, AuditAnchor, AuditProbe, Event)
Models = Iterable[type[pw.Model]]


class Store:
    """Both databases of one data directory, opened and bound to the models.

    The core tables always exist; the areas' own (`field.store.MODELS`,
    `agent.outbox.MODELS`, `web.accounts.MODELS`) are handed in by whoever composes the
    process, for the tables it reads or writes: the net role names none and so never
    loads the others' modules (argon2 with the accounts). Creating is idempotent, so
    every process that uses a table may name it.
    """

    def __init__(self, data_dir: Path, models: Models = ()) -> None:
        self.data_dir = Path(data_dir)
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o750)
        except PermissionError:
            raise PermissionDenied(f"cannot create data directory {self.data_dir}")
        except OSError as e:
            raise ApplianceError(f"cannot create data directory {self.data_dir}: {e.strerror}")
        if not os.access(self.data_dir, os.W_OK):
            raise PermissionDenied(f"data directory {self.data_dir} is not writable (root?)")
        self.config = pw.SqliteDatabase(
            str(self.data_dir / "config.db"),
            pragmas={"journal_mode": "wal", "synchronous": 2, "busy_timeout": 10000},
            lock_type="IMMEDIATE",
        )
        self.history = pw.SqliteDatabase(
            str(self.data_dir / "history.db"),
            pragmas={"journal_mode": "wal", "synchronous": 1, "busy_timeout": 10000},
            lock_type="IMMEDIATE",
        )
        config_db.initialize(self.config)
        history_db.initialize(self.history)
        try:
            self.config.connect(reuse_if_open=True)
            self.history.connect(reuse_if_open=True)
            self.ensure((*CORE_MODELS, *models))
        except pw.OperationalError as e:
            raise ApplianceError(f"cannot open the databases in {self.data_dir}: {e}")

    def ensure(self, models: Models) -> None:
        """Create the tables of `models` that do not exist yet, each in its database."""
        models = list(dict.fromkeys(models))
        unknown = [m for m in models if not issubclass(m, (ConfigModel, HistoryModel))]
        if unknown:
            raise TypeError(f"{unknown[0].__name__} is neither a ConfigModel nor a HistoryModel")
        self.config.create_tables([m for m in models if issubclass(m, ConfigModel)], safe=True)
        self.history.create_tables([m for m in models if issubclass(m, HistoryModel)], safe=True)
        if Audit in models:
            self._chain_audit()

    def _chain_audit(self) -> None:
        """Give an audit table written before the hash chain existed its chain: the rows
        it holds are chained as they are now, and vouched for from then on."""
        if any(c.name == "digest" for c in self.config.get_columns("audit")):
            return
        with self.config.atomic():  # BEGIN IMMEDIATE: one process upgrades, the others see it
            if any(c.name == "digest" for c in self.config.get_columns("audit")):
                return
            self.config.execute_sql(
                "ALTER TABLE audit ADD COLUMN digest VARCHAR(64) NOT NULL DEFAULT ''"
            )
            prev = auditlog.GENESIS
            for row in Audit.select().order_by(Audit.id):
                prev = auditlog.link(prev, row.id, row.__data__)
                Audit.update(digest=prev).where(Audit.id == row.id).execute()

    def close(self) -> None:
        self.config.close()
        self.history.close()

    # -- events and audit: the two records every change leaves -------------

    def event(
        self,
        kind: str,
        message: str,
        *,
        source: str,
        severity: str = "info",
        data: dict[str, Any] | None = None,
        at: float | None = None,
    ) -> Event:
        with self.history.atomic():
            return Event.create(
                at=time.time() if at is None else at,
                source=source,
                kind=kind,
                severity=severity,
                message=message,
                data=json.dumps(data or {}, sort_keys=True, default=str),
            )

    def audit(
        self,
        actor: str,
        action: str,
        *,
        target: str = "",
        result: str = "ok",
        detail: str = "",
        source: str = "cli",
        at: float | None = None,
    ) -> Audit:
        fields = auditlog.normalise(
            {
                "at": time.time() if at is None else at,
                "actor": actor,
                "source": source,
                "action": action,
                "target": target,
                "result": result,
                "detail": detail,
            }
        )
        # BEGIN IMMEDIATE: the last row read here is still the last when this one is added.
        # Inside a caller's transaction this is a savepoint: a failure here raises
        # AuditFailed, and the caller's change rolls back with it.
        try:
            with self.config.atomic():
                last_id, prev = self.audit_head() or (0, auditlog.GENESIS)
                row_id = last_id + 1
                digest = auditlog.link(prev, row_id, fields)
                row = Audit.create(id=row_id, digest=digest, **fields)
        except (pw.OperationalError, pw.DatabaseError, OSError) as e:
            log.critical("cannot write the audit row for %s by %s: %s", action, actor, e)
            raise AuditFailed(
                f"the audit log cannot be written ({e}): {action} was not done"
            ) from None
        if fields["result"] != "ok" and fields["action"] in auditlog.SECURITY_ACTIONS:
            self._security_event(fields)
        return row

    def _security_event(self, f: dict[str, Any]) -> None:
        """A failed log-on or a refused request as an event too (syslog, fleet, webhooks),
        at most one a minute per action, actor and source (`auditlog.Repeats`)."""
        held = SECURITY_REPEATS.offer((f["action"], f["actor"], f["source"]), f["at"])
        if held is None:
            return
        where = f["source"]
        what = f"{f['action']} {f['result']} for {f['actor']} from {where}"
        if f["target"]:
            what += f": {f['target']}"
        if f["detail"]:
            what += f" ({f['detail']})"
        if held:
            what += f"; {held} more like it in the last {auditlog.REPEAT_WINDOW_S:g} s"
        self.event(
            f"security.{f['action']}",
            what,
            source=where.split(":", 1)[0][:16] or "audit",
            severity="warning",
            data={"actor": f["actor"], "from": where, "result": f["result"], "repeats": held},
            at=f["at"],
        )

    def probe_audit(self, now: float) -> str | None:
        """Commit one small write to the config DB (where the audit log lives): None when
        it took it, else why not (disk full, read-only, I/O error)."""
        try:
            with self.config.atomic():
                AuditProbe.insert(id=1, at=now).on_conflict_replace().execute()
        except (pw.OperationalError, pw.DatabaseError, OSError) as e:
            return str(e) or type(e).__name__
        return None

    def audit_head(self) -> tuple[int, str] | None:
        """The last audit row's id and digest: what the heartbeat carries off the unit, so
        that rows cut off the end or rewritten show against an earlier record of it."""
        last = Audit.select(Audit.id, Audit.digest).order_by(Audit.id.desc()).first()
        return (last.id, last.digest) if last else None

    def verify_audit(self) -> auditlog.Verdict:
        """The audit log's hash chain checked from its first row (`auditlog.verify`)."""
        # one read transaction: a snapshot (WAL), writers go on meanwhile
        with self.config.atomic("DEFERRED"):
            return self._verify_chain()

    def _verify_chain(self, upto: int | None = None) -> auditlog.Verdict:
        """The chain from the anchor (or row 1) up to row `upto` (default: the last)."""
        anchor = AuditAnchor.get_or_none(AuditAnchor.id == 1)
        q = Audit.select().order_by(Audit.id)
        if upto is not None:
            q = q.where(Audit.id <= upto)
        return auditlog.verify(
            ((a.id, a.__data__, a.digest) for a in q.iterator()),
            (anchor.last_id, anchor.digest) if anchor else None,
        )

    def prune_audit(self, *, max_rows: int, keep_s: float, now: float) -> int:
        """Delete the oldest audit rows beyond `max_rows` (down to 90 % of it), but never
        one younger than `keep_s` seconds; the chain goes on from an anchor (the last row
        deleted). Returns how many went. Rows whose chain is broken are never pruned (the
        anchor would vouch for them): AuditBroken names the break, and nothing goes."""
        with self.config.atomic():
            rows = Audit.select().count()
            ages = Audit.select(Audit.id, Audit.at).order_by(Audit.id).tuples().iterator()
            upto = auditlog.prune_upto(ages, rows, max_rows=max_rows, keep_after=now - keep_s)
            if upto is None:
                return 0
            verdict = self._verify_chain(upto)
            if not verdict.intact:
                raise AuditBroken(f"not pruned: {verdict.line().removeprefix('audit log: ')}")
            gone = Audit.delete().where(Audit.id <= upto).execute()
            anchor = AuditAnchor.get_or_none(AuditAnchor.id == 1)
            total = (anchor.pruned_rows if anchor else 0) + gone
            AuditAnchor.insert(
                id=1, last_id=upto, digest=verdict.head, pruned_rows=total, pruned_at=now
            ).on_conflict_replace().execute()
            return gone

    def events(self, limit: int = 50, kind_prefix: str | None = None) -> list[Event]:
        q = Event.select().order_by(Event.id.desc()).limit(limit)
        if kind_prefix:
            q = q.where(Event.kind.startswith(kind_prefix))
        return list(q)


# -- one Store per process ------------------------------------------------------------
# The models are bound to the databases through module-wide proxies, so a second Store
# in a process re-binds them: a Store still held elsewhere in the process would then open
# its transactions (BEGIN IMMEDIATE) on one connection and write through the other, and
# wait for itself until SQLite's busy timeout. Roles and helpers that may run in a
# process which already has a Store share it through these functions.


def bound_store(data_dir: Path) -> Store | None:
    """A Store over the databases the models are bound to now, if they are `data_dir`'s."""
    config, history = config_db.obj, history_db.obj
    if not (isinstance(config, pw.SqliteDatabase) and isinstance(history, pw.SqliteDatabase)):
        return None
    if Path(history.database).resolve() != (Path(data_dir) / "history.db").resolve():
        return None
    store = Store.__new__(Store)
    store.data_dir = Path(data_dir)
    store.config, store.history = config, history
    return store


def open_store(data_dir: Path, models: Models = ()) -> tuple[Store, bool]:
    """The process's Store for `data_dir` if it has one (with the tables of `models`),
    else a new one; and whether the caller opened it (and so closes it)."""
    shared = bound_store(data_dir)
    if shared is None:
        return Store(data_dir, models), True
    shared.ensure(models)
    return shared, False


@contextlib.contextmanager
def borrowed_store(data_dir: Path, models: Models = ()) -> Iterator[Store]:
    """The process's Store for `data_dir`, or a new one that is closed afterwards, the
    models bound back to what they were bound to before."""
    shared = bound_store(data_dir)
    if shared is not None:
        shared.ensure(models)
        yield shared
        return
    before = (config_db.obj, history_db.obj)
    store = Store(data_dir, models)
    try:
        yield store
    finally:
        store.close()
        if before[0] is not None and before[1] is not None:
            config_db.initialize(before[0])
            history_db.initialize(before[1])
