"""Poll one Modbus device on its own schedule: plan, read, decode, retry, split, back off.

One `DevicePoller` per device, each its own asyncio task, so a slow or dead device
never delays another's schedule. Devices on one serial line share a `Bus`: one lock
and the inter-frame gap (3.5 character times; 1.75 ms above 19200 baud); a TCP device
has a bus of its own. Reads and writes both go through the bus.

- Schedule: polls start at wall-clock slots ``k * poll_interval + poll_offset``; a poll
  that overruns skips the slots it missed (never a burst to catch up).
- Requests: `appliance.field.plan` turns the tags into the fewest requests. A request
  answered with exception 2 (illegal data address) that covers several points is split
  (`split_request`), the boundary is remembered for the device (in memory and in
  ``<run_dir>/field-splits.json``) and the parts are read at once.
- Retries: a request that times out or comes back garbled is sent again up to
  ``retries`` times; then the cycle fails (its remaining requests are not sent).
- Errors: the first failure is loud (log warning, event ``device.down``), repeats are
  quiet, recovery is an event (``device.recovered``). A device that fails a cycle
  (no connection, no answer, garbage; not a Modbus exception: that device is alive)
  is retried after ``poll_interval``, then twice that, ... at most
  ``Device.backoff_cap()`` (twice the interval by default); its failed state is still
  reported every slot
  (the comm-loss alarm does not wait for the back-off).
- Quality: a good read gives "good"; a failed cycle makes the device's values
  "uncertain" (the last value held), the second one in a row "bad"; a point the
  device refuses (a Modbus exception; but exceptions 10 and 11 come from a gateway
  that cannot reach the device, and fail the cycle) or that does not decode (a NaN or infinite
  float, a string that is not ASCII) is "bad". A value None in a batch means "no new
  value: keep the last one".

Decoding runs from plans compiled once per request (`compile_request`): one
`struct` pack of the registers, then one `unpack_from` per point; the results equal
`appliance.field.decode.decode` (a property test checks it).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import struct
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from appliance.config.field import Device, Tag
from appliance.config.points import BIT_TABLES, DeviceLimits, Point
from appliance.errors import BadRequest, NotFound, PermissionDenied
from appliance.field.decode import STRUCT_FORMAT, EncodeError, decode, encode
from appliance.field.modbus import ILLEGAL_DATA_ADDRESS, DeviceError, ModbusLink
from appliance.field.plan import Boundary, Request, ideal_request_count, plan, split_request

log = logging.getLogger("field.poller")

Quality = str  # "good" | "uncertain" | "bad"
Sample = tuple[str, Any, Quality]  # (tag name within the device, value or None, quality)
Decoder = Callable[[Sequence[Any]], list[Sample]]
# A gateway's "path unavailable" / "target failed to respond": the device is not there.
GATEWAY_UNREACHABLE = frozenset({10, 11})


class Sink(Protocol):
    """Where a poller delivers what it learns (the field role; a fake in tests)."""

    def values(self, device: str, batch: list[Sample], t: float) -> None: ...

    def state(self, device: str, ok: bool, error: str | None, t: float) -> None: ...

    def event(self, kind: str, message: str, severity: str, data: dict[str, Any]) -> None: ...


# -- decoding from compiled plans -------------------------------------------------------


def compile_request(request: Request, points: Mapping[str, Point]) -> Decoder:
    """A function from the request's answer to (name, value, quality) for its points.

    Registers are packed once big-endian and once little-endian (only if needed):
    a value with byte order B and word order W is then one struct read, since
    big/big = ">" on the big buffer, little/little = "<" on the big buffer,
    little bytes/big words = ">" on the little buffer and big bytes/little words =
    "<" on the little buffer.
    """
    members = [(points[name], off) for name, off in request.points]
    if request.table in BIT_TABLES:
        offs = [(p.name, off) for p, off in members]

        def bits(values: Sequence[Any]) -> list[Sample]:
            return [(name, bool(values[off]), "good") for name, off in offs]

        return bits

    count = request.count
    big = struct.Struct(f">{count}H")
    little = struct.Struct(f"<{count}H")
    plans: list[tuple[Any, ...]] = []
    need_little = False
    for p, off in members:
        lbuf = p.byte_order == "little"
        if p.type == "bit":
            assert p.bit is not None
            # decode() reads the register in its byte order: a little one swaps the bytes
            shift = p.bit ^ 8 if lbuf else p.bit
            plans.append(("bit", p.name, off, shift))
        elif p.type == "string":
            need_little |= lbuf
            plans.append(("str", p.name, 2 * off, 2 * off + 2 * (p.length or 0), lbuf))
        else:
            words = p.type not in ("int16", "uint16")
            swap = words and p.word_order == "little"
            use_little = lbuf != swap if words else lbuf
            endian = "<" if swap else ">"
            if not words:
                endian = ">"
            need_little |= use_little
            fmt = struct.Struct(endian + STRUCT_FORMAT[p.type])
            scaled = p.scale != 1 or p.offset != 0
            is_float = p.type.startswith("float")
            plans.append(
                (
                    "num",
                    p.name,
                    2 * off,
                    fmt.unpack_from,
                    use_little,
                    scaled,
                    p.scale,
                    p.offset,
                    is_float,
                )
            )
    isfinite = math.isfinite

    def registers(values: Sequence[Any]) -> list[Sample]:
        bb = big.pack(*values)
        lb = little.pack(*values) if need_little else b""
        out: list[Sample] = []
        append = out.append
        for item in plans:
            kind = item[0]
            if kind == "num":
                _, name, boff, unpack, use_l, scaled, scale, offset, is_float = item
                (v,) = unpack(lb if use_l else bb, boff)
                if is_float and not isfinite(v):
                    append((name, None, "bad"))
                    continue
                if scaled:
                    v = v * scale + offset
                append((name, v, "good"))
            elif kind == "bit":
                _, name, off, shift = item
                append((name, bool(values[off] >> shift & 1), "good"))
            else:
                _, name, start, end, use_l = item
                try:
                    text = (lb if use_l else bb)[start:end].decode("ascii").rstrip("\x00")
                except UnicodeDecodeError:
                    append((name, None, "bad"))
                    continue
                append((name, text, "good"))
        return out

    return registers


# -- learned splits ---------------------------------------------------------------------


class SplitMemory:
    """Boundaries learned per device ("illegal data address" for a coalesced read).

    Kept in memory and, when `path` is given, in a JSON file (the run directory: it is
    relearned after a reboot, and a replaced device is not stuck with old holes).
    """

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self._splits: dict[str, set[Boundary]] = {}
        if path is not None:
            try:
                data = json.loads(path.read_text())
                for dev, items in data.items():
                    self._splits[dev] = {(str(t), int(a)) for t, a in items}
            except (OSError, ValueError, TypeError, AttributeError):
                pass  # no file yet, or unreadable: start empty and relearn

    def get(self, device: str) -> frozenset[Boundary]:
        return frozenset(self._splits.get(device, ()))

    def add(self, device: str, bounds: Iterable[Boundary]) -> None:
        self._splits.setdefault(device, set()).update(bounds)
        self._save()

    def forget(self, device: str) -> None:
        if self._splits.pop(device, None) is not None:
            self._save()

    def _save(self) -> None:
        if self.path is None:
            return
        data = {d: sorted([t, a] for t, a in s) for d, s in sorted(self._splits.items())}
        tmp = self.path.with_suffix(f".tmp{os.getpid()}")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(data))
            os.replace(tmp, self.path)
        except OSError as e:
            log.warning("cannot save learned splits to %s: %s", self.path, e)


# -- the bus ----------------------------------------------------------------------------


class Bus:
    """One line to talk over: a TCP connection, or a serial port its devices share.

    `use()` holds the lock for one transaction and keeps `gap` seconds of silence
    between the end of one transaction and the start of the next.
    """

    def __init__(self, link: ModbusLink, gap: float = 0.0, shared: bool = False) -> None:
        self.link = link
        self.gap = gap
        self.shared = shared
        self.lock = asyncio.Lock()
        self._quiet_until = 0.0

    @contextlib.asynccontextmanager
    async def use(self) -> AsyncIterator[ModbusLink]:
        async with self.lock:
            wait = self._quiet_until - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            try:
                yield self.link
            finally:
                self._quiet_until = time.monotonic() + self.gap

    def close(self) -> None:
        self.link.close()


# -- the poller -------------------------------------------------------------------------


class DevicePoller:
    """Polls one Modbus device over `bus` and reports to `sink` (see the module doc)."""

    def __init__(
        self,
        device: Device,
        bus: Bus,
        sink: Sink,
        splits: SplitMemory | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.bus = bus
        self.sink = sink
        self.splits = splits or SplitMemory()
        self.clock = clock
        self.polls = 0
        self.error_count = 0
        self.state = "connecting"
        self.last_ok: float | None = None
        self.last_error: str | None = None
        self.cycle_ms = 0.0
        self.started_at = clock()
        self._fail_cycles = 0
        self._reconnect_at = 0.0
        self._last_answer = 0.0  # monotonic time of the last good answer
        self._point_errors: dict[tuple[str, int], str] = {}
        self.configure(device)

    # -- configuration ------------------------------------------------------------------

    def configure(self, device: Device) -> None:
        """(Re)build the plan and decoders; the schedule and connection carry on."""
        self.device = device
        self.tags: dict[str, Tag] = {t.name: t for t in device.tags}
        self.points: dict[str, Point] = {p.name: p for p in device.points()}
        self.limits = DeviceLimits(max_registers=device.max_registers, max_gap=device.max_gap)
        self._replan()

    def _replan(self) -> None:
        splits = self.splits.get(self.device.name)
        pts = list(self.points.values())
        self.plan = plan(
            pts,
            max_registers=self.limits.max_registers,
            max_gap=self.limits.max_gap,
            splits=splits,
        )
        self.decoders = [compile_request(r, self.points) for r in self.plan]
        self.ideal = ideal_request_count(pts, self.limits, splits) if pts else 0

    def status(self) -> dict[str, Any]:
        d = self.device
        return {
            "protocol": d.protocol,
            "state": self.state,
            "last_ok": self.last_ok,
            "last_error": self.last_error,
            "error_count": self.error_count,
            "requests_per_cycle": len(self.plan),
            "ideal_requests": self.ideal,
            "cycle_ms": round(self.cycle_ms, 2),
            "poll_interval": d.poll_interval,
            "polls": self.polls,
        }

    # -- schedule -----------------------------------------------------------------------

    def next_slot(self, now: float) -> float:
        """The first slot k * poll_interval + poll_offset strictly after `now`."""
        p = self.device.poll_interval
        off = self.device.poll_offset % p
        return (math.floor((now - off) / p) + 1) * p + off

    async def run(self, stop: asyncio.Event) -> None:
        """Poll on schedule until `stop` is set."""
        while not stop.is_set():
            now = self.clock()
            delay = self.next_slot(now) - now
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            if stop.is_set():
                break
            if time.monotonic() < self._reconnect_at:
                # backing off: no attempt, but the device is still reported down
                self.sink.state(self.device.name, False, self.last_error, self.clock())
                continue
            try:
                await self._watched_cycle()
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug in one device's cycle must not end its task
                log.exception("%s: poll failed", self.device.name)

    async def _watched_cycle(self) -> None:
        """One cycle; if the device has not answered anything by the end of its interval
        (retries and timeouts can take longer), it is reported down at once, so that its
        communication alarm is raised within two intervals of the outage's start."""
        p = self.device.poll_interval
        started = time.monotonic()
        cycle = asyncio.ensure_future(self.poll_once())
        try:
            await asyncio.wait_for(asyncio.shield(cycle), p * 0.95)
        except TimeoutError:
            if self._last_answer < started and not cycle.done():
                self.sink.state(
                    self.device.name,
                    False,
                    f"timeout: no answer within the poll interval ({p:g} s)",
                    self.clock(),
                )
            await cycle
        except asyncio.CancelledError:
            cycle.cancel()
            raise

    # -- one cycle ----------------------------------------------------------------------

    async def poll_once(self) -> None:
        """Connect if needed, send the plan's requests, deliver values and state."""
        dev = self.device
        started = time.monotonic()
        try:
            async with self.bus.use() as link:
                link.set_timeout(dev.timeout)
                await link.connect()
        except DeviceError as e:
            self._failed(e, started)
            return
        batch: list[Sample] = []
        queue: list[tuple[Request, Decoder]] = list(zip(self.plan, self.decoders, strict=True))
        replan = False
        failure: DeviceError | None = None
        while queue:
            req, decoder = queue.pop(0)
            try:
                values = await self._read(req)
            except DeviceError as e:
                if e.kind != "exception" or e.exception_code in GATEWAY_UNREACHABLE:
                    failure = e
                    break
                if e.exception_code == ILLEGAL_DATA_ADDRESS and len(req.points) > 1:
                    bounds = split_request(req)
                    if bounds:
                        self.splits.add(dev.name, bounds)
                        log.info("%s: %s; reading it in parts from now on", dev.name, e.message)
                        sub = plan(
                            [self.points[n] for n, _ in req.points],
                            max_registers=self.limits.max_registers,
                            max_gap=self.limits.max_gap,
                            splits=self.splits.get(dev.name),
                        )
                        queue[:0] = [(r, compile_request(r, self.points)) for r in sub]
                        replan = True
                        continue
                self._point_error(req, e)
                batch.extend((n, None, "bad") for n, _ in req.points)
                continue
            self._point_errors.pop((req.table, req.start), None)
            try:
                batch.extend(decoder(values))
            except (struct.error, TypeError, IndexError) as e:
                failure = DeviceError("garbled", f"{dev.name}: undecodable answer: {e}")
                break
        if replan:
            self._replan()
        if failure is not None:
            if not self.bus.shared:
                self.bus.close()  # out of step, or half-open: the next cycle starts afresh
            self._failed(failure, started)
            return
        t = self.clock()
        self.cycle_ms = (time.monotonic() - started) * 1000
        self.polls += 1
        self.last_ok = t
        self._fail_cycles = 0
        self._reconnect_at = 0.0
        if self.state != "ok":
            if self.state == "down":
                log.info("%s: recovered", dev.name)
                self.sink.event(
                    "device.recovered",
                    f"{dev.name}: answers again",
                    "info",
                    {"device": dev.name},
                )
            self.state = "ok"
        if not self._point_errors:
            self.last_error = None
        self.sink.values(dev.name, batch, t)
        self.sink.state(dev.name, True, None, t)

    async def _read(self, req: Request) -> Sequence[Any]:
        dev = self.device
        attempts = dev.retries + 1
        for attempt in range(attempts):
            try:
                async with self.bus.use() as link:
                    link.set_timeout(dev.timeout)
                    values = await link.read(dev.unit_id, req.table, req.start, req.count)
                self._last_answer = time.monotonic()
                return values
            except DeviceError as e:
                if e.kind not in ("timeout", "garbled") or attempt == attempts - 1:
                    raise
                log.debug("%s: %s (try %d of %d)", dev.name, e, attempt + 1, attempts)
                if e.kind == "garbled" and not self.bus.shared:
                    # the stream is out of step: try again on a fresh connection
                    async with self.bus.use() as link:
                        link.close()
                        await link.connect()
        raise AssertionError("unreachable")

    def _point_error(self, req: Request, e: DeviceError) -> None:
        key = (req.table, req.start)
        text = str(e)
        self.error_count += 1
        if self._point_errors.get(key) != text:
            names = ", ".join(n for n, _ in req.points)
            log.warning("%s: %s (tags %s)", self.device.name, text, names)
            self.sink.event(
                "device.point_error",
                f"{self.device.name}: {e.message} (tags {names})",
                "warning",
                {"device": self.device.name, "tags": [n for n, _ in req.points]},
            )
        self._point_errors[key] = text
        self.last_error = text

    def _failed(self, e: DeviceError, started: float) -> None:
        dev = self.device
        t = self.clock()
        self.cycle_ms = (time.monotonic() - started) * 1000
        self.polls += 1
        self.error_count += 1
        self._fail_cycles += 1
        # A dead device is asked less and less often: poll_interval, twice that, ... at
        # most Device.backoff_cap() (2 x poll_interval unless reconnect_max says otherwise).
        # On a serial line this keeps the bus free for the living; on TCP it spares
        # connection attempts to a host that is gone.
        p = dev.poll_interval
        wait = min(dev.backoff_cap(), p * 2 ** min(self._fail_cycles - 1, 30))
        self._reconnect_at = time.monotonic() + wait - p * 0.5
        text = str(e)
        if self.state != "down":
            log.warning("%s: %s", dev.name, text)
            self.sink.event(
                "device.down",
                f"{dev.name}: {e.message}",
                "warning",
                {"device": dev.name, "kind": e.kind},
            )
        elif text != self.last_error:
            log.debug("%s: %s", dev.name, text)
        self.state = "down"
        self.last_error = text
        if self._fail_cycles <= 2:  # quality changes on the first and second failure only
            quality = "uncertain" if self._fail_cycles == 1 else "bad"
            self.sink.values(dev.name, [(n, None, quality) for n in self.points], t)
        self.sink.state(dev.name, False, text, t)

    # -- writes -------------------------------------------------------------------------

    async def write(self, name: str, value: Any) -> Any:
        """Write a writable tag through the bus; returns the value as the tag reads it."""
        dev = self.device
        tag = self.tags.get(name)
        if tag is None or name not in self.points:
            raise NotFound(f"{dev.name} has no tag {name}", field="tag")
        if not tag.writable:
            raise PermissionDenied(f"{dev.name}.{name} is not writable", field="tag")
        point = self.points[name]
        try:
            if point.type != "bit":
                words = encode(point, value)
        except EncodeError as e:
            raise BadRequest(str(e), field="value") from None
        async with self.bus.use() as link:
            link.set_timeout(dev.timeout)
            await link.connect()
            if point.table == "coil":
                await link.write_coil(dev.unit_id, point.address, bool(words[0]))
                return bool(words[0])
            if point.type == "bit":  # read-modify-write, inside one hold of the bus
                (base,) = await link.read(dev.unit_id, "holding", point.address, 1)
                try:
                    words = encode(point, value, base)
                except EncodeError as e:
                    raise BadRequest(str(e), field="value") from None
            await link.write_registers(dev.unit_id, point.address, words)
        return decode(point, words)
