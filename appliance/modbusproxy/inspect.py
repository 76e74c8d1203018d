"""The Modbus TCP inspector: a conduit's two byte streams in, a decision per ADU out. No I/O.

A TCP segment may carry several ADUs (some clients pipeline up to 19) and an ADU may be
split over segments, so each stream is reassembled (`Session`: an incomplete ADU waits
for the rest, at most 259 bytes) before anything is decided; nftables sees only the first
ADU of a packet and cannot do this.

Sanity checks, as Snort's and Suricata's Modbus inspectors make them:

- framing (MBAP header): protocol id 0, a length field of at least 2 (unit id and
  function code) and an ADU of at most 260 bytes. A stream that breaks them cannot be
  re-synchronised: the connection is reset (`Session.reset`);
- the function code is a public one, and the PDU's length and counts are what that
  function code defines (quantity limits, byte count = quantity, address + quantity
  within 65536), else the request is refused like a forbidden one;
- responses only to requests: a server's ADU must answer an outstanding request
  (same transaction id, unit id and function code, or its exception); anything else
  resets the connection (`Session.from_server`).

The proxy calls this once per chunk its sockets read, so the common case is lean: a
chunk of whole, allowed reads (function codes 1-4) is checked in place, without an
object per request, and handed back as it came (the same bytes object: nothing is
copied). Everything else (writes, other function codes, refusals) goes through
`Policy.check`, which the fast path must agree with (a property test holds them equal).
Counters are plain ints per function code (`Counts`), shared by a conduit's connections.

Then each request is checked against the conduit's restriction (`Policy`): function
code (43 only as 43/14, read device identification), unit id, and every address the
request touches (a read of 10 registers from 95 touches 95..104; function code 23 its
read range and its write range). A refused request is answered by the proxy itself
with a Modbus exception (`Verdict.reply`) and never reaches the PLC:

  01 illegal function       the function code is not allowed (or not a public one)
  02 illegal data address   an address outside the allowed ranges, or past 65535
  03 illegal data value     a malformed request (a PLC would answer the same)
  0A gateway path unavailable   the unit id is not allowed (nothing is routed to it)

In the restriction's modes `test` and `learn` (`Policy.mode`) nothing is refused: in
`test` each request is checked as above and a refusal that would have been is counted
(`Counts.would`) and handed to the caller (`Session.would`), but the request passes; in
`learn` nothing is checked and each request is handed to the caller (`Session.seen`:
unit, function, the addresses it touches) to be recorded (`learn.Learning`). In every
mode the stream must still be Modbus TCP (framing, responses only to requests).

For the asset inventory the session also keeps which unit id and function code pairs
reached the PLC (`Session.used`, one set insertion per request) and the PLC's answers to
device identification requests (`Session.idents`, function 43/14 responses).
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
_HH = struct.Struct(">HH")
_READS = {1: 2000, 2: 2000, 3: 125, 4: 125}  # the read function codes and their quantity limits


def _framing(proto: int, length: int) -> str | None:
    """Why an MBAP header is not Modbus TCP (no re-synchronising after it), or None."""
    if proto != 0:
        return f"protocol id {proto}, not 0 (Modbus)"
    if length < 2:
        return f"length field {length}: an ADU has a unit id and a function"
    if HEADER - 1 + length > MAX_ADU:
        return (
            f"length field {length}: an ADU is at most {MAX_ADU} bytes, not {HEADER - 1 + length}"
        )
    return None


@dataclass(frozen=True)
class Adu:
    """One Modbus TCP application data unit (built for the requests `Policy.check` takes)."""

    transaction: int
    unit: int
    pdu: bytes

    @property
    def function(self) -> int:
        return self.pdu[0]

    def encode(self) -> bytes:
        return _MBAP.pack(self.transaction, 0, len(self.pdu) + 1, self.unit) + self.pdu


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
    if fc in _READS:
        _length(pdu, 5)
        start, count = _HH.unpack_from(pdu, 1)
        return (_span(table or "", start, count, _READS[fc]),)
    if fc == 5:
        _length(pdu, 5)
        addr, value = _HH.unpack_from(pdu, 1)
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


def _covered(ranges: tuple[tuple[int, int], ...], first: int, last: int) -> bool:
    """Whether every address first..last lies in one of the sorted `ranges` (ranges that
    touch count as one: [0, 9] and [10, 19] cover 5..14)."""
    for lo, hi in ranges:
        if lo <= first <= hi:
            if last <= hi:
                return True
            first = hi + 1
    return False


@dataclass(frozen=True)
class Policy:
    """A conduit's restriction as the inspector checks it."""

    function_codes: frozenset[int]
    unit_ids: frozenset[int] | None = None  # None: any
    ranges: dict[str, tuple[tuple[int, int], ...]] | None = None  # None: any address
    reset: bool = False  # on_refusal: reset
    mode: str = "enforce"  # or test, learn (module docstring)
    # the allowed reads for Session's fast path: function code -> (quantity limit, the
    # table's ranges or None for any address); derived from the fields above
    reads: dict[int, tuple[int, tuple[tuple[int, int], ...] | None]] = field(
        init=False, compare=False, repr=False
    )

    def __post_init__(self) -> None:
        reads = {
            fc: (limit, None if self.ranges is None else self.ranges.get(TABLE_OF[fc], ()))
            for fc, limit in _READS.items()
            if fc in self.function_codes
        }
        object.__setattr__(self, "reads", reads)

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
            m.mode,
        )

    def covered(self, span: Span) -> bool:
        """Whether every address of the span lies in the allowed ranges of its table."""
        if self.ranges is None:
            return True
        return _covered(self.ranges.get(span.table, ()), span.first, span.last)

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


