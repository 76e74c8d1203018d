"""The Modbus TCP inspector: a conduit's two byte streams in, a decision per ADU out. No I/O.

A TCP segment may carry several ADUs (some clients pipeline up to 19) and an ADU may be
split over segments, so the streams are reassembled (`Reassembler`) before anything is
decided; nftables sees only the first ADU of a packet and cannot do this.

Sanity checks, as Snort's and Suricata's Modbus inspectors make them:

- framing (MBAP header): protocol id 0, a length field of at least 2 (unit id and
  function code) and an ADU of at most 260 bytes. A stream that breaks them cannot be
  re-synchronised: the connection is reset (`FramingError`);
- the function code is a public one, and the PDU's length and counts are what that
  function code defines (quantity limits, byte count = quantity, address + quantity
  within 65536), else the request is refused like a forbidden one;
- responses only to requests: a server's ADU must answer an outstanding request
  (same transaction id, unit id and function code, or its exception); anything else
  resets the connection (`Session.from_server`).

Then each request is checked against the conduit's restriction (`Policy`): function
code (43 only as 43/14, read device identification), unit id, and every address the
request touches (a read of 10 registers from 95 touches 95..104; function code 23 its
read range and its write range). A refused request is answered by the proxy itself
with a Modbus exception (`Verdict.reply`) and never reaches the PLC:

  01 illegal function       the function code is not allowed (or not a public one)
  02 illegal data address   an address outside the allowed ranges, or past 65535
  03 illegal data value     a malformed request (a PLC would answer the same)
  0A gateway path unavailable   the unit id is not allowed (nothing is routed to it)
"""

from __future__ import annotations

import struct
from collections import deque
from dataclasses import dataclass, field

from appliance.config.modbus import FUNCTION_CODES, TABLE_OF, ModbusRestriction

HEADER = 7  # MBAP: transaction id, protocol id, length, unit id
MAX_ADU = 260  # 7 + a PDU of at most 253 bytes
MAX_OUTSTANDING = 256  # requests sent to the PLC and not yet answered, per connection
MEI_DEVICE_ID = 14

ILLEGAL_FUNCTION = 0x01
ILLEGAL_DATA_ADDRESS = 0x02
ILLEGAL_DATA_VALUE = 0x03
GATEWAY_PATH_UNAVAILABLE = 0x0A
EXCEPTIONS = {
    ILLEGAL_FUNCTION: "illegal function",
    ILLEGAL_DATA_ADDRESS: "illegal data address",
    ILLEGAL_DATA_VALUE: "illegal data value",
    GATEWAY_PATH_UNAVAILABLE: "gateway path unavailable",
}

_MBAP = struct.Struct(">HHHB")


class FramingError(Exception):
    """The byte stream is not Modbus TCP (or no longer in step): reset the connection."""


@dataclass(frozen=True)
class Adu:
    """One Modbus TCP application data unit."""

    transaction: int
    unit: int
    pdu: bytes

    @property
    def function(self) -> int:
        return self.pdu[0]

    def encode(self) -> bytes:
        return _MBAP.pack(self.transaction, 0, len(self.pdu) + 1, self.unit) + self.pdu


