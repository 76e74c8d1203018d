"""The agent's tables in the history DB: the heartbeat outbox and the agent's cursors.

The outbox keeps heartbeats the fleet has not acknowledged yet, oldest first,
each with its idempotency key (the heartbeat's uuid) and the attempts made.
It is bounded (`fleet.outbox_max`): at the bound the *oldest* heartbeats are
dropped (the newest say most about the unit now), and how many were dropped is
counted in the cursor table and reported in the next heartbeat and in
agent.json. Events are not lost with a dropped heartbeat: they stay in the
history DB and the next heartbeat carries them again from the fleet's
acknowledged cursor.

Cursors (`Cursor`): small named integers the agent keeps across restarts: the
fleet's acknowledged event id, the last event id queued into a heartbeat, the
heartbeat sequence number, the drop counter, and one per syslog target and
webhook (the last event id delivered there).

`backoff_delay` is the pure retry schedule shared by the fleet sender and the
webhooks: exponential with "equal jitter" (half fixed, half random), capped.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import peewee as pw

from appliance.state.db import HistoryModel, history_db

FLEET_ACK = "fleet.ack"  # highest event id the fleet acknowledged
FLEET_QUEUED = "fleet.queued"  # highest event id put into a queued heartbeat
HEARTBEAT_SEQ = "heartbeat.seq"
OUTBOX_DROPPED = "outbox.dropped"


class OutboxItem(HistoryModel):
    """One heartbeat waiting for delivery."""

    key = pw.CharField(max_length=36, unique=True)  # Idempotency-Key: the heartbeat's uuid
    seq = pw.IntegerField()
    created_at = pw.FloatField()
    body = pw.TextField()  # the heartbeat as JSON, sent as is on every attempt
    events_from = pw.IntegerField(default=0)  # events with id > events_from ...
    events_to = pw.IntegerField(default=0)  # ... and <= events_to are in it
    attempts = pw.IntegerField(default=0)
    last_attempt_at = pw.FloatField(null=True)
    last_error = pw.TextField(null=True)

    class Meta:
        table_name = "agent_outbox"


class Cursor(HistoryModel):
    name = pw.CharField(max_length=200, primary_key=True)
    value = pw.IntegerField(default=0)
    updated_at = pw.FloatField(default=0.0)

    class Meta:
        table_name = "agent_cursor"


def get_cursor(name: str, default: int = 0) -> int:
    row = Cursor.get_or_none(Cursor.name == name)
    return default if row is None else int(row.value)


def has_cursor(name: str) -> bool:
    return Cursor.get_or_none(Cursor.name == name) is not None


def set_cursor(name: str, value: int, now: float | None = None) -> None:
    at = time.time() if now is None else now
    Cursor.insert(name=name, value=int(value), updated_at=at).on_conflict(
        conflict_target=[Cursor.name], update={Cursor.value: int(value), Cursor.updated_at: at}
    ).execute()


def add_to_cursor(name: str, delta: int, now: float | None = None) -> int:
    with history_db.atomic():
        value = get_cursor(name) + int(delta)
        set_cursor(name, value, now)
    return value


def next_seq(now: float | None = None) -> int:
    return add_to_cursor(HEARTBEAT_SEQ, 1, now)


def backoff_delay(failures: int, base: float = 5.0, cap: float = 600.0, rand: float = 0.5) -> float:
    """Seconds to wait after `failures` failures in a row (pure; `rand` in [0, 1)).

    The ceiling doubles per failure (base, 2 base, 4 base ... cap); the delay
    is half the ceiling plus a random half, so units that lost the fleet at
    the same moment do not all come back in the same second.
    """
    if failures <= 0:
        return 0.0
    ceiling = min(cap, base * 2.0 ** min(failures - 1, 62))
    r = min(max(rand, 0.0), 1.0)
    return ceiling / 2.0 + ceiling / 2.0 * r


@dataclass(frozen=True)
class Pushed:
    item: OutboxItem
    dropped: int  # dropped at the bound by this push
    dropped_from: int | None  # lowest events_from among the dropped (to resend their events)


class Outbox:
    """The bounded, ordered outbox of heartbeats (rows in the history DB)."""

    def __init__(self, bound: int) -> None:
        self.bound = bound

    def push(
        self,
        key: str,
        seq: int,
        body: dict[str, Any],
        *,
        events_from: int = 0,
        events_to: int = 0,
        now: float | None = None,
    ) -> Pushed:
        at = time.time() if now is None else now
        with history_db.atomic():
            item = OutboxItem.create(
                key=key,
                seq=seq,
                created_at=at,
                body=json.dumps(body, sort_keys=True, separators=(",", ":")),
                events_from=events_from,
                events_to=events_to,
            )
            dropped, lowest = self.enforce_bound(now=at)
        return Pushed(item, dropped, lowest)

    def enforce_bound(
        self, bound: int | None = None, now: float | None = None
    ) -> tuple[int, int | None]:
        """Drop the oldest items beyond the bound; (how many, lowest events_from dropped)."""
        limit = self.bound if bound is None else bound
        with history_db.atomic():
            excess = OutboxItem.select().count() - limit
            if excess <= 0:
                return 0, None
            victims = list(OutboxItem.select().order_by(OutboxItem.id).limit(excess))
            ids = [v.id for v in victims]
            OutboxItem.delete().where(OutboxItem.id.in_(ids)).execute()
            add_to_cursor(OUTBOX_DROPPED, len(ids), now)
            return len(ids), min(v.events_from for v in victims)

    def first(self) -> OutboxItem | None:
        return OutboxItem.select().order_by(OutboxItem.id).first()

    def items(self) -> list[OutboxItem]:
        return list(OutboxItem.select().order_by(OutboxItem.id))

    def count(self) -> int:
        return OutboxItem.select().count()

    def delivered(self, item: OutboxItem) -> None:
        OutboxItem.delete().where(OutboxItem.id == item.id).execute()

    def failed(self, item: OutboxItem, error: str, now: float | None = None) -> None:
        at = time.time() if now is None else now
        OutboxItem.update(
            attempts=OutboxItem.attempts + 1, last_attempt_at=at, last_error=error[:500]
        ).where(OutboxItem.id == item.id).execute()

    @staticmethod
    def dropped() -> int:
        return get_cursor(OUTBOX_DROPPED)


# The agent's tables (history DB): the heartbeat outbox and the senders' cursors;
# handed to `Store` by the processes that use them.
MODELS: tuple[type[pw.Model], ...] = (OutboxItem, Cursor)
