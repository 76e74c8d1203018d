"""The device poller against a fake link: plan, decode, split, retry, back-off, writes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from testkit import Clock, FakeLink, until

from appliance.config.field import Device
from appliance.config.points import Point, register_count
from appliance.errors import ApplianceError, NotFound, PermissionDenied
from appliance.field.decode import DecodeError, decode
from appliance.field.modbus import DeviceError
from appliance.field.plan import plan
from appliance.field.poller import Bus, DevicePoller, SplitMemory, compile_request


class Sink:
    def __init__(self) -> None:
        self.batches: list[tuple[str, list[tuple[str, Any, str]], float]] = []
        self.states: list[tuple[str, bool, str | None]] = []
        self.events: list[tuple[str, str]] = []

    def values(self, device: str, batch: list[tuple[str, Any, str]], t: float) -> None:
        self.batches.append((device, batch, t))

    def state(self, device: str, ok: bool, error: str | None, t: float) -> None:
        self.states.append((device, ok, error))

    def event(self, kind: str, message: str, severity: str, data: dict[str, Any]) -> None:
        self.events.append((kind, message))

    def last(self) -> dict[str, tuple[Any, str]]:
        return {n: (v, q) for n, v, q in self.batches[-1][1]}


def device(**kw: Any) -> Device:
    fields: dict[str, Any] = {
        "name": "plc1",
        "protocol": "modbus-tcp",
        "address": "127.0.0.1:1502",
        "tags": [
            {"name": "counter", "table": "holding", "address": 0},
            {"name": "temp", "table": "holding", "address": 10, "type": "float32"},
            {"name": "flag", "table": "holding", "address": 2, "type": "bit", "bit": 1},
            {"name": "sp", "table": "holding", "address": 40, "writable": True},
            {"name": "run", "table": "coil", "address": 8, "writable": True},
        ],
    }
    fields.update(kw)
    return Device.model_validate(fields)


def poller(link: FakeLink, sink: Sink, dev: Device | None = None, **kw: Any) -> DevicePoller:
    return DevicePoller(dev or device(), Bus(link), sink, **kw)  # type: ignore[arg-type]


def run(coro: Any) -> Any:
    return asyncio.run(coro)


# -- compiled decoding equals the reference decoder ----------------------------------------

_TYPES = ["bit", "int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64"]


@st.composite
def register_points(draw: st.DrawFn) -> tuple[list[Point], list[int]]:
    n = draw(st.integers(1, 6))
    points = []
    for i in range(n):
        kind = draw(st.sampled_from([*_TYPES, "string"]))
        extra: dict[str, Any] = {}
        if kind == "bit":
            extra["bit"] = draw(st.integers(0, 15))
        if kind == "string":
            extra["length"] = draw(st.integers(1, 4))
        if kind not in ("bit", "string") and draw(st.booleans()):
            extra["scale"] = draw(st.sampled_from([0.1, 2.0, -1.5]))
            extra["offset"] = draw(st.sampled_from([0.0, 3.0, -10.0]))
        points.append(
            Point(
                name=f"p{i}",
                table="holding",
                address=draw(st.integers(0, 40)),
                type=kind,
                byte_order=draw(st.sampled_from(["big", "little"])),
                word_order=draw(st.sampled_from(["big", "little"])),
                **extra,
            )
        )
    end = max(p.address + register_count(p) for p in points)
    regs = draw(st.lists(st.integers(0, 0xFFFF), min_size=end, max_size=end))
    return points, regs


@given(register_points())
def test_compiled_decoder_equals_decode(case: tuple[list[Point], list[int]]) -> None:
    points, regs = case
    by_name = {p.name: p for p in points}
    for req in plan(points, max_gap=200):
        answer = regs[req.start : req.start + req.count]
        got = {n: (v, q) for n, v, q in compile_request(req, by_name)(answer)}
        for name, off in req.points:
            try:
                want = decode(by_name[name], answer, off)
            except DecodeError:
                assert got[name] == (None, "bad")
                continue
            if (isinstance(want, float) and want != want) or want in (float("inf"), float("-inf")):
                assert got[name] == (None, "bad")
                continue
            assert got[name] == (want, "good"), name
            assert type(got[name][0]) is type(want)


def test_compiled_bits() -> None:
    points = [
        Point(name="a", table="coil", address=3, type="bool"),
        Point(name="b", table="coil", address=5, type="bool"),
    ]
    (req,) = plan(points)
    out = compile_request(req, {p.name: p for p in points})([True, False, False])
    assert out == [("a", True, "good"), ("b", False, "good")]


# -- cycles ----------------------------------------------------------------------------------


def test_one_cycle_reads_the_plan_and_delivers_values() -> None:
    link = FakeLink({0: 7, 2: 0b10, 10: 0x3FC0, 11: 0, 40: 5})
    sink = Sink()
    p = poller(link, sink)
    run(p.poll_once())
    assert link.reads == [("coil", 8, 1), ("holding", 0, 12), ("holding", 40, 1)]
    assert sink.last() == {
        "counter": (7, "good"),
        "temp": (1.5, "good"),
        "flag": (True, "good"),
        "sp": (5, "good"),
        "run": (False, "good"),
    }
    assert sink.states[-1] == ("plc1", True, None)
    s = p.status()
    assert s["state"] == "ok" and s["requests_per_cycle"] == 3 == s["ideal_requests"]
    assert s["polls"] == 1 and s["last_ok"] is not None


def test_illegal_address_splits_the_request_and_remembers(tmp_path: Path) -> None:
    link = FakeLink({0: 1, 10: 0x3FC0})
    link.holes = {5}  # the device has a hole between counter (0..2) and temp (10..11)
    sink = Sink()
    mem = SplitMemory(tmp_path / "field-splits.json")
    p = poller(link, sink, splits=mem)
    run(p.poll_once())
    values = sink.last()
    assert values["counter"] == (1, "good") and values["temp"] == (1.5, "good")
    assert p.status()["requests_per_cycle"] == 4  # coil, holding 0..2, holding 10..11, 40
    saved = json.loads((tmp_path / "field-splits.json").read_text())
    assert saved == {"plc1": [["holding", 10]]}
    link.reads.clear()
    run(p.poll_once())
    assert ("holding", 0, 3) in link.reads and ("holding", 10, 2) in link.reads
    assert len(link.reads) == 4  # no refused request any more
    # a new poller (the role restarted) starts from what was learned
    p2 = poller(FakeLink(), Sink(), splits=SplitMemory(tmp_path / "field-splits.json"))
    assert p2.status()["requests_per_cycle"] == 4


def test_refused_single_point_is_bad_and_others_good() -> None:
    link = FakeLink({0: 3})
    link.holes = {40}
    sink = Sink()
    p = poller(link, sink)
    run(p.poll_once())
    v = sink.last()
    assert v["sp"] == (None, "bad") and v["counter"] == (3, "good")
    assert p.status()["state"] == "ok" and "exception" in (p.status()["last_error"] or "")
    assert [k for k, _ in sink.events] == ["device.point_error"]
    run(p.poll_once())
    assert [k for k, _ in sink.events] == ["device.point_error"]  # repeats are quiet


def test_timeouts_retry_then_fail_quietly_and_recover() -> None:
    link = FakeLink({0: 1})
    link.fail = DeviceError("timeout", "no answer")
    sink = Sink()
    p = poller(link, sink, dev=device(retries=2))
    run(p.poll_once())
    assert len(link.reads) == 3  # 1 + 2 retries, then the cycle stops (no more requests)
    assert p.status()["state"] == "down"
    assert sink.last()["counter"] == (None, "uncertain")
    assert sink.states[-1][1] is False
    run(p.poll_once())
    assert sink.last()["counter"] == (None, "bad")
    n = len(sink.batches)
    run(p.poll_once())
    assert len(sink.batches) == n  # no new batch while it stays down
    assert [k for k, _ in sink.events] == ["device.down"]
    link.fail = None
    run(p.poll_once())
    assert sink.last()["counter"] == (1, "good")
    assert [k for k, _ in sink.events] == ["device.down", "device.recovered"]
    assert p.status()["state"] == "ok" and p.status()["last_error"] is None


def test_exceptions_are_not_retried() -> None:
    link = FakeLink()
    link.fail = DeviceError("exception", "server device failure", exception_code=4)
    p = poller(link, Sink(), dev=device(retries=3))
    run(p.poll_once())
    assert len(link.reads) == 3  # each request once, none retried
    assert p.status()["state"] == "ok"


def test_garbled_answers_drop_the_connection() -> None:
    link = FakeLink()
    link.fail = DeviceError("garbled", "junk")
    p = poller(link, Sink(), dev=device(retries=0))
    run(p.poll_once())
    assert not link.connected and p.status()["state"] == "down"


def test_connect_failures_back_off_up_to_the_cap() -> None:
    link = FakeLink()
    link.connect_error = DeviceError("refused", "connection refused")
    p = poller(link, Sink(), dev=device(poll_interval=1.0, reconnect_max=4.0))
    waits = []
    for _ in range(6):
        before = time.monotonic()
        run(p.poll_once())
        waits.append(round(p._reconnect_at - before + 0.5))
    assert waits == [1, 2, 4, 4, 4, 4]
    assert p.status()["state"] == "down"


def test_schedule_slots_are_aligned_with_the_offset() -> None:
    p = poller(FakeLink(), Sink(), dev=device(poll_interval=2.0, poll_offset=0.5))
    assert p.next_slot(100.0) == 100.5
    assert p.next_slot(100.5) == 102.5
    assert p.next_slot(101.9) == 102.5


def test_run_polls_once_a_slot() -> None:
    """The run loop waits for each slot: stopped at its third poll, it has polled three
    times, each in a slot of its own (never faster than the schedule)."""
    third = asyncio.Event()

    class Counting(Sink):
        def values(self, device: str, batch: list[tuple[str, Any, str]], t: float) -> None:
            super().values(device, batch, t)
            if len(self.batches) == 3:
                third.set()

    sink = Counting()
    p = poller(FakeLink(), sink, dev=device(poll_interval=0.05))

    async def go() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(p.run(stop))
        await asyncio.wait_for(third.wait(), 5)
        stop.set()  # the waiter runs before the poller's loop comes round again
        await asyncio.wait_for(task, 1)

    run(go())
    assert p.polls == 3
    assert len({math.floor(t / 0.05) for _, _, t in sink.batches}) == 3


class ReadCountingClock(Clock):
    """A Clock that counts its reads: the run loop reads it once before each wait."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    def __call__(self) -> float:
        self.reads += 1
        return self.t