class Counts:
    """Requests allowed and refused, by function code: plain ints, one per code; in mode
    test, `would` the requests that passed but would have been refused."""

    __slots__ = ("allowed", "refused", "would")

    def __init__(self) -> None:
        self.allowed = [0] * 256
        self.refused = [0] * 256
        self.would = [0] * 256

    def as_dict(self) -> dict[str, dict[str, int]]:
        return {
            "allowed": {str(fc): n for fc, n in enumerate(self.allowed) if n},
            "refused": {str(fc): n for fc, n in enumerate(self.refused) if n},
            "would_refuse": {str(fc): n for fc, n in enumerate(self.would) if n},
        }


@dataclass(frozen=True)
class Seen:
    """A request a learning conduit passed: `spans` the addresses it touched; `usable`
    False when no restriction could allow it (malformed, not a public function code,
    function 43 with another MEI type than 14)."""

    unit: int
    function: int
    spans: tuple[Span, ...]
    usable: bool = True


def seen(adu: Adu) -> Seen:
    """What a learning conduit records of a request."""
    fc = adu.function
    if fc not in FUNCTION_CODES or (fc == 43 and adu.pdu[1:2] != bytes([MEI_DEVICE_ID])):
        return Seen(adu.unit, fc, (), False)
    try:
        return Seen(adu.unit, fc, request_spans(adu.pdu))
    except Malformed:
        return Seen(adu.unit, fc, (), False)


# Device identification objects (Modbus application protocol V1.1b3, 6.21): the basic
# ones and the regular ones a unit reports.
DEVICE_OBJECTS = {
    0: "vendor",
    1: "product_code",
    2: "revision",
    3: "vendor_url",
    4: "product_name",
    5: "model_name",
    6: "application_name",
}


def device_identification(pdu: bytes) -> dict[str, str] | None:
    """The objects of a read device identification response PDU (43/14), by name; None
    when the PDU is not one (or is cut short). Text is decoded as Latin-1 (the standard
    says ASCII; some vendors put other bytes in) with control characters dropped."""
    if len(pdu) < 7 or pdu[0] != 43 or pdu[1] != MEI_DEVICE_ID:
        return None
    count = pdu[6]
    off = 7
    out: dict[str, str] = {}
    for _ in range(count):
        if off + 2 > len(pdu):
            return None
        oid, n = pdu[off], pdu[off + 1]
        value = pdu[off + 2 : off + 2 + n]
        if len(value) != n:
            return None
        off += 2 + n
        name = DEVICE_OBJECTS.get(oid)
        if name is not None:
            text = value.decode("latin-1")
            out[name] = "".join(ch for ch in text if ch.isprintable()).strip()[:128]
    return out


