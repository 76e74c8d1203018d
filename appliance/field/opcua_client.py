"""OPC UA field devices: subscribe to (or poll) each tag's node and report values and state.

`OpcUaDevice(device).run(on_value, on_state, stop)` keeps one session to ``device.address``
(``opc.tcp://host:port[/path]``) until `stop` is set:

- It logs on per ``device.security``: policy None or Basic256Sha256 with mode Sign or
  SignAndEncrypt (the unit's certificate from `ensure_certificate(paths)`, so pass `paths`),
  anonymously or with username and password.
- It creates one subscription with a monitored item per tag (publishing and sampling interval
  = ``poll_interval``). A server that refuses subscriptions is read on the schedule instead;
  a tag whose monitored item the server refuses is read on the schedule too.
- ``on_value(tag, value, quality, source_time)``: tag is the tag's name within the device,
  quality "good"/"uncertain"/"bad" from the StatusCode's severity, source_time the
  SourceTimestamp as epoch seconds (None when the server sends none). Numbers get
  ``value * scale + offset`` when a tag sets them; a tag with a `type` has its values
  coerced to that type (bad quality if they cannot be).
- ``on_state(ok, error)``: True/None once the session and monitored items are up; False and
  a one-line reason for every failed attempt or lost session. While the device is down each
  of its tags is reported once with value None and quality "bad".
- After a failure it reconnects with exponential back-off with jitter: attempt n waits
  ``min(cap, initial * 2**n) * (0.5 .. 1.0)``, `initial` 1 s and `cap` 60 s by default
  (constructor parameters); the count starts again after a session was established.

Every asyncua, asyncio and OS exception becomes an `OpcUaError(kind, message)` here and
nowhere else. `write(tag, value)` writes a writable tag, encoding the value as the node's
data type (read from the server at connect).

`probe(device, paths, node, limit)` is the test connection of `appliance.field.probe`: one
session as the device's settings say, the server's state, and (when `node` is given) at
most `limit` children of that node with value, data type and whether they are writable.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Literal

from asyncua import Client, ua
from asyncua.common.subscription import DataChangeEvent, StatusChangeEvent, Subscription
from asyncua.common.ua_utils import data_type_to_variant_type
from asyncua.crypto import security_policies

from appliance.config.field import Device, Tag
from appliance.errors import OpcUaError
from appliance.intrange import INT_RANGE
from appliance.paths import Paths
from appliance.uacert import ensure_certificate

log = logging.getLogger("field.opcua")

Quality = Literal["good", "uncertain", "bad"]
OnValue = Callable[[str, Any, Quality, float | None], None]
OnState = Callable[[bool, str | None], None]

ErrorKind = Literal[
    "config", "connect", "timeout", "security", "auth", "closed", "node", "value", "write"
]

# The integer variant types a write checks the range of (SByte .. UInt64).
_INT_RANGE: dict[ua.VariantType, tuple[int, int]] = {
    vt: INT_RANGE[vt.name.lower()] for vt in ua.VariantType if vt.name.lower() in INT_RANGE
}
SESSION_TIMEOUT_MS = 60_000  # how long a server keeps our session after we vanish
_FLOATS = {ua.VariantType.Float, ua.VariantType.Double}
_INT_TYPES = {"int16", "uint16", "int32", "uint32", "int64", "uint64"}


def quality_of(status: ua.StatusCode | None) -> Quality:
    """OPC UA StatusCode severity: Good (00), Uncertain (01), Bad (10, 11)."""
    if status is None:
        return "good"
    severity = status.value >> 30
    if severity == 0:
        return "good"
    if severity == 1:
        return "uncertain"
    return "bad"


def epoch(ts: datetime | None) -> float | None:
    """A SourceTimestamp as epoch seconds; None (or the OPC UA 'no time' 1601 epoch) -> None."""
    if ts is None:
        return None
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    t = ts.timestamp()
    return t if t > 0 else None


def backoff_delay(attempt: int, initial: float, cap: float, r: float) -> float:
    """Seconds to wait before reconnect attempt `attempt` (0 = first retry); r in [0, 1)."""
    base = min(cap, initial * 2 ** min(attempt, 30))
    return base * (0.5 + 0.5 * r)


def engineering(tag: Tag, value: Any) -> Any:
    """A received value as the tag declares it: scaled, then coerced to `tag.type` if set.

    Raises ValueError when the value cannot be the tag's type.
    """
    number = None if isinstance(value, bool) or not isinstance(value, int | float) else value
    if number is not None and (tag.scale != 1 or tag.offset != 0):
        value = number * tag.scale + tag.offset
    if tag.type is None:
        return value
    if tag.type in ("bool", "bit"):
        if isinstance(value, bool):
            return value
        if isinstance(value, int | float) and value in (0, 1):
            return bool(value)
        raise ValueError(f"{value!r} is not a bool")
    if tag.type == "string":
        return value if isinstance(value, str) else str(value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{value!r} is not a number")
    if tag.type in ("float32", "float64"):
        return float(value)
    # An integer type: scaled values stay floats (as the Modbus decoder does).
    if tag.scale != 1 or tag.offset != 0:
        return float(value)
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError(f"{value!r} is not a whole number for {tag.type}")
        return int(value)
    return value


def encode_for(vtype: ua.VariantType, value: Any, name: str) -> ua.Variant:
    """A value to write as a Variant of the node's type; OpcUaError('value') if it cannot be."""
    try:
        if vtype == ua.VariantType.Boolean:
            if isinstance(value, bool):
                return ua.Variant(value, vtype)
            if isinstance(value, int | float) and value in (0, 1):
                return ua.Variant(bool(value), vtype)
            if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0"):
                return ua.Variant(value.strip().lower() in ("true", "1"), vtype)
            raise ValueError("expected true or false")
        if vtype in _INT_RANGE:
            if isinstance(value, bool):
                raise ValueError("expected a whole number, not a bool")
            number = float(value) if isinstance(value, str) else value
            if not isinstance(number, int | float) or not math.isfinite(number):
                raise ValueError("expected a whole number")
            if isinstance(number, float) and not number.is_integer():
                raise ValueError("expected a whole number")
            lo, hi = _INT_RANGE[vtype]
            if not lo <= int(number) <= hi:
                raise ValueError(f"out of range {lo}..{hi} for {vtype.name}")
            return ua.Variant(int(number), vtype)
        if vtype in _FLOATS:
            if isinstance(value, bool):
                raise ValueError("expected a number, not a bool")
            number = float(value)
            if not math.isfinite(number):
                raise ValueError("expected a finite number")
            return ua.Variant(number, vtype)
        if vtype == ua.VariantType.String:
            return ua.Variant(value if isinstance(value, str) else str(value), vtype)
    except (TypeError, ValueError) as exc:
        raise OpcUaError("value", f"{name}: cannot write {value!r}: {exc}", field="value")
    raise OpcUaError("value", f"{name}: node data type {vtype.name} is not writable from here")


