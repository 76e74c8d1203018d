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
        assert store.prune(T0 + 1) == (2, 1)
        left = sorted((e.epoch, e.event_id) for e in store.Event.select())
        assert left == [(0, 2), (1, 1)]