def test_run_stops_promptly_while_waiting_for_a_slot() -> None:
    clock = ReadCountingClock()  # at T0, a whole minute before the next 60 s slot
    p = poller(FakeLink(), Sink(), dev=device(poll_interval=60.0), clock=clock)
    assert p.next_slot(clock.t) - clock.t == 60.0

    async def go() -> float:
        stop = asyncio.Event()
        task = asyncio.create_task(p.run(stop))
        reads = clock.reads
        await until(lambda: clock.reads > reads, 5, "the run loop to take its next slot")
        stop.set()  # the loop is now waiting for the slot a minute away
        t0 = time.monotonic()
        await asyncio.wait_for(task, 1)
        return time.monotonic() - t0

    assert run(go()) < 0.5
    assert p.polls == 0


def test_bus_keeps_the_frame_gap() -> None:
    link = FakeLink()
    bus = Bus(link, gap=0.05, shared=True)  # type: ignore[arg-type]

    async def go() -> None:
        async def one() -> None:
            async with bus.use() as lk:
                await lk.read(1, "holding", 0, 1)

        await asyncio.gather(one(), one(), one())

    run(go())
    starts = [a for a, _ in link.times]
    ends = [b for _, b in link.times]
    for prev_end, nxt in zip(ends, starts[1:], strict=False):
        assert nxt - prev_end >= 0.045