class Reassembler:
    """ADUs out of a byte stream fed in chunks of any size (one ADU split over chunks,
    several in one chunk). Holds at most one incomplete ADU (< 260 bytes)."""

    def __init__(self) -> None:
        self._buf = bytearray()

    @property
    def pending(self) -> int:
        """Bytes of an ADU not complete yet."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[Adu]:
        """The ADUs completed by `data`; FramingError when the header is not Modbus TCP."""
        self._buf += data
        out: list[Adu] = []
        while len(self._buf) >= HEADER:
            tid, proto, length, unit = _MBAP.unpack_from(self._buf)
            if proto != 0:
                raise FramingError(f"protocol id {proto}, not 0 (Modbus)")
            if length < 2:
                raise FramingError(f"length field {length}: an ADU has a unit id and a function")
            if HEADER - 1 + length > MAX_ADU:
                raise FramingError(
                    f"length field {length}: an ADU is at most {MAX_ADU} bytes, not "
                    f"{HEADER - 1 + length}"
                )
            end = HEADER - 1 + length
            if len(self._buf) < end:
                break
            out.append(Adu(tid, unit, bytes(self._buf[HEADER:end])))
            del self._buf[:end]
        return out


@dataclass(frozen=True)
class Span:
    """Addresses a request touches: table, first and last (inclusive, 0-based)."""

    table: str
    first: int
    last: int

    def __str__(self) -> str:
        return f"{self.table} {self.first}" + ("" if self.first == self.last else f"-{self.last}")


class Malformed(Exception):
    """The PDU is not what its function code defines (exception 03), or its addresses run
    past 65535 (exception 02)."""

    def __init__(self, message: str, code: int = ILLEGAL_DATA_VALUE) -> None:
        super().__init__(message)
        self.code = code


def _span(table: str, start: int, count: int, limit: int) -> Span:
    if not 1 <= count <= limit:
        raise Malformed(f"quantity {count} is not 1-{limit}")
    if start + count > 0x10000:
        raise Malformed(
            f"addresses {start}-{start + count - 1} run past 65535", ILLEGAL_DATA_ADDRESS
        )
    return Span(table, start, start + count - 1)


def _length(pdu: bytes, n: int) -> None:
    if len(pdu) != n:
        raise Malformed(f"function {pdu[0]} takes {n} bytes of PDU, not {len(pdu)}")


def request_spans(pdu: bytes) -> tuple[Span, ...]:
    """The addresses a request PDU touches; Malformed when its length or counts are wrong.

    Function codes without table addresses (diagnostics, device identification, file
    records, ...) touch none."""
    fc = pdu[0]
    table = TABLE_OF.get(fc)
    if fc in (1, 2):
        _length(pdu, 5)
        start, count = struct.unpack_from(">HH", pdu, 1)
        return (_span(table or "", start, count, 2000),)
    if fc in (3, 4):
        _length(pdu, 5)
        start, count = struct.unpack_from(">HH", pdu, 1)
        return (_span(table or "", start, count, 125),)
    if fc == 5:
        _length(pdu, 5)
        addr, value = struct.unpack_from(">HH", pdu, 1)
        if value not in (0x0000, 0xFF00):
            raise Malformed(f"a coil is written 0x0000 or 0xFF00, not {value:#06x}")
        return (Span("coil", addr, addr),)
    if fc == 6:
        _length(pdu, 5)
        (addr,) = struct.unpack_from(">H", pdu, 1)
        return (Span("holding", addr, addr),)
    if fc in (15, 16):
        if len(pdu) < 6:
            raise Malformed(f"function {fc} takes at least 6 bytes of PDU, not {len(pdu)}")
        start, count, nbytes = struct.unpack_from(">HHB", pdu, 1)
        span = _span(table or "", start, count, 1968 if fc == 15 else 123)
        want = (count + 7) // 8 if fc == 15 else 2 * count
        if nbytes != want or len(pdu) != 6 + nbytes:
            raise Malformed(f"byte count {nbytes} with {len(pdu) - 6} bytes for quantity {count}")
        return (span,)
    if fc == 22:
        _length(pdu, 7)
        (addr,) = struct.unpack_from(">H", pdu, 1)
        return (Span("holding", addr, addr),)
    if fc == 23:
        if len(pdu) < 10:
            raise Malformed(f"function 23 takes at least 10 bytes of PDU, not {len(pdu)}")
        rstart, rcount, wstart, wcount, nbytes = struct.unpack_from(">HHHHB", pdu, 1)
        read = _span("holding", rstart, rcount, 125)
        write = _span("holding", wstart, wcount, 121)
        if nbytes != 2 * wcount or len(pdu) != 10 + nbytes:
            raise Malformed(f"byte count {nbytes} with {len(pdu) - 10} bytes for quantity {wcount}")
        return (read, write)
    if fc == 24:
        _length(pdu, 3)
        (addr,) = struct.unpack_from(">H", pdu, 1)
        return (Span("holding", addr, addr),)
    if fc in (7, 11, 12, 17):
        _length(pdu, 1)
        return ()
    if fc == 8:
        if len(pdu) < 3:
            raise Malformed(f"function 8 takes a sub-function (3 bytes of PDU), not {len(pdu)}")
        return ()
    if fc == 43:
        _length(pdu, 4)
        return ()
    if fc in (20, 21):
        if len(pdu) < 2 or pdu[1] != len(pdu) - 2:
            raise Malformed(f"function {fc}: byte count does not match the PDU")
        return ()
    raise Malformed(f"function {fc} is not a public Modbus function code", ILLEGAL_FUNCTION)


@dataclass(frozen=True)
class Verdict:
    """What was decided about one request."""

    adu: Adu
    allowed: bool
    code: int | None = None  # the exception code answered, when refused
    reason: str = ""
    spans: tuple[Span, ...] = ()

    @property
    def function(self) -> int:
        return self.adu.function

    def reply(self) -> bytes:
        """The exception response the proxy sends the client for a refused request."""
        assert self.code is not None
        return Adu(
            self.adu.transaction, self.adu.unit, bytes([self.function | 0x80, self.code])
        ).encode()


def _refused(adu: Adu, code: int, reason: str, spans: tuple[Span, ...] = ()) -> Verdict:
    return Verdict(adu, False, code, reason, spans)


@dataclass(frozen=True)
class Policy:
    """A conduit's restriction as the inspector checks it."""

    function_codes: frozenset[int]
    unit_ids: frozenset[int] | None = None  # None: any
    ranges: dict[str, tuple[tuple[int, int], ...]] | None = None  # None: any address
    reset: bool = False  # on_refusal: reset

    @classmethod
    def of(cls, m: ModbusRestriction) -> Policy:
        ranges = None
        if m.ranges is not None:
            ranges = {
                t: tuple(sorted((lo, hi) for lo, hi in m.ranges.of(t)))
                for t in ("coil", "discrete", "input", "holding")
            }
        return cls(
            m.allowed_function_codes(),
            None if m.unit_ids is None else frozenset(m.unit_ids),
            ranges,
            m.on_refusal == "reset",
        )

    def covered(self, span: Span) -> bool:
        """Whether every address of the span lies in one allowed range (ranges that touch
        count as one: [0, 9] and [10, 19] cover 5..14)."""
        if self.ranges is None:
            return True
        first = span.first
        for lo, hi in self.ranges.get(span.table, ()):
            if lo <= first <= hi:
                if span.last <= hi:
                    return True
                first = hi + 1
        return False

    def check(self, adu: Adu) -> Verdict:
        fc = adu.function
        if fc >= 0x80 or fc not in FUNCTION_CODES:
            return _refused(adu, ILLEGAL_FUNCTION, f"function {fc} is not a public Modbus one")
        if fc not in self.function_codes:
            try:  # the addresses it would have touched, for the refusal's event
                spans = request_spans(adu.pdu)
            except Malformed:
                spans = ()
            return _refused(adu, ILLEGAL_FUNCTION, f"function {fc} ({FUNCTION_CODES[fc]})", spans)
        if fc == 43 and (len(adu.pdu) < 2 or adu.pdu[1] != MEI_DEVICE_ID):
            mei = adu.pdu[1] if len(adu.pdu) > 1 else None
            return _refused(adu, ILLEGAL_FUNCTION, f"function 43 with MEI type {mei}, not 14")
        try:
            spans = request_spans(adu.pdu)
        except Malformed as e:
            return _refused(adu, e.code, f"malformed: {e}")
        if self.unit_ids is not None and adu.unit not in self.unit_ids:
            return _refused(adu, GATEWAY_PATH_UNAVAILABLE, f"unit id {adu.unit}", spans)
        for span in spans:
            if not self.covered(span):
                return _refused(adu, ILLEGAL_DATA_ADDRESS, f"address {span}", spans)
        return Verdict(adu, True, spans=spans)