class Session:
    """One proxied connection: the client's requests and the PLC's responses.

    `from_client` and `from_server` take the bytes read and return the bytes to pass on.
    What else came of it waits on the session for the caller to take: `reply` (exception
    responses for the client), `refused` (the verdicts of refused requests) and `reset`
    (why the connection must be reset; once set, nothing more is passed); in mode test
    `would` (the verdicts of requests that would have been refused), in mode learn `seen`
    (what passed); in every mode `used` (unit id << 8 | function code of what reached the
    PLC) and `idents` (unit id and PDU of the PLC's device identification answers)."""

    __slots__ = (
        "_count",
        "_more",
        "_own",
        "_req",
        "_resp",
        "_waiting",
        "counts",
        "idents",
        "policy",
        "refused",
        "reply",
        "reset",
        "seen",
        "used",
        "would",
    )  # fmt: skip

    def __init__(self, policy: Policy, counts: Counts | None = None) -> None:
        self.policy = policy
        self.counts = counts if counts is not None else Counts()
        self.reply = b""
        self.refused: list[Verdict] = []
        self.would: list[Verdict] = []
        self.seen: list[Seen] = []
        self.used: set[int] = set()
        self.idents: list[tuple[int, bytes]] = []
        self.reset: str | None = None
        self._req = b""  # the start of a request not complete yet
        self._resp = b""
        # transaction id -> unit id << 8 | function code of the oldest request sent with
        # it and not answered; `_more` the later ones with the same id, in order
        self._waiting: dict[int, int] = {}
        self._more: dict[int, deque[int]] = {}
        self._own: set[int] = set()  # transaction ids of the proxy's own requests
        self._count = 0

    @property
    def outstanding(self) -> int:
        """Requests sent to the PLC and not answered yet."""
        return self._count

    @property
    def pending(self) -> int:
        """Bytes of a request not complete yet."""
        return len(self._req)

    def from_client(self, data: bytes) -> bytes:
        """The allowed requests of `data` (and of what came before it), as they came."""
        if self.reset is not None:
            return b""
        if self._req:
            data, self._req = self._req + data, b""
        if self.policy.mode != "enforce":
            return self._observe(data)
        n = len(data)
        off = start = 0  # the current ADU; the start of the run of allowed ones before it
        runs: list[bytes] | None = None  # when refusals cut the chunk: the runs that pass
        policy = self.policy
        reads = policy.reads
        units = policy.unit_ids
        waiting = self._waiting
        allowed = self.counts.allowed
        used = self.used
        while n - off >= HEADER:
            tid, proto, length, unit = _MBAP.unpack_from(data, off)
            if proto or length < 2 or length > MAX_ADU - HEADER + 1:
                self.reset = f"request stream: {_framing(proto, length)}"
                break
            end = off + HEADER - 1 + length
            if end > n:
                break
            fc = data[off + HEADER]
            read = reads.get(fc)
            if read is not None and length == 6 and (units is None or unit in units):
                first, count = _HH.unpack_from(data, off + HEADER + 1)
                ok = 1 <= count <= read[0] and first + count <= 0x10000
                if ok and read[1] is not None:
                    ok = _covered(read[1], first, first + count - 1)
            else:
                ok = False
            if not ok:
                verdict = policy.check(Adu(tid, unit, data[off + HEADER : end]))
                if not verdict.allowed:
                    self.counts.refused[fc] += 1
                    self.refused.append(verdict)
                    if runs is None:
                        runs = []
                    if off > start:
                        runs.append(data[start:off])
                    off = start = end
                    if policy.reset:
                        self.reset = f"refused request: {verdict.reason}"
                        break
                    self.reply += verdict.reply()
                    continue
            if self._count >= MAX_OUTSTANDING:
                self.reset = f"more than {MAX_OUTSTANDING} requests not answered"
                break
            key = unit << 8 | fc
            if tid in waiting:
                self._more.setdefault(tid, deque()).append(key)
            else:
                waiting[tid] = key
            self._count += 1
            allowed[fc] += 1
            used.add(key)
            off = end
        if self.reset is None and off < n:
            self._req = data[off:]  # a header checked above: less than MAX_ADU bytes
        if runs is not None:
            if off > start:
                runs.append(data[start:off])
            return b"".join(runs)
        return data if start == 0 and off == n else data[start:off]

    def _observe(self, data: bytes) -> bytes:
        """`from_client` in mode test or learn: every request passes (framing still holds);
        in test each is checked and a would-be refusal noted, in learn each is recorded."""
        n = len(data)
        off = 0
        policy = self.policy
        test = policy.mode == "test"
        waiting = self._waiting
        while n - off >= HEADER:
            tid, proto, length, unit = _MBAP.unpack_from(data, off)
            if proto or length < 2 or length > MAX_ADU - HEADER + 1:
                self.reset = f"request stream: {_framing(proto, length)}"
                break
            end = off + HEADER - 1 + length
            if end > n:
                break
            if self._count >= MAX_OUTSTANDING:
                self.reset = f"more than {MAX_OUTSTANDING} requests not answered"
                break
            adu = Adu(tid, unit, data[off + HEADER : end])
            fc = adu.function
            if test:
                verdict = policy.check(adu)
                if not verdict.allowed:
                    self.counts.would[fc] += 1
                    self.would.append(verdict)
            else:
                self.seen.append(seen(adu))
            key = unit << 8 | fc
            if tid in waiting:
                self._more.setdefault(tid, deque()).append(key)
            else:
                waiting[tid] = key
            self._count += 1
            self.counts.allowed[fc] += 1
            self.used.add(key)
            off = end
        if self.reset is not None:
            return data[:off]  # what came before the stream broke
        if off < n:
            self._req = data[off:]
        return data if off == n else data[:off]

    def from_server(self, data: bytes) -> bytes:
        """The responses of `data` (and of what came before it) to the client's requests."""
        if self.reset is not None:
            return b""
        if self._resp:
            data, self._resp = self._resp + data, b""
        n = len(data)
        off = start = 0  # the current ADU; the start of the run to pass on before it
        runs: list[bytes] | None = None  # when the proxy's own answers are cut out
        waiting = self._waiting
        more = self._more
        own = self._own
        while n - off >= HEADER:
            tid, proto, length, unit = _MBAP.unpack_from(data, off)
            if proto or length < 2 or length > MAX_ADU - HEADER + 1:
                self.reset = f"response stream: {_framing(proto, length)}"
                break
            end = off + HEADER - 1 + length
            if end > n:
                break
            fc = data[off + HEADER]
            key = waiting.get(tid)
            if key is None:
                self.reset = f"a response (transaction {tid}) to no request"
                break
            if key != unit << 8 | fc & 0x7F and key != unit << 8 | fc:
                # not its request's unit and function (or exception), nor, for a request
                # with a function code >= 0x80 a learning conduit passed, the same
                self.reset = (
                    f"transaction {tid}: response unit {unit} function {fc} to a request to "
                    f"unit {key >> 8} function {key & 0xFF}"
                )
                break
            if fc == 43:  # device identification (its MEI type checked by the caller)
                self.idents.append((unit, data[off + HEADER : end]))
            later = more.get(tid) if more else None
            if later:
                waiting[tid] = later.popleft()
                if not later:
                    del more[tid]
            else:
                del waiting[tid]
            self._count -= 1
            if own and tid in own:  # the answer to the proxy's own request: not passed on
                own.discard(tid)
                if fc != 43:
                    self.idents.append((unit, data[off + HEADER : end]))  # its exception
                if runs is None:
                    runs = []
                if off > start:
                    runs.append(data[start:off])
                start = end
            off = end
        if self.reset is None and off < n:
            self._resp = data[off:]
        if runs is not None:
            if off > start:
                runs.append(data[start:off])
            return b"".join(runs)
        return data if off == n else data[:off]

    def ask_identification(self, unit: int) -> bytes | None:
        """The proxy's own read device identification request (43/14, basic objects) to
        `unit`, to write to the PLC, with a transaction id that has nothing outstanding
        (so the next answer with it is this one's, which `from_server` keeps out of the
        client's stream and puts in `idents`); None when it cannot be asked now."""
        if self.reset is not None or self._count >= MAX_OUTSTANDING:
            return None
        tid = next((t for t in range(0xFFFF, 0xFEFF, -1) if t not in self._waiting), None)
        if tid is None:
            return None
        self._waiting[tid] = unit << 8 | 43
        self._own.add(tid)
        self._count += 1
        return Adu(tid, unit, bytes([43, MEI_DEVICE_ID, 1, 0])).encode()
