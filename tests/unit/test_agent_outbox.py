"""The heartbeat outbox: order, the bound and its drop counter, cursors, the back-off schedule."""

from __future__ import annotations

import json

import pytest

from appliance.agent.outbox import (
    OUTBOX_DROPPED,
    Outbox,
    OutboxItem,
    add_to_cursor,
    backoff_delay,
    get_cursor,
    has_cursor,
    next_seq,
    set_cursor,
)
from appliance.state.db import Store


def push(box: Outbox, n: int, start: int = 1) -> None:
    for seq in range(start, start + n):
        box.push(f"00000000-0000-4000-8000-{seq:012d}", seq, {"seq": seq}, now=1000.0 + seq)


def test_items_come_out_in_the_order_they_went_in(store: Store) -> None:
    box = Outbox(bound=10)
    push(box, 5)
    assert [i.seq for i in box.items()] == [1, 2, 3, 4, 5]
    first = box.first()
    assert first is not None and first.seq == 1
    box.delivered(first)
    assert [i.seq for i in box.items()] == [2, 3, 4, 5]
    assert box.count() == 4


def test_the_bound_drops_the_oldest_and_counts_them(store: Store) -> None:
    box = Outbox(bound=10)
    push(box, 10)
    assert box.dropped() == 0
    pushed = box.push("00000000-0000-4000-8000-000000000011", 11, {"seq": 11}, events_from=7)
    assert pushed.dropped == 1
    assert pushed.dropped_from == 0  # the dropped one's events_from
    push(box, 3, start=12)
    assert [i.seq for i in box.items()] == list(range(5, 15))
    assert box.dropped() == 4
    assert get_cursor(OUTBOX_DROPPED) == 4


def test_a_smaller_bound_applies_at_once(store: Store) -> None:
    push(Outbox(bound=20), 15)
    dropped, lowest = Outbox(bound=10).enforce_bound()
    assert (dropped, lowest) == (5, 0)
    assert [i.seq for i in Outbox(10).items()] == list(range(6, 16))


def test_body_and_key_are_kept_verbatim(store: Store) -> None:
    box = Outbox(bound=10)
    box.push("k-1", 1, {"b": 2, "a": [1, "é"]}, events_from=3, events_to=9)
    item = box.first()
    assert item is not None
    assert item.key == "k-1"
    assert json.loads(item.body) == {"a": [1, "é"], "b": 2}
    assert item.body.startswith('{"a":[1,')  # compact, sorted: the same bytes each attempt
    assert (item.events_from, item.events_to) == (3, 9)


def test_failed_counts_attempts(store: Store) -> None:
    box = Outbox(bound=10)
    push(box, 1)
    item = box.first()
    assert item is not None
    box.failed(item, "connection refused", now=5.0)
    box.failed(item, "x" * 2000, now=6.0)
    again = OutboxItem.get_by_id(item.id)
    assert again.attempts == 2
    assert again.last_attempt_at == 6.0
    assert len(again.last_error) == 500


def test_keys_are_unique(store: Store) -> None:
    import peewee

    box = Outbox(bound=10)
    box.push("same", 1, {})
    with pytest.raises(peewee.IntegrityError):
        box.push("same", 2, {})


def test_cursors(store: Store) -> None:
    assert get_cursor("x") == 0
    assert get_cursor("x", 7) == 7
    assert not has_cursor("x")
    set_cursor("x", 5)
    set_cursor("x", 9)
    assert has_cursor("x") and get_cursor("x") == 9
    assert add_to_cursor("x", 3) == 12
    assert next_seq() == 1
    assert next_seq() == 2


# -- back-off ------------------------------------------------------------------------


def test_backoff_doubles_and_is_capped() -> None:
    lows = [backoff_delay(n, base=5, cap=600, rand=0.0) for n in range(1, 10)]
    highs = [backoff_delay(n, base=5, cap=600, rand=1.0) for n in range(1, 10)]
    assert lows == [2.5, 5, 10, 20, 40, 80, 160, 300, 300]
    assert highs == [5, 10, 20, 40, 80, 160, 320, 600, 600]


def test_backoff_jitter_spreads_within_the_window() -> None:
    values = [backoff_delay(4, base=5, cap=600, rand=r / 10) for r in range(10)]
    assert values == sorted(values)
    assert len(set(values)) == 10
    assert all(20 <= v < 40 for v in values)


def test_backoff_edges() -> None:
    assert backoff_delay(0) == 0.0
    assert backoff_delay(-3) == 0.0
    assert backoff_delay(10_000, base=1, cap=60, rand=0.5) == 45.0  # no overflow
    assert backoff_delay(1, base=2, cap=100, rand=7) == 2.0  # rand clamped to [0, 1]