def _parse_node(text: str | None) -> ua.NodeId | ua.ExpandedNodeId:
    if not text:
        raise ValueError("an OPC UA tag needs `node`, e.g. ns=2;s=Temperature")
    try:
        return ua.NodeId.from_string(text)
    except Exception as exc:  # asyncua raises several types for a malformed string
        raise ValueError(f"{text!r} is not a node id ({exc})") from None


def _describe(exc: BaseException) -> tuple[ErrorKind, str]:
    """One domain error kind and a one-line message for any library or OS exception."""
    if isinstance(exc, OpcUaError):
        return exc.kind, exc.message
    if isinstance(exc, asyncio.TimeoutError | TimeoutError):
        return "timeout", "no answer in time"
    if isinstance(exc, ua.UaStatusCodeError):
        name = ua.StatusCode(exc.code).name
        if name in ("BadUserAccessDenied", "BadIdentityTokenRejected", "BadIdentityTokenInvalid"):
            return "auth", f"log-on refused ({name})"
        if "Certificate" in name or "Security" in name:
            return "security", f"security refused ({name})"
        return "connect", name
    if isinstance(exc, ConnectionRefusedError):
        return "connect", "connection refused"
    if isinstance(exc, ConnectionError | OSError):
        text = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return "connect", text or type(exc).__name__
    if isinstance(exc, ua.UaError):
        text = str(exc)
        if "No matching endpoints" in text:
            return "security", f"the server offers no such endpoint ({text})"
        return "connect", text or type(exc).__name__
    return "connect", f"{type(exc).__name__}: {exc}"