@dataclass
class FromClient:
    """What to do with a chunk from the client."""

    forward: bytes = b""  # to the PLC: the allowed requests, as they came
    reply: bytes = b""  # to the client: exception responses for refused requests
    verdicts: list[Verdict] = field(default_factory=list)
    reset: str | None = None  # why the connection must be reset, or None


@dataclass
class FromServer:
    forward: bytes = b""  # to the client: responses to its requests
    reset: str | None = None


class Session:
    """One proxied connection: the client's requests and the PLC's responses."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self._requests = Reassembler()
        self._responses = Reassembler()
        # transaction id -> (unit id, function code) of each request sent and not answered
        self._outstanding: dict[int, deque[tuple[int, int]]] = {}
        self._count = 0

    @property
    def outstanding(self) -> int:
        return self._count

    def from_client(self, data: bytes) -> FromClient:
        out = FromClient()
        try:
            adus = self._requests.feed(data)
        except FramingError as e:
            out.reset = f"request stream: {e}"
            return out
        forward = bytearray()
        reply = bytearray()
        for adu in adus:
            verdict = self.policy.check(adu)
            out.verdicts.append(verdict)
            if not verdict.allowed:
                if self.policy.reset:
                    out.reset = f"refused request: {verdict.reason}"
                    break
                reply += verdict.reply()
                continue
            if self._count >= MAX_OUTSTANDING:
                out.reset = f"more than {MAX_OUTSTANDING} requests not answered"
                break
            self._outstanding.setdefault(adu.transaction, deque()).append((adu.unit, adu.function))
            self._count += 1
            forward += adu.encode()
        out.forward, out.reply = bytes(forward), bytes(reply)
        return out

    def from_server(self, data: bytes) -> FromServer:
        out = FromServer()
        try:
            adus = self._responses.feed(data)
        except FramingError as e:
            out.reset = f"response stream: {e}"
            return out
        forward = bytearray()
        for adu in adus:
            waiting = self._outstanding.get(adu.transaction)
            if not waiting:
                out.reset = f"a response (transaction {adu.transaction}) to no request"
                break
            unit, fc = waiting[0]
            if adu.unit != unit or adu.function not in (fc, fc | 0x80):
                out.reset = (
                    f"transaction {adu.transaction}: response unit {adu.unit} function "
                    f"{adu.function} to a request to unit {unit} function {fc}"
                )
                break
            waiting.popleft()
            if not waiting:
                del self._outstanding[adu.transaction]
            self._count -= 1
            forward += adu.encode()
        out.forward = bytes(forward)
        return out