# -- writes ----------------------------------------------------------------------------------


def test_writes() -> None:
    link = FakeLink({2: 0x0100})
    p = poller(
        link,
        Sink(),
        dev=device(
            tags=[
                {
                    "name": "sp",
                    "table": "holding",
                    "address": 40,
                    "type": "float32",
                    "writable": True,
                },
                {"name": "run", "table": "coil", "address": 8, "writable": True},
                {
                    "name": "b",
                    "table": "holding",
                    "address": 2,
                    "type": "bit",
                    "bit": 3,
                    "writable": True,
                },
                {"name": "ro", "table": "holding", "address": 3},
            ]
        ),
    )
    assert run(p.write("sp", 1.5)) == 1.5
    assert link.writes[-1] == ("holding", 40, [0x3FC0, 0])
    assert run(p.write("run", True)) is True
    assert link.writes[-1] == ("coil", 8, True)
    assert run(p.write("b", True)) is True
    assert link.writes[-1] == ("holding", 2, [0x0108])  # read-modify-write kept bit 8
    with pytest.raises(PermissionDenied):
        run(p.write("ro", 1))
    with pytest.raises(NotFound):
        run(p.write("nope", 1))
    with pytest.raises(ApplianceError) as e:
        run(p.write("sp", "hot"))
    assert e.value.field == "value"
    assert e.value.http_status == 400  # bad input, not a server failure (issue 10)