class _Lost(Exception):
    """The session ended (transport loss, subscription died); carries the reason."""


class OpcUaDevice:
    """One OPC UA device: its session, subscription or polling, back-off and writes."""

    def __init__(
        self,
        device: Device,
        *,
        paths: Paths | None = None,
        backoff_initial: float = 1.0,
        backoff_cap: float = 60.0,
        rng: Callable[[], float] = random.random,
    ) -> None:
        if device.protocol != "opcua":
            raise OpcUaError("config", f"{device.name}: protocol is {device.protocol}, not opcua")
        if not device.address or not device.address.startswith("opc.tcp://"):
            raise OpcUaError(
                "config",
                f"{device.name}: address must be opc.tcp://host:port[/path] "
                f"(got {device.address!r})",
                field="address",
            )
        sec = device.security
        self.policy = sec.policy if sec else "None"
        self.mode = sec.mode if sec else "None"
        if (self.policy == "None") != (self.mode == "None"):
            raise OpcUaError(
                "config",
                f"{device.name}: security policy {self.policy} needs mode "
                + ("None" if self.policy == "None" else "Sign or SignAndEncrypt")
                + f" (got {self.mode})",
                field="security.mode",
            )
        self.device = device
        self.paths = paths
        self.backoff_initial = backoff_initial
        self.backoff_cap = backoff_cap
        self.rng = rng
        self.tags: dict[str, Tag] = {t.name: t for t in device.tags}
        self.node_ids: dict[str, ua.NodeId | ua.ExpandedNodeId] = {}
        self.invalid: dict[str, str] = {}
        for tag in device.tags:
            try:
                self.node_ids[tag.name] = _parse_node(tag.node)
            except ValueError as exc:
                self.invalid[tag.name] = str(exc)
        self.mode_used: Literal["subscription", "poll", "none"] = "none"
        self.connected = False
        self._client: Client | None = None
        self._nodes: dict[str, ua.NodeId] = {}  # resolved for the current session
        self._vtypes: dict[str, ua.VariantType] = {}
        self._by_node: dict[ua.NodeId, list[str]] = {}

    # -- the session loop -------------------------------------------------------------

    async def run(self, on_value: OnValue, on_state: OnState, stop: asyncio.Event) -> None:
        """Connect, deliver values, reconnect after failures; return soon after `stop` is set."""
        for name, reason in self.invalid.items():
            log.error("%s.%s: %s", self.device.name, name, reason)
            on_value(name, None, "bad", None)
        attempt = 0
        tags_bad = False
        last_error: str | None = None
        while not stop.is_set():
            try:
                await self._session(on_value, on_state, stop)
            except Exception as exc:  # every failure of one session ends here, by design
                was_up, self.connected = self.connected, False
                if stop.is_set():
                    break
                kind, message = ("closed", str(exc)) if isinstance(exc, _Lost) else _describe(exc)
                text = f"{kind}: {message}"
                # the first error is loud, repeats are quiet until the device recovers
                loud = was_up or text != last_error
                log.log(
                    logging.WARNING if loud else logging.DEBUG,
                    "%s: %s",
                    self.device.name,
                    text,
                )
                last_error = text
                on_state(False, text)
                if was_up or not tags_bad:
                    for name in self.node_ids:
                        on_value(name, None, "bad", None)
                    tags_bad = True
                if was_up:
                    attempt = 0
            else:
                break  # _session returns only once stop is set
            delay = backoff_delay(attempt, self.backoff_initial, self.backoff_cap, self.rng())
            attempt += 1
            try:
                await asyncio.wait_for(stop.wait(), delay)
            except TimeoutError:
                pass
        self.connected = False

    async def _session(self, on_value: OnValue, on_state: OnState, stop: asyncio.Event) -> None:
        """One session: connect, set up, deliver until stop (returns) or loss (raises)."""
        dev = self.device
        client = Client(dev.address or "", timeout=dev.timeout, watchdog_intervall=1.0)
        client.name = client.description = "appliance field role"
        client.session_timeout = SESSION_TIMEOUT_MS
        lost = asyncio.Event()
        reason: list[str] = []

        async def on_lost(exc: Exception) -> None:
            reason.append(_describe(exc)[1])
            lost.set()

        client.connection_lost_callback = on_lost
        consumer: asyncio.Task[None] | None = None
        self._client = client
        try:
            await self._configure_security(client)
            if dev.security and dev.security.username:
                client.set_user(dev.security.username)
                client.set_password(dev.security.password or "")
            await asyncio.wait_for(client.connect(), dev.timeout * 4 + 2)
            await self._resolve(client, on_value)
            sub, poll = await self._monitor(client, on_value)
            self.connected = True
            on_state(True, None)
            log.info(
                "%s: connected to %s (%s, %d monitored, %d polled)",
                dev.name,
                dev.address,
                self.mode_used,
                len(self._nodes) - len(poll),
                len(poll),
            )
            if sub is not None:
                consumer = asyncio.create_task(self._consume(sub, on_value, lost, reason))
            await self._wait(client, poll, on_value, stop, lost, reason)
        finally:
            self._client = None
            if consumer is not None:
                consumer.cancel()
                try:
                    await consumer
                except (asyncio.CancelledError, Exception):
                    pass
            await self._close(client)

    async def _configure_security(self, client: Client) -> None:
        if self.policy == "None":
            return
        if self.paths is None:
            raise OpcUaError(
                "security",
                f"{self.device.name}: Basic256Sha256 needs the unit's certificate (no paths given)",
            )
        cert = await asyncio.to_thread(ensure_certificate, self.paths)
        client.application_uri = cert.application_uri
        mode = getattr(ua.MessageSecurityMode, self.mode)
        try:
            await asyncio.wait_for(
                client.set_security(
                    security_policies.SecurityPolicyBasic256Sha256,
                    str(cert.cert_path),
                    str(cert.key_path),
                    mode=mode,
                ),
                self.device.timeout * 2 + 2,
            )
        except ua.UaError as exc:
            raise OpcUaError("security", f"{self.device.name}: {exc}") from None

    async def _resolve(self, client: Client, on_value: OnValue) -> None:
        """Resolve nsu= node ids and read each node's data type (for writes and checks)."""
        nodes: dict[str, ua.NodeId] = {}
        ns_array: list[str] | None = None
        for name, nid in self.node_ids.items():
            if isinstance(nid, ua.ExpandedNodeId) and nid.NamespaceUri:
                if ns_array is None:
                    ns_array = await client.get_namespace_array()
                if nid.NamespaceUri not in ns_array:
                    log.error(
                        "%s.%s: the server has no namespace %s",
                        self.device.name,
                        name,
                        nid.NamespaceUri,
                    )
                    on_value(name, None, "bad", None)
                    continue
                nodes[name] = ua.NodeId(
                    nid.Identifier, ns_array.index(nid.NamespaceUri), nid.NodeIdType
                )
            else:
                nodes[name] = nid
        self._nodes = nodes
        self._by_node = {}
        for name, nid in nodes.items():
            self._by_node.setdefault(nid, []).append(name)
        self._vtypes = {}
        if not nodes:
            return
        names = list(nodes)
        results = await client.read_attributes(
            [client.get_node(nodes[n]) for n in names], ua.AttributeIds.DataType
        )
        for name, dv in zip(names, results, strict=True):
            status = dv.StatusCode
            if status is not None and not status.is_good():
                log.error(
                    "%s.%s: node %s: %s",
                    self.device.name,
                    name,
                    nodes[name].to_string(),
                    status.name,
                )
                continue
            dtype = dv.Value.Value if dv.Value is not None else None
            if not isinstance(dtype, ua.NodeId):
                continue
            if (
                dtype.NamespaceIndex == 0
                and isinstance(dtype.Identifier, int)
                and dtype.Identifier <= 25
            ):
                self._vtypes[name] = ua.VariantType(dtype.Identifier)
            elif self.tags[name].writable:
                self._vtypes[name] = await data_type_to_variant_type(client.get_node(dtype))

    async def _monitor(
        self, client: Client, on_value: OnValue
    ) -> tuple[Subscription | None, list[ua.NodeId]]:
        """A subscription with one monitored item per tag; what cannot be monitored is polled."""
        unique = list(self._by_node)
        if not unique:
            self.mode_used = "subscription"
            return None, []
        period_ms = self.device.poll_interval * 1000
        try:
            sub = await client.create_subscription(period_ms, None, queue_maxsize=10_000)
        except ua.UaStatusCodeError as exc:
            log.warning(
                "%s: no subscriptions (%s); reading every %g s",
                self.device.name,
                ua.StatusCode(exc.code).name,
                self.device.poll_interval,
            )
            self.mode_used = "poll"
            return None, unique
        results = await sub.subscribe_data_change(
            [client.get_node(nid) for nid in unique], queuesize=1, sampling_interval=period_ms
        )
        poll = []
        for nid, result in zip(unique, results, strict=True):
            if isinstance(result, ua.StatusCode):
                log.warning(
                    "%s.%s: not monitored (%s); reading it every %g s",
                    self.device.name,
                    "/".join(self._by_node[nid]),
                    result.name,
                    self.device.poll_interval,
                )
                poll.append(nid)
        if len(poll) == len(unique):
            await self._quiet(sub.delete())
            self.mode_used = "poll"
            return None, poll
        self.mode_used = "subscription"
        return sub, poll

    async def _consume(
        self, sub: Subscription, on_value: OnValue, lost: asyncio.Event, reason: list[str]
    ) -> None:
        async for event in sub:
            if isinstance(event, DataChangeEvent):
                for name in self._by_node.get(event.node.nodeid, ()):
                    self._deliver(name, event.data.monitored_item.Value, on_value)
            elif isinstance(event, StatusChangeEvent):
                status = event.notification.Status
                if status is not None and status.is_bad():
                    reason.append(f"subscription ended ({status.name})")
                    lost.set()
                    return

    def _deliver(self, name: str, dv: ua.DataValue | None, on_value: OnValue) -> None:
        if dv is None:
            on_value(name, None, "bad", None)
            return
        quality = quality_of(dv.StatusCode)
        raw = dv.Value.Value if dv.Value is not None else None
        source_time = epoch(dv.SourceTimestamp)
        if raw is None:
            on_value(name, None, "bad" if quality != "good" else "uncertain", source_time)
            return
        try:
            value = engineering(self.tags[name], raw)
        except ValueError as exc:
            log.warning("%s.%s: %s", self.device.name, name, exc)
            on_value(name, None, "bad", source_time)
            return
        on_value(name, value, quality, source_time)

    async def _wait(
        self,
        client: Client,
        poll: list[ua.NodeId],
        on_value: OnValue,
        stop: asyncio.Event,
        lost: asyncio.Event,
        reason: list[str],
    ) -> None:
        """Until stop (return) or loss (raise _Lost); read the polled nodes on the schedule."""
        interval = self.device.poll_interval
        nodes = [client.get_node(nid) for nid in poll]
        next_poll = time.monotonic()
        while True:
            if stop.is_set():
                return
            if lost.is_set():
                raise _Lost(reason[0] if reason else "connection lost")
            if poll and time.monotonic() >= next_poll:
                try:
                    results = await asyncio.wait_for(
                        client.read_attributes(nodes, ua.AttributeIds.Value),
                        self.device.timeout * 2,
                    )
                except Exception as exc:  # any read failure ends the session: reconnect
                    raise _Lost(f"read failed: {_describe(exc)[1]}") from None
                for nid, dv in zip(poll, results, strict=True):
                    for name in self._by_node[nid]:
                        self._deliver(name, dv, on_value)
                now = time.monotonic()
                next_poll += interval
                if next_poll < now:  # fell behind (slow device): skip, do not burst
                    next_poll = now + interval
            # stop is awaited; loss (set by the library's supervisor) is seen within 0.5 s
            wait = min(0.5, max(0.0, next_poll - time.monotonic())) if poll else 0.5
            try:
                await asyncio.wait_for(stop.wait(), wait)
            except TimeoutError:
                pass

    async def _close(self, client: Client) -> None:
        """Close the session politely if the server still answers; drop the socket anyway."""
        try:
            await asyncio.wait_for(client.disconnect(), min(2.0, self.device.timeout + 1))
        except Exception:  # closing a dead session fails in many ways; the socket goes below
            pass
        try:
            client.disconnect_socket()
        except Exception:  # already closed
            pass

    @staticmethod
    async def _quiet(aw: Awaitable[Any]) -> None:
        try:
            await aw
        except Exception:  # best effort clean-up of a half-set-up subscription
            pass

    # -- writes -----------------------------------------------------------------------

    async def write(self, tag_name: str, value: Any) -> Any:
        """Write a writable tag; returns the value as written. OpcUaError on any failure."""
        tag = self.tags.get(tag_name)
        if tag is None:
            raise OpcUaError("node", f"{self.device.name} has no tag {tag_name}", field="tag")
        if not tag.writable:
            raise OpcUaError("write", f"{self.device.name}.{tag_name} is not writable", field="tag")
        client = self._client
        if client is None or not self.connected:
            raise OpcUaError("closed", f"{self.device.name} is not connected")
        node = self._nodes.get(tag_name)
        vtype = self._vtypes.get(tag_name)
        if node is None or vtype is None:
            raise OpcUaError("node", f"{self.device.name}.{tag_name}: node not available")
        raw = value
        if tag.scale != 1 or tag.offset != 0:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise OpcUaError("value", f"{tag_name}: {value!r} is not a number", field="value")
            raw = (value - tag.offset) / tag.scale
        variant = encode_for(vtype, raw, f"{self.device.name}.{tag_name}")
        try:
            status = await asyncio.wait_for(
                client.uaclient.write_attributes(
                    [node], [ua.DataValue(variant)], ua.AttributeIds.Value
                ),
                self.device.timeout * 2,
            )
        except Exception as exc:  # library/OS errors become one domain error here
            kind, message = _describe(exc)
            raise OpcUaError(
                "timeout" if kind == "timeout" else "write",
                f"{self.device.name}.{tag_name}: write failed: {message}",
            ) from None
        if not status[0].is_good():
            raise OpcUaError(
                "write", f"{self.device.name}.{tag_name}: the device refused ({status[0].name})"
            )
        return variant.Value


