"""The fleet database: concurrent repeats stored once, cursors, the session key, retention."""

from __future__ import annotations

import json
import threading

import pytest

from appliance.fleet import store
from appliance.fleet.validate import HeartbeatValidator

from .test_fleet_validate import T0, event, heartbeat


@pytest.fixture
def db(fleet_url: str) -> str:
    url = fleet_url
    store.open_db(url)
    return url


def parse(body: dict) -> store.HeartbeatIn:  # type: ignore[name-defined]
    return HeartbeatValidator(None).parse(json.dumps(body).encode())


def test_the_same_heartbeat_from_many_threads_is_stored_once(db: str) -> None:
    with store.fleet_db.connection_context():
        store.add_unit("press-3", now=T0)
        unit = store.get_unit("press-3")
    hb = parse(heartbeat(1, events=[event(1), event(2)]))
    receipts: list[store.Receipt] = []
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def post() -> None:
        try:
            start.wait()
            with store.fleet_db.connection_context():
                receipts.append(store.record(unit, hb, "same-key", T0))
        except BaseException as e:  # collected and asserted on below
            errors.append(e)

    threads = [threading.Thread(target=post) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors
    assert sorted(r.duplicate for r in receipts) == [False] + [True] * 7
    assert {r.ack_cursor for r in receipts} == {2}
    with store.fleet_db.connection_context():
        assert store.Heartbeat.select().count() == 1
        assert store.Event.select().count() == 2
        assert store.get_unit("press-3").heartbeat_count == 1


def test_ack_cursor() -> None:
    assert store.ack_cursor(None, 5) is None
    assert store.ack_cursor(7, None) == 7
    assert store.ack_cursor(7, 5) == 5
    assert store.ack_cursor(3, 5) == 3


def test_the_session_key_is_made_once(db: str) -> None:
    with store.fleet_db.connection_context():
        first = store.secret_key()
        assert store.secret_key() == first and len(first) == 64


def test_a_token_belongs_to_one_unit(db: str) -> None:
    token = "shared-token-0123456789"
    with store.fleet_db.connection_context():
        store.add_unit("a", token)
        with pytest.raises(store.Conflict) as exc:
            store.add_unit("b", token)
        assert exc.value.field == "token"


def test_prune_keeps_the_newest_event_of_each_numbering(db: str) -> None:
    with store.fleet_db.connection_context():
        store.add_unit("press-3", now=T0)
        unit = store.get_unit("press-3")
        store.record(unit, parse(heartbeat(5, events=[event(1), event(2)])), "k1", T0)
        store.record(unit, parse(heartbeat(1, sent_at=T0 + 900, events=[event(1)])), "k2", T0)
        assert store.Event.select().count() == 3  # the second numbering starts again at 1
        assert store.prune(T0 + 1) == store.Pruned(heartbeats=2, events=1, done=True)
        left = sorted((e.epoch, e.event_id) for e in store.Event.select())
        assert left == [(0, 2), (1, 1)]


def fill(name: str, seqs: list[int], received_at: float) -> store.Unit:
    """Unit `name` with one stored heartbeat per seq (sent_at T0 + 60 seq)."""
    store.add_unit(name, now=T0)
    unit = store.get_unit(name)
    for seq in seqs:
        body = heartbeat(seq, unit_id=f"00000000-0000-4000-8000-{len(name):012d}")
        store.record(unit, parse(body), f"{name}-{seq}", received_at)
    return unit


def kept(unit: store.Unit) -> list[int]:
    return sorted(h.seq for h in store.Heartbeat.select().where(store.Heartbeat.unit == unit))


def test_prune_by_age_deletes_in_batches(db: str) -> None:
    with store.fleet_db.connection_context():
        old = fill("old-unit", list(range(1, 26)), T0)
        new = fill("new-unit-x", [1, 2], T0 + 1000)
        pruned = store.prune(T0 + 500, None, batch=10)
        assert pruned == store.Pruned(heartbeats=25, events=0, done=True)
        assert kept(old) == [] and kept(new) == [1, 2]


def test_prune_keeps_the_newest_heartbeats_of_each_unit(db: str) -> None:
    with store.fleet_db.connection_context():
        # the outbox delivered 1..5 after 6..30: the newest by sent_at are kept, not by arrival
        busy = fill("busy", [*range(6, 31), *range(1, 6)], T0)
        quiet = fill("quiet", [1, 2, 3], T0)
        pruned = store.prune(None, 10, batch=4)
        assert (pruned.heartbeats, pruned.done) == (20, True)
        assert kept(busy) == list(range(21, 31)) and kept(quiet) == [1, 2, 3]
        assert store.prune(None, 10) == store.Pruned(0, 0, True)


def test_prune_stops_at_its_budget_and_finishes_later(db: str) -> None:
    ticks = iter(range(1000))
    with store.fleet_db.connection_context():
        unit = fill("press-3", list(range(1, 21)), T0)
        first = store.prune(T0 + 1, None, batch=5, budget_s=1, clock=lambda: next(ticks))
        assert first == store.Pruned(heartbeats=5, events=0, done=False)
        assert len(kept(unit)) == 15
        rest = store.prune(T0 + 1, None, batch=5)
        assert rest == store.Pruned(heartbeats=15, events=0, done=True)


def test_one_worker_claims_a_job(db: str) -> None:
    with store.fleet_db.connection_context():
        assert store.claim_job("prune", T0, 3600)
        assert not store.claim_job("prune", T0 + 10, 3600)  # another worker, same hour
        store.reschedule_job("prune", T0 + 20)
        assert store.claim_job("prune", T0 + 20, 3600)
        assert not store.claim_job("prune", T0 + 3000, 3600)
        assert store.claim_job("prune", T0 + 3620, 3600)


def test_stats_report_the_size_and_what_is_kept(db: str, backend: str) -> None:
    with store.fleet_db.connection_context():
        empty = store.stats()
        fill("press-3", [1, 2, 3], T0)
        found = store.stats()
    assert found["backend"] == backend and found["schema_version"] == store.SCHEMA_VERSION
    assert (found["units"], found["heartbeats"], found["events"]) == (1, 3, 0)
    assert found["oldest_heartbeat"] == found["newest_heartbeat"] == T0
    assert empty["heartbeats"] == 0 and empty["oldest_heartbeat"] is None
    assert found["size_bytes"] >= empty["size_bytes"] > 0