def test_reconfigure_keeps_counters() -> None:
    link = FakeLink()
    p = poller(link, Sink())
    run(p.poll_once())
    p.configure(device(tags=[{"name": "counter", "table": "holding", "address": 0}]))
    assert p.polls == 1 and p.status()["requests_per_cycle"] == 1


def test_a_silent_device_is_reported_down_within_its_interval() -> None:
    link = FakeLink()
    link.delay = 0.5  # each read hangs for 5 intervals, then times out
    link.fail = DeviceError("timeout", "no answer")
    sink = Sink()
    p = poller(link, sink, dev=device(poll_interval=0.1, timeout=0.5, retries=0))

    async def go() -> float:
        stop = asyncio.Event()
        task = asyncio.create_task(p.run(stop))
        t0 = time.monotonic()
        while not sink.states:
            await asyncio.sleep(0.01)
        took = time.monotonic() - t0
        stop.set()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return took

    took = run(go())
    assert took < 0.25  # next slot (<= 0.1 s) + 0.95 interval, long before the 0.5 s timeout
    assert sink.states[0][1] is False and "within the poll interval" in (sink.states[0][2] or "")


def test_a_slow_device_that_answers_is_not_reported_down() -> None:
    link = FakeLink()
    link.delay = 0.06  # 3 requests: 0.18 s, longer than the 0.1 s interval, but answering
    sink = Sink()
    p = poller(link, sink, dev=device(poll_interval=0.1, timeout=0.5))

    async def go() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(p.run(stop))
        await until(lambda: len(sink.states) >= 3, 5, "three cycles of the slow device")
        stop.set()
        await asyncio.wait_for(task, 1)

    run(go())
    assert len(sink.states) >= 3 and all(ok for _, ok, _ in sink.states)


def test_a_gateway_that_cannot_reach_the_device_fails_the_cycle() -> None:
    link = FakeLink()
    link.fail = DeviceError("exception", "gateway target failed", exception_code=11)
    sink = Sink()
    p = poller(link, sink)
    run(p.poll_once())
    assert p.status()["state"] == "down" and len(link.reads) == 1
    assert sink.last()["counter"] == (None, "uncertain")


def test_point_errors_clear_when_the_point_reads_again() -> None:
    link = FakeLink({40: 9})
    link.holes = {40}
    p = poller(link, Sink())
    run(p.poll_once())
    assert "exception" in (p.status()["last_error"] or "")
    link.holes = set()
    run(p.poll_once())
    assert p.status()["last_error"] is None and p.status()["state"] == "ok"