# -- a test connection (appliance.field.probe) ---------------------------------------------

_NODE_CLASSES = {c.value: c.name for c in ua.NodeClass}


def _json_value(value: Any, depth: int = 0) -> Any:
    """A node's value as JSON data: numbers, text, booleans, lists; other things as text."""
    if value is None or isinstance(value, bool | int | str):
        return value[:1000] if isinstance(value, str) else value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        return value[:500].hex()
    if isinstance(value, ua.LocalizedText):
        return value.Text
    if isinstance(value, ua.QualifiedName):
        return value.Name
    if isinstance(value, ua.NodeId):
        return value.to_string()
    if isinstance(value, list | tuple):
        return [_json_value(v, depth + 1) for v in value[:100]] if depth < 3 else str(value)[:200]
    return str(value)[:200]


def _type_name(dtype: Any) -> str | None:
    if not isinstance(dtype, ua.NodeId):
        return None
    if dtype.NamespaceIndex == 0 and isinstance(dtype.Identifier, int):
        return ua.ObjectIdNames.get(dtype.Identifier, dtype.to_string())
    return dtype.to_string()


async def probe(
    device: Device, paths: Paths | None, browse: str | None, limit: int
) -> dict[str, Any]:
    """Connect once as the device's settings say, read the server's state and, when
    `browse` names a node, list at most `limit` of its children; then disconnect.

    Returns {"state": "Running", ...} and with a browse {"children": [{node_id, name,
    class, value, type, writable}], "truncated": bool} or {"browse_error": "..."}; a
    failure to connect or log on is an OpcUaError (kind connect, timeout, security,
    auth). The caller bounds the time."""
    dev = OpcUaDevice(device, paths=paths)  # checks the address and the security settings
    client = Client(device.address or "", timeout=device.timeout)
    client.name = client.description = "appliance field role (test connection)"
    client.session_timeout = 10_000
    try:
        try:
            await dev._configure_security(client)
            sec = device.security
            if sec and sec.username:
                client.set_user(sec.username)
                client.set_password(sec.password or "")
            await asyncio.wait_for(client.connect(), device.timeout * 4 + 2)
            state = await asyncio.wait_for(
                client.get_node(ua.ObjectIds.Server_ServerStatus_State).read_value(),
                device.timeout * 2,
            )
        except Exception as exc:  # every failure to get a session is one domain error
            kind, message = _describe(exc)
            raise OpcUaError(kind, message) from None
        try:
            name = ua.ServerState(int(state)).name
        except (TypeError, ValueError):
            name = str(state)
        out: dict[str, Any] = {"state": name}
        if browse is not None:
            try:
                out.update(await _browse(client, browse, limit, device.timeout * 2))
            except Exception as exc:  # the session works; this node could not be listed
                out["browse_error"] = _describe(exc)[1]
        return out
    finally:
        await dev._close(client)


