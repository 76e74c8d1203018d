"""Publish policies and deadbands: which polled values are stored in history."""

from __future__ import annotations

import math
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from appliance.config.field import Device, Tag
from appliance.field.publish import Policy, Publisher, changed


def device(*tags: Tag, name: str = "plc1") -> Device:
    return Device(name=name, protocol="modbus-tcp", address="192.168.50.10:502", tags=list(tags))


def tag(name: str = "temp", **kw: Any) -> Tag:
    return Tag(name=name, table="holding", address=kw.pop("address", 10), type="float32", **kw)


def offers(p: Publisher, name: str, values: list[Any], quality: str = "good") -> list[bool]:
    return [p.offer(name, v, quality, float(i)) for i, v in enumerate(values)]


def test_on_change_stores_the_first_value_and_changes_only() -> None:
    p = Publisher([device(tag())])
    assert offers(p, "plc1.temp", [20.0, 20.0, 20.5, 20.5, 20.0]) == [
        True,
        False,
        True,
        False,
        True,
    ]


def test_absolute_deadband_is_measured_from_the_last_stored_value() -> None:
    p = Publisher([device(tag(deadband={"absolute": 1.0}))])
    # 0.4 steps: each is inside the deadband, but the drift adds up and is stored
    got = offers(p, "plc1.temp", [10.0, 10.4, 10.8, 11.2, 11.0, 12.3])
    assert got == [True, False, False, True, False, True]


def test_a_change_equal_to_the_deadband_is_not_stored() -> None:
    p = Publisher([device(tag(deadband={"absolute": 0.5}))])
    assert offers(p, "plc1.temp", [1.0, 1.5, 1.50001]) == [True, False, True]


def test_percent_deadband() -> None:
    p = Publisher([device(tag(deadband={"percent": 10}))])
    # 10 % of 100 is 10: 109 is inside, 111 outside; then 10 % of 111
    assert offers(p, "plc1.temp", [100.0, 109.0, 111.0, 121.0, 122.5]) == [
        True,
        False,
        True,
        False,
        True,
    ]


def test_absolute_and_percent_together_need_both() -> None:
    pol = Policy(absolute=1.0, percent=10)
    assert not changed(pol, 0.0, 0.5)  # percent of 0 is 0: the absolute floor holds
    assert changed(pol, 0.0, 1.5)
    assert not changed(pol, 100.0, 105.0)  # over 1 but under 10 %
    assert changed(pol, 100.0, 111.0)


def test_every_poll_stores_everything_and_ignores_the_deadband() -> None:
    p = Publisher([device(tag(publish="every-poll", deadband={"absolute": 100}))])
    assert offers(p, "plc1.temp", [1.0, 1.0, 2.0]) == [True, True, True]


def test_max_silence_stores_an_unchanged_value_now_and_then() -> None:
    p = Publisher([device(tag(max_silence=5))])
    got = [p.offer("plc1.temp", 7.0, "good", t) for t in (0, 1, 4.9, 5.0, 6, 9.9, 10.0)]
    assert got == [True, False, False, True, False, False, True]


def test_quality_changes_are_always_stored() -> None:
    p = Publisher([device(tag(deadband={"absolute": 10}))])
    assert p.offer("plc1.temp", 1.0, "good", 0)
    assert p.offer("plc1.temp", 1.0, "uncertain", 1)
    assert not p.offer("plc1.temp", 1.0, "uncertain", 2)
    assert p.offer("plc1.temp", None, "bad", 3)
    assert not p.offer("plc1.temp", None, "bad", 4)
    assert p.offer("plc1.temp", 1.0, "good", 5)


def test_strings_and_bools_are_stored_when_they_differ() -> None:
    p = Publisher([device(tag("name", deadband={"absolute": 1000}))])
    assert offers(p, "plc1.name", ["A", "A", "B"]) == [True, False, True]
    assert offers(p, "plc1.flag", [True, True, False, 0]) == [True, False, True, True]


def test_nan_is_not_a_change_from_nan() -> None:
    p = Publisher([device(tag())])
    assert offers(p, "plc1.temp", [math.nan, math.nan, 1.0, math.nan]) == [
        True,
        False,
        True,
        True,
    ]


def test_integer_and_float_of_the_same_value_are_equal() -> None:
    p = Publisher([device(tag())])
    assert offers(p, "plc1.temp", [3, 3.0, 4]) == [True, False, True]


def test_unknown_tags_get_on_change_without_deadband() -> None:
    p = Publisher([])
    assert offers(p, "x.y", [1, 1, 2]) == [True, False, True]


def test_reconfigure_keeps_the_last_value_of_tags_that_remain() -> None:
    p = Publisher([device(tag(), tag("other", address=20))])
    assert p.offer("plc1.temp", 5.0, "good", 0)
    assert p.offer("plc1.other", 5.0, "good", 0)
    p.reconfigure([device(tag(deadband={"absolute": 2}))])
    assert not p.offer("plc1.temp", 6.0, "good", 1)  # new deadband, old last value
    assert p.offer("plc1.temp", 7.5, "good", 2)
    assert p.offer("plc1.other", 5.0, "good", 3)  # it was removed: forgotten


def test_forget_stores_the_next_value() -> None:
    p = Publisher([device(tag())])
    p.offer("plc1.temp", 1.0, "good", 0)
    p.forget("plc1.temp")
    assert p.offer("plc1.temp", 1.0, "good", 1)


@given(
    deadband=st.floats(0.0, 50.0),
    values=st.lists(st.floats(-1000, 1000, allow_nan=False), min_size=1, max_size=60),
)
def test_deadband_property(deadband: float, values: list[float]) -> None:
    """Stored values differ from the previous stored one by more than the deadband; a
    value that was not stored is within the deadband of the last stored one."""
    p = Publisher([device(tag(deadband={"absolute": deadband}))])
    last: float | None = None
    for i, v in enumerate(values):
        stored = p.offer("plc1.temp", v, "good", float(i))
        if last is None:
            assert stored
        elif stored:
            assert abs(v - last) > deadband or (deadband == 0 and v != last)
        else:
            assert abs(v - last) <= deadband
        if stored:
            last = v