async def _browse(client: Client, text: str, limit: int, timeout: float) -> dict[str, Any]:
    nid = _parse_node(text)
    if isinstance(nid, ua.ExpandedNodeId) and nid.NamespaceUri:
        ns_array = await client.get_namespace_array()
        if nid.NamespaceUri not in ns_array:
            return {"browse_error": f"the server has no namespace {nid.NamespaceUri}"}
        nid = ua.NodeId(nid.Identifier, ns_array.index(nid.NamespaceUri), nid.NodeIdType)
    desc = ua.BrowseDescription()
    desc.NodeId = nid
    desc.BrowseDirection = ua.BrowseDirection.Forward
    desc.ReferenceTypeId = ua.NodeId(ua.ObjectIds.HierarchicalReferences)
    desc.IncludeSubtypes = True
    desc.NodeClassMask = 0
    desc.ResultMask = ua.BrowseResultMask.All
    params = ua.BrowseParameters()
    params.NodesToBrowse.append(desc)
    params.RequestedMaxReferencesPerNode = limit
    results = await asyncio.wait_for(client.uaclient.browse(params), timeout)
    result = results[0]
    if result.StatusCode is not None and not result.StatusCode.is_good():
        return {"browse_error": f"the server says {result.StatusCode.name}"}
    refs = list(result.References or [])
    truncated = bool(result.ContinuationPoint) or len(refs) > limit
    if result.ContinuationPoint:  # we take no more: let the server forget the rest
        done = ua.BrowseNextParameters()
        done.ContinuationPoints = [result.ContinuationPoint]
        done.ReleaseContinuationPoints = True
        try:
            await asyncio.wait_for(client.uaclient.browse_next(done), timeout)
        except Exception:  # releasing is a courtesy; the session closes next anyway
            pass
    refs = refs[:limit]
    children: list[dict[str, Any]] = []
    variables: list[tuple[dict[str, Any], ua.NodeId]] = []
    for ref in refs:
        child_id = ua.NodeId(
            ref.NodeId.Identifier, ref.NodeId.NamespaceIndex, ref.NodeId.NodeIdType
        )
        cls = _NODE_CLASSES.get(int(ref.NodeClass), str(ref.NodeClass))
        item = {
            "node_id": child_id.to_string(),
            "name": (ref.DisplayName.Text if ref.DisplayName else None) or ref.BrowseName.Name,
            "class": cls,
            "value": None,
            "type": None,
            "writable": None,
        }
        children.append(item)
        if cls == "Variable":
            variables.append((item, child_id))
    if variables:
        nodes = [client.get_node(n) for _, n in variables]
        values, types, access = [
            await asyncio.wait_for(client.read_attributes(nodes, attr), timeout)
            for attr in (
                ua.AttributeIds.Value,
                ua.AttributeIds.DataType,
                ua.AttributeIds.UserAccessLevel,
            )
        ]
        for (item, _), v, t, a in zip(variables, values, types, access, strict=True):
            if v.StatusCode is None or v.StatusCode.is_good():
                item["value"] = _json_value(v.Value.Value if v.Value is not None else None)
            item["type"] = _type_name(t.Value.Value if t.Value is not None else None)
            level = a.Value.Value if a.Value is not None else None
            if isinstance(level, int):
                item["writable"] = bool(level & ua.AccessLevel.CurrentWrite.mask)
    return {"children": children, "truncated": truncated}
