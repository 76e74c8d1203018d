"""The northbound OPC UA server: every tag for IT, read-only unless writable, users required.

It runs in the opcua role's process (appliance/opcua/role.py), never in the field role's:
the stack that parses what the IT network sends is kept apart from the OT connections.

`Northbound(cfg, paths, authenticate, on_write, role_of=...)` wraps an asyncua Server
listening on ``opc.tcp://0.0.0.0:<cfg.port>/`` (the net role's input rules decide who can
reach it):

- Address space: namespace ``urn:appliance:tags`` (index 2); under Objects a folder per
  device (``ns=2;s=<device>``) and in it a variable per tag (``ns=2;s=<device>.<tag>``,
  BrowseName and DisplayName the tag name, Description the tag's description, an
  ``EngineeringUnits`` property (EUInformation, UNECE code when the unit is a known one)
  when the tag has a unit). Values carry the StatusCode for their quality (good -> Good,
  uncertain -> UncertainLastUsableValue, bad -> BadCommunicationError) and SourceTimestamp.
- Users: a username and password checked by ``authenticate(user, password,
  source=<client IP>)`` (-> "admin", "operator", "viewer" or None) on a small thread pool
  of its own (argon2 never runs on the event loop, and a flood of log-ons delays only
  log-ons). The password must come encrypted with the server's key and this session's
  nonce, or in clear inside a SignAndEncrypt channel (BadIdentityTokenRejected
  otherwise; endpoints without encryption ask for it encrypted). Anonymous sessions only
  when ``cfg.allow_anonymous`` (then as viewer). Certificate (X509) user tokens are not
  offered. ``role_of(user)`` (the account's role now, None when disabled or deleted) is
  asked at every write and every `RECHECK_EVERY` s for every session: a demoted admin
  stops writing, a disabled or deleted user's session is refused everything and closed.
- Writes: only to the Value of a tag marked writable, only over a SignAndEncrypt channel
  (BadSecurityModeInsufficient), only by a user whose role is admin now; they go to
  ``await on_write("<device>.<tag>", value, username)`` (which writes the device and
  audits); the node shows the device's value after its next poll. Everyone else gets
  BadUserAccessDenied (BadNotWritable for a tag that is not writable). Nobody may add or
  delete nodes or write other attributes.
- Security: ``cfg.security`` picks the endpoints (Basic256Sha256 SignAndEncrypt and Sign
  by default; None only when listed). Without None a client that opens a None channel
  anyway (asyncua would serve it) gets discovery only, no session
  (BadSecurityPolicyRejected). The unit's certificate (`appliance.uacert`,
  shared with the field role's client) is generated on first start into
  ``<data>/secrets/opcua-cert.der`` and ``opcua-key.pem``: RSA 2048, SHA-256, application
  URI ``urn:<hostname>:appliance`` in the SubjectAltName. Client application certificates
  are accepted without a trust list: sessions are authorised by user name.

- Limits (asyncua's own let one connection that has not logged on make the server buffer
  4 GB): a packet bigger than `MAX_CHUNK` (or what its Hello agreed) is refused at its
  header, a request bigger than `MAX_REQUEST` whole, a Hello asking for buffers under
  8192 bytes and a message the secure channel cannot take close the connection with an
  error message; `MAX_CONNECTIONS` at once, `MAX_CONNECTIONS_PER_SOURCE` from one
  address (more get BadTcpServerTooBusy); a connection without a session after
  `ACTIVATE_WITHIN_S` is closed unless its log-on is being checked; at most
  `MAX_WAITING_LOGONS` log-ons wait for the log-on threads (more: BadServerTooBusy),
  which hash at a lower priority than the event loop; a session holds at most
  `MAX_SUBSCRIPTIONS_PER_SESSION` subscriptions and `MAX_MONITORED_ITEMS_PER_SESSION`
  monitored items, the server `MAX_MONITORED_ITEMS` (more: BadTooManySubscriptions,
  BadTooManyMonitoredItems). Repeated refusals from one address are one warning a minute.

The checks sit in front of asyncua's request handling (`_GuardedServer` ->
`_GuardedBinaryServer` -> `_GuardedProtocol` -> `_GuardedProcessor`), which knows the
connection: its peer address and its channel's security mode, handed to the user manager
and the write path in a context variable (`Channel`) while a request is handled.

`update(name, value, quality, source_time)` is cheap: it records the newest value per tag
and wakes one flusher task, which writes the values straight into the address space
(subscribed clients are notified from there). `reconfigure(devices)` adds and removes
folders and variables in place without a restart.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import dataclasses
import hashlib
import hmac
import logging
import os
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol

import asyncua
from asyncua import Server, ua
from asyncua.common.connection import TransportLimits
from asyncua.common.utils import Buffer, ServiceError
from asyncua.crypto import security_policies, uacrypto
from asyncua.crypto.permission_rules import USER_TYPES, PermissionRuleset, User, UserRole
from asyncua.server.address_space import AttributeService
from asyncua.server.binary_server_asyncio import BinaryServer, OPCUAProtocol
from asyncua.server.uaprocessor import UaProcessor
from asyncua.ua.ua_binary import struct_from_binary, uatcp_to_binary

from appliance import proc
from appliance.config.field import Device, Tag
from appliance.config.field import Northbound as NorthboundConfig
from appliance.errors import ApplianceError, NotFound, PermissionDenied, Timeout
from appliance.intrange import INT_RANGE
from appliance.paths import Paths
from appliance.uacert import Certificate, ensure_certificate

log = logging.getLogger("opcua.server")

NAMESPACE = "urn:appliance:tags"
WRITE_TIMEOUT = 30.0
SHELF_BUILD_S = 300.0  # the address space cache builder's time (seconds; then in memory)
UNECE_NAMESPACE = "http://www.opcfoundation.org/UA/units/un/cefact"

LOGON_THREADS = 2  # password hashes at a time (argon2: a core and 64 MB each)
LOGON_NICE = 10  # how much lower the log-on threads' priority is than the event loop's
MAX_WAITING_LOGONS = 16  # log-ons being checked or queued; more are refused (BadServerTooBusy)
RECHECK_EVERY = 5.0  # seconds between checks of every logged-on user's current role
CUT_AFTER = 0.2  # seconds between refusing a revoked user's request and closing the session

# Transport limits. asyncua's own let one connection that has not logged on make the
# server buffer a packet as big as its header says (up to 4 GB, copied again at every
# read), assemble 100 MB requests from chunks and queue 500 messages, and 1000 such
# connections at once.
MAX_CHUNK = 65535  # bytes in one packet (a chunk); a Hello may ask for less, never more
MIN_BUFFER = 8192  # OPC UA Part 6, 7.1.2.3: the smallest transport buffer a Hello may ask
MAX_REQUEST = 2 << 20  # bytes in one request, all its chunks together
MAX_CONNECTIONS = 100  # TCP connections at once; more are closed at once
MAX_CONNECTIONS_PER_SOURCE = 16  # of them from one client address
MAX_QUEUED = 16  # messages received on one connection and not handled yet
ACTIVATE_WITHIN_S = 20.0  # a connection without an activated session by then is closed
MAX_SUBSCRIPTIONS = 200  # in all sessions together
# One session (a connection holds one) may not take every subscription or fill the
# role's memory with monitored items (~1 KB each in asyncua): more are refused with
# BadTooManySubscriptions / BadTooManyMonitoredItems (IEC 62443-4-2 CR 7.1).
MAX_SUBSCRIPTIONS_PER_SESSION = 10
MAX_MONITORED_ITEMS_PER_SESSION = 20_000
MAX_MONITORED_ITEMS = 100_000  # in all sessions together
# Operations in one request (nodes to read, write, browse ...): asyncua takes any number
# and handles them all on the event loop, about 50 us each (a viewer's read of 10,000
# nodes held every other client for 0.5 s). More: BadTooManyOperations. Published in
# Server.ServerCapabilities.OperationLimits for clients that split their requests.
MAX_OPERATIONS = 1000

Role = Literal["admin", "operator", "viewer"]


class Authenticate(Protocol):
    """`appliance.web.accounts.authenticate`: the role for a right password, else None.
    `source` (the client's IP address) feeds the per-address throttle."""

    def __call__(
        self, username: str, password: str, /, *, source: str | None = None
    ) -> Role | str | None: ...


RoleOf = Callable[[str], "Role | str | None"]  # a user's role now; None: disabled or deleted
OnWrite = Callable[[str, Any, str], Awaitable[Any]]
Quality = Literal["good", "uncertain", "bad"]

STATUS: dict[str, int] = {
    "good": ua.StatusCodes.Good,
    "uncertain": ua.StatusCodes.UncertainLastUsableValue,
    "bad": ua.StatusCodes.BadCommunicationError,
}

_POLICIES: dict[str, ua.SecurityPolicyType] = {
    "None": ua.SecurityPolicyType.NoSecurity,
    "Basic256Sha256-Sign": ua.SecurityPolicyType.Basic256Sha256_Sign,
    "Basic256Sha256-SignAndEncrypt": ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
}

_VTYPE: dict[str, ua.VariantType] = {
    "bool": ua.VariantType.Boolean,
    "bit": ua.VariantType.Boolean,
    "int16": ua.VariantType.Int16,
    "uint16": ua.VariantType.UInt16,
    "int32": ua.VariantType.Int32,
    "uint32": ua.VariantType.UInt32,
    "int64": ua.VariantType.Int64,
    "uint64": ua.VariantType.UInt64,
    "float32": ua.VariantType.Float,
    "float64": ua.VariantType.Double,
    "string": ua.VariantType.String,
}
# The integer variant types the server publishes (Int16 .. UInt64) and their ranges.
_INT_RANGE: dict[ua.VariantType, tuple[int, int]] = {
    vt: INT_RANGE[name] for name, vt in _VTYPE.items() if name in INT_RANGE
}

# Units people write in the configuration -> (UNECE common code, description).
UNITS: dict[str, tuple[str, str]] = {
    "degc": ("CEL", "degree Celsius"),
    "°c": ("CEL", "degree Celsius"),
    "degf": ("FAH", "degree Fahrenheit"),
    "°f": ("FAH", "degree Fahrenheit"),
    "k": ("KEL", "kelvin"),
    "%": ("P1", "percent"),
    "bar": ("BAR", "bar"),
    "mbar": ("MBR", "millibar"),
    "pa": ("PAL", "pascal"),
    "kpa": ("KPA", "kilopascal"),
    "psi": ("PS", "pound-force per square inch"),
    "v": ("VLT", "volt"),
    "mv": ("2Z", "millivolt"),
    "a": ("AMP", "ampere"),
    "ma": ("4K", "milliampere"),
    "w": ("WTT", "watt"),
    "kw": ("KWT", "kilowatt"),
    "kwh": ("KWH", "kilowatt hour"),
    "hz": ("HTZ", "hertz"),
    "rpm": ("RPM", "revolutions per minute"),
    "m": ("MTR", "metre"),
    "mm": ("MMT", "millimetre"),
    "m/s": ("MTS", "metre per second"),
    "s": ("SEC", "second"),
    "ms": ("C26", "millisecond"),
    "min": ("MIN", "minute"),
    "h": ("HUR", "hour"),
    "l": ("LTR", "litre"),
    "l/min": ("L2", "litre per minute"),
    "m3/h": ("MQH", "cubic metre per hour"),
    "kg": ("KGM", "kilogram"),
    "g": ("GRM", "gram"),
    "t": ("TNE", "tonne"),
}


# -- the standard address space, cached on disk ------------------------------------------

_BUILD_SHELF = """
import asyncio, sys
from pathlib import Path
from asyncua.server.internal_server import InternalServer
asyncio.run(InternalServer().load_standard_address_space(Path(sys.argv[1])))
"""


def shelf_path(paths: Paths) -> Path:
    """Where the standard address space is cached (per asyncua version; no dots in the name)."""
    version = asyncua.__version__.replace(".", "_") if hasattr(asyncua, "__version__") else "x"
    return paths.data_dir / "cache" / f"opcua-aspace-{version}"


async def ensure_shelf(paths: Paths) -> Path | None:
    """The cached standard address space, built once in a child process (about 30 MB on disk).

    asyncua then loads standard nodes lazily: the server starts in a fraction of a second
    and holds about 50 MB less memory. None (and the in-memory address space) if it fails.
    """
    shelf = shelf_path(paths)
    if shelf.is_file() or shelf.with_suffix(".db").is_file():
        return shelf
    shelf.parent.mkdir(parents=True, exist_ok=True)
    tmp = shelf.with_name(f"tmp-{os.getpid()}-{shelf.name}")
    child: asyncio.subprocess.Process | None = None
    try:
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _BUILD_SHELF,
            str(tmp),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=proc.clean_env(),
        )
        _, err = await asyncio.wait_for(child.communicate(), SHELF_BUILD_S)
        if child.returncode != 0:
            raise OSError(err.decode(errors="replace").strip().splitlines()[-1:] or "failed")
        for part in tmp.parent.glob(tmp.name + "*"):
            os.replace(part, shelf.with_name(shelf.name + part.name[len(tmp.name) :]))
    except (OSError, TimeoutError) as exc:
        log.warning("OPC UA server: no address space cache (%s); building it in memory", exc)
        await _drop_partial(child, tmp)
        return None
    except asyncio.CancelledError:  # the role stops: no builder left behind, no half file
        await _drop_partial(child, tmp)
        raise
    return shelf


async def _drop_partial(child: asyncio.subprocess.Process | None, tmp: Path) -> None:
    """Kill a shelf builder still running (and reap it) and remove what it wrote."""
    if child is not None and child.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            child.kill()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(child.wait(), 5)
    for part in tmp.parent.glob(tmp.name + "*"):
        part.unlink(missing_ok=True)


# -- pure helpers -------------------------------------------------------------------------


def declared_vtype(tag: Tag) -> ua.VariantType | None:
    """The variant type a tag's values have (None: not declared, taken from the values)."""
    if tag.type is None:
        return None
    if tag.type in ("bool", "bit", "string"):
        return _VTYPE[tag.type]
    if tag.scale != 1 or tag.offset != 0:
        return ua.VariantType.Double  # scaled numbers are floats (as the decoder makes them)
    return _VTYPE[tag.type]


def inferred_vtype(value: Any) -> ua.VariantType | None:
    """The variant type for a value whose tag declares none."""
    if isinstance(value, bool):
        return ua.VariantType.Boolean
    if isinstance(value, int):
        lo, hi = _INT_RANGE[ua.VariantType.Int64]
        if lo <= value <= hi:
            return ua.VariantType.Int64
        return ua.VariantType.UInt64 if 0 <= value < 2**64 else ua.VariantType.Double
    if isinstance(value, float):
        return ua.VariantType.Double
    if isinstance(value, str):
        return ua.VariantType.String
    return None


def to_variant(vtype: ua.VariantType, value: Any) -> ua.Variant | None:
    """`value` as a Variant of `vtype`, or None when it cannot be one (no silent truncation)."""
    if vtype == ua.VariantType.Boolean:
        if isinstance(value, bool):
            return ua.Variant(value, vtype)
        if isinstance(value, int | float) and value in (0, 1):
            return ua.Variant(bool(value), vtype)
        return None
    if vtype == ua.VariantType.String:
        return ua.Variant(value, vtype) if isinstance(value, str) else None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if vtype in (ua.VariantType.Float, ua.VariantType.Double):
        return ua.Variant(float(value), vtype)
    if vtype in _INT_RANGE:
        if isinstance(value, float):
            if not value.is_integer():
                return None
            value = int(value)
        lo, hi = _INT_RANGE[vtype]
        return ua.Variant(value, vtype) if lo <= value <= hi else None
    return None


def eu_information(unit: str) -> ua.EUInformation:
    """EUInformation for a unit as configured: UNECE code when known, else UnitId -1."""
    known = UNITS.get(unit.strip().lower())
    unit_id = -1
    description = unit
    if known:
        code, description = known
        unit_id = 0
        for ch in code:
            unit_id = (unit_id << 8) | ord(ch)
    return ua.EUInformation(
        NamespaceUri=UNECE_NAMESPACE,
        UnitId=unit_id,
        DisplayName=ua.LocalizedText(unit),
        Description=ua.LocalizedText(description),
    )


def _stamp(t: float | None) -> datetime:
    return datetime.fromtimestamp(t, UTC) if t is not None else datetime.now(UTC)


# -- users and permissions ----------------------------------------------------------------


@dataclass
class UaUser(User):
    """A session's user: asyncua role User for everyone, our role decides writes.

    `app_role` follows the accounts while the session lasts (checked at every write and
    every `RECHECK_EVERY` seconds); `revoked` is set when the account is disabled or
    deleted, and from then on the session may do nothing at all until it is closed."""

    app_role: str = "viewer"
    anonymous: bool = False
    revoked: bool = False


MODES: dict[ua.MessageSecurityMode, str] = {
    ua.MessageSecurityMode.None_: "None",
    ua.MessageSecurityMode.Sign: "Sign",
    ua.MessageSecurityMode.SignAndEncrypt: "SignAndEncrypt",
}

# How a client may encrypt its password with the server's key (RSA-OAEP; never PKCS#1 v1.5).
_PASSWORD_CIPHERS: dict[str, Callable[[Any, bytes], bytes]] = {
    "http://www.w3.org/2001/04/xmlenc#rsa-oaep": uacrypto.decrypt_rsa_oaep,
    "http://opcfoundation.org/UA/security/rsa-oaep-sha2-256": uacrypto.decrypt_rsa_oaep_sha256,
}


def password_of(
    token: ua.UserNameIdentityToken,
    mode: ua.MessageSecurityMode,
    nonce: bytes | None,
    private_key: Any,
) -> str:
    """The password in a user name token, if it came protected (ServiceError otherwise).

    Accepted: encrypted with the server's key together with this session's last server
    nonce (so a token seen on a signed-only channel cannot be replayed in another
    session), or in clear inside a SignAndEncrypt channel. A clear password over a None
    or Sign channel is refused (BadIdentityTokenRejected): anyone on the path could read
    it. asyncua itself takes either whatever the channel and ignores the nonce.
    """
    raw = bytes(token.Password or b"")
    if not token.EncryptionAlgorithm:
        if mode != ua.MessageSecurityMode.SignAndEncrypt:
            raise ServiceError(ua.StatusCodes.BadIdentityTokenRejected)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ServiceError(ua.StatusCodes.BadIdentityTokenInvalid) from None
    decrypt = _PASSWORD_CIPHERS.get(token.EncryptionAlgorithm)
    if decrypt is None or private_key is None or not nonce:
        raise ServiceError(ua.StatusCodes.BadIdentityTokenInvalid)
    try:
        plain = decrypt(private_key, raw)
    except Exception:  # not made with our key, or not RSA-OAEP at all
        raise ServiceError(ua.StatusCodes.BadIdentityTokenInvalid) from None
    if len(plain) < 4:
        raise ServiceError(ua.StatusCodes.BadIdentityTokenInvalid)
    (length,) = struct.unpack_from("<I", plain)
    body = plain[4 : 4 + length]
    if length != len(body) or length < len(nonce):
        raise ServiceError(ua.StatusCodes.BadIdentityTokenInvalid)
    secret, sent_nonce = body[: length - len(nonce)], body[length - len(nonce) :]
    if not hmac.compare_digest(sent_nonce, nonce):
        raise ServiceError(ua.StatusCodes.BadIdentityTokenInvalid)
    try:
        return secret.decode("utf-8")
    except UnicodeDecodeError:
        raise ServiceError(ua.StatusCodes.BadIdentityTokenInvalid) from None


@dataclass(frozen=True)
class Logon:
    """A user name token, checked before asyncua activates the session with it."""

    username: str
    password: str
    user: UaUser | None  # None: refused


@dataclass(frozen=True)
class Channel:
    """The secure channel of the request being handled (a context variable meanwhile)."""

    mode: ua.MessageSecurityMode
    source: str | None  # the client's IP address
    logon: Logon | None = None  # for an ActivateSession with a user name token


_CHANNEL: contextvars.ContextVar[Channel | None] = contextvars.ContextVar(
    "appliance_opcua_channel", default=None
)


def _typed(username: str) -> str:
    """A refused log-on's user name as the journal shows it: a short digest, never the
    text, which may be a password typed into the user name box."""
    digest = hashlib.sha256(username.encode("utf-8", "replace")).hexdigest()[:12]
    return f"a user name (sha256 {digest}…)"


def _yield_cpu() -> None:
    """A log-on thread runs at a lower priority (nice +`LOGON_NICE`, inherited by the
    threads argon2 starts for its lanes): during a log-on flood the cores go to the event
    loop first, which answers everyone else's requests."""
    tid = threading.get_native_id()
    try:
        os.setpriority(
            os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + LOGON_NICE)
        )
    except OSError as exc:  # not Linux, or not allowed: hashes at the loop's priority
        log.warning("OPC UA: log-on threads keep their priority: %s", exc)


class _Users:
    """asyncua user manager: password check through `authenticate`, anonymous if allowed.

    asyncua asks `get_user` synchronously on the event loop, and an argon2 hash there
    stalls every client. So the check (`check`, on a thread) is done before asyncua
    activates the session (`_GuardedProcessor`), and `get_user` only hands out its result
    for the same user name and password; a user name log-on not checked so is refused.
    """

    def __init__(self, authenticate: Authenticate, allow_anonymous: bool) -> None:
        self.authenticate = authenticate
        self.allow_anonymous = allow_anonymous

    def check(self, username: str, password: str, source: str | None) -> UaUser | None:
        """The user for a name and password (blocking: runs on a thread), or None."""
        if not username:
            log.warning("OPC UA: log-on without a user name from %s refused", source)
            return None
        try:
            role = self.authenticate(username, password, source=source)
        except ApplianceError as exc:  # e.g. throttled after failed log-ons
            log.warning("OPC UA: log-on refused for %s from %s: %s", _typed(username), source, exc)
            return None
        except Exception:  # a broken authenticator must refuse, never let in
            log.exception("OPC UA: authenticate(%s) failed", _typed(username))
            return None
        if role not in ("admin", "operator", "viewer"):
            log.warning("OPC UA: log-on refused for %s from %s", _typed(username), source)
            return None
        log.info("OPC UA: %s logged on from %s (%s)", username, source, role)
        return UaUser(role=UserRole.User, name=username, app_role=str(role))

    def get_user(
        self,
        iserver: Any,
        username: str | None = None,
        password: str | None = None,
        certificate: Any = None,
    ) -> User | None:
        channel = _CHANNEL.get()
        logon = channel.logon if channel is not None else None
        if logon is not None:
            same = username == logon.username and hmac.compare_digest(
                (password or "").encode(), logon.password.encode()
            )
            return logon.user if same else None
        if username is None:
            if self.allow_anonymous:
                return UaUser(
                    role=UserRole.User, name="anonymous", app_role="viewer", anonymous=True
                )
            log.warning("OPC UA: anonymous log-on refused")
            return None
        log.warning("OPC UA: log-on for %s not checked beforehand: refused", _typed(username))
        return None


class _Ruleset(PermissionRuleset):
    """Sessions may read, browse, subscribe and write (checked per node); nobody may change
    the address space (AddNodes, DeleteNodes, references), not even an admin. A revoked
    user (disabled or deleted since logging on) may do nothing."""

    def __init__(self) -> None:
        self._allowed = {ua.NodeId(t) for t in USER_TYPES}

    def check_validity(self, user: User, action_type_id: ua.NodeId, body: Any) -> bool:
        return isinstance(user, UaUser) and not user.revoked and action_type_id in self._allowed


_INTERNAL = User(role=UserRole.Admin)


class _GuardedAttributes(AttributeService):
    """Client writes to tags go to the owner's check and on_write; all other writes by
    clients are refused. The server's own session (plain admin User) writes freely."""

    def __init__(self, aspace: Any, owner: Northbound) -> None:
        super().__init__(aspace)
        self.owner = owner

    async def write(
        self, params: ua.WriteParameters, user: User | None = None
    ) -> list[ua.StatusCode]:
        if user is None:  # asyncua's default: the caller is the server itself
            user = _INTERNAL
        if not isinstance(user, UaUser):
            if user.role == UserRole.Admin:  # the server's internal session
                return await super().write(params, user)
            return [ua.StatusCode(ua.StatusCodes.BadUserAccessDenied) for _ in params.NodesToWrite]
        return [await self.owner._client_write(wv, user) for wv in params.NodesToWrite]


# -- the network side: asyncua's server with our checks in front --------------------------

_ACTIVATE = ua.NodeId(ua.ObjectIds.ActivateSessionRequest_Encoding_DefaultBinary)
_CREATE_SUBSCRIPTION = ua.NodeId(ua.ObjectIds.CreateSubscriptionRequest_Encoding_DefaultBinary)
_CREATE_ITEMS = ua.NodeId(ua.ObjectIds.CreateMonitoredItemsRequest_Encoding_DefaultBinary)


def _skip(n: int) -> Callable[[Buffer], None]:
    return lambda buf: buf.skip(n)


def _skip_view(buf: Buffer) -> None:  # BrowseParameters: a ViewDescription, then a UInt32
    struct_from_binary(ua.ViewDescription, buf)
    buf.skip(4)


# Requests with a list of operations: what comes before the list's length (Int32).
_OPERATION_LISTS: dict[ua.NodeId, Callable[[Buffer], None]] = {
    ua.NodeId(getattr(ua.ObjectIds, f"{name}Request_Encoding_DefaultBinary")): skip
    for name, skip in (
        ("Read", _skip(12)),  # MaxAge, TimestampsToReturn
        ("Write", _skip(0)),
        ("Browse", _skip_view),
        ("BrowseNext", _skip(1)),  # ReleaseContinuationPoints
        ("TranslateBrowsePathsToNodeIds", _skip(0)),
        ("RegisterNodes", _skip(0)),
        ("UnregisterNodes", _skip(0)),
        ("Call", _skip(0)),
        ("CreateMonitoredItems", _skip(8)),  # SubscriptionId, TimestampsToReturn
        ("ModifyMonitoredItems", _skip(8)),
        ("SetMonitoringMode", _skip(8)),  # SubscriptionId, MonitoringMode
        ("DeleteMonitoredItems", _skip(4)),
        ("DeleteSubscriptions", _skip(0)),
        ("Publish", _skip(0)),  # SubscriptionAcknowledgements
    )
}
_OPERATION_LIMITS = (
    "MaxNodesPerRead",
    "MaxNodesPerWrite",
    "MaxNodesPerBrowse",
    "MaxNodesPerTranslateBrowsePathsToNodeIds",
    "MaxNodesPerRegisterNodes",
    "MaxNodesPerMethodCall",
    "MaxMonitoredItemsPerCall",
)


def operations(typeid: ua.NodeId, body: Buffer) -> int:
    """How many operations a request asks for (0 for a request without a list; a body
    that ends early counts as over the limit)."""
    skip = _OPERATION_LISTS.get(typeid)
    if skip is None:
        return 0
    buf = body.copy()
    try:
        skip(buf)
        (count,) = struct.unpack("<i", buf.read(4))
    except Exception:  # truncated: asyncua would fail on it too
        return MAX_OPERATIONS + 1
    return max(count, 0)


# What a client may ask over a None channel when None is not offered: find the endpoints.
_DISCOVERY = frozenset(
    ua.NodeId(i)
    for i in (
        ua.ObjectIds.GetEndpointsRequest_Encoding_DefaultBinary,
        ua.ObjectIds.FindServersRequest_Encoding_DefaultBinary,
        ua.ObjectIds.FindServersOnNetworkRequest_Encoding_DefaultBinary,
        ua.ObjectIds.CloseSessionRequest_Encoding_DefaultBinary,
        ua.ObjectIds.CloseSecureChannelRequest_Encoding_DefaultBinary,
    )
)


def _peer_ip(peername: Any) -> str | None:
    if isinstance(peername, tuple) and peername and isinstance(peername[0], str):
        return peername[0]
    return None


class _GuardedProcessor(UaProcessor):
    """asyncua's per-connection request handler, with the Northbound's checks first:

    - a None channel gets no session unless None is configured (asyncua itself opens a
      None channel for anyone, whatever policies are set; only discovery is answered);
    - an ActivateSession with a user name token has its password checked (protected,
      then `authenticate` on a thread, with the client's address) before asyncua
      activates the session with that result;
    - the channel's security mode and the client's address are known to the handlers
      while a request is handled (`_CHANNEL`): writes need SignAndEncrypt.
    """

    guard: Northbound
    activating = False  # an ActivateSession is being handled (its password checked)

    async def process(self, header: Any, body: Buffer) -> bool:
        """asyncua's, after refusing a Hello that asks for buffers under `MIN_BUFFER`
        (asyncua would cut its answers into chunks of a few bytes each)."""
        if header.MessageType == ua.MessageType.Hello:
            try:
                msg = struct_from_binary(ua.Hello, body.copy())
            except Exception:  # asyncua answers what it cannot parse
                msg = None
            if msg is not None and min(msg.ReceiveBufferSize, msg.SendBufferSize) < MIN_BUFFER:
                source = _peer_ip(self.name)
                self.guard._warn_once(
                    ("buffers", source),
                    f"OPC UA: {source} asked for {msg.ReceiveBufferSize}/{msg.SendBufferSize}"
                    f" byte buffers (at least {MIN_BUFFER}): refused",
                )
                _refuse(self._transport, ua.StatusCodes.BadTcpInternalError, "buffers too small")
                return False
        return await super().process(header, body)

    def chunk_limit(self) -> int:
        """The largest packet this connection may send now (as its Hello agreed)."""
        return int(self._limits.max_recv_buffer)

    async def _process_message(
        self, typeid: ua.NodeId, requesthdr: Any, seqhdr: Any, body: Buffer
    ) -> Any:
        mode = self._connection.security_policy.Mode
        source = _peer_ip(self.name)
        if (
            mode == ua.MessageSecurityMode.None_
            and not self.guard.allows_none
            and typeid not in _DISCOVERY
        ):
            log.warning("OPC UA: %s asked for a session over a None channel: refused", source)
            raise ServiceError(ua.StatusCodes.BadSecurityPolicyRejected)
        if operations(typeid, body) > MAX_OPERATIONS:
            self.guard._warn_once(
                ("operations", source),
                f"OPC UA: {source} asked for more than {MAX_OPERATIONS} operations at once:"
                " refused",
            )
            raise ServiceError(ua.StatusCodes.BadTooManyOperations)
        if typeid in (_CREATE_SUBSCRIPTION, _CREATE_ITEMS):
            self._check_subscription_limits(typeid, body, source)
        logon = None
        self.activating = typeid == _ACTIVATE
        try:
            if self.activating:
                logon = await self.guard._logon(self, requesthdr, body.copy(), source)
            token = _CHANNEL.set(Channel(mode, source, logon))
            try:
                return await super()._process_message(typeid, requesthdr, seqhdr, body)
            finally:
                _CHANNEL.reset(token)
        finally:
            self.activating = False

    def _check_subscription_limits(
        self, typeid: ua.NodeId, body: Buffer, source: str | None
    ) -> None:
        """Refuse a subscription or monitored items over this session's share (see
        MAX_SUBSCRIPTIONS_PER_SESSION) or over the server's monitored items."""
        session_id = self.session.session_id if self.session is not None else None
        subs = self.iserver.subscription_service.subscriptions.values()
        mine = [sub for sub in subs if sub.session_id == session_id]
        if typeid == _CREATE_SUBSCRIPTION:
            if len(mine) >= MAX_SUBSCRIPTIONS_PER_SESSION:
                self.guard._warn_once(
                    ("subscriptions", source),
                    f"OPC UA: {source} asked for more than {MAX_SUBSCRIPTIONS_PER_SESSION}"
                    " subscriptions in one session: refused",
                )
                raise ServiceError(ua.StatusCodes.BadTooManySubscriptions)
            return
        asked = operations(typeid, body)
        held = sum(_items(sub) for sub in mine)
        total = sum(_items(sub) for sub in subs)
        if held + asked > MAX_MONITORED_ITEMS_PER_SESSION or total + asked > MAX_MONITORED_ITEMS:
            self.guard._warn_once(
                ("monitored items", source),
                f"OPC UA: {source} asked for {asked} more monitored items (the session holds"
                f" {held}, at most {MAX_MONITORED_ITEMS_PER_SESSION}; the server {total}, at"
                f" most {MAX_MONITORED_ITEMS}): refused",
            )
            raise ServiceError(ua.StatusCodes.BadTooManyMonitoredItems)


def _items(sub: Any) -> int:
    """The monitored items of an asyncua InternalSubscription."""
    return len(getattr(sub.monitored_item_srv, "_monitored_items", ()))


def _refuse(transport: Any, code: int, reason: str) -> None:
    """Tell the client why in an OPC UA TCP error message, then close the connection."""
    if transport is None or transport.is_closing():
        return
    with contextlib.suppress(Exception):
        transport.write(
            uatcp_to_binary(ua.MessageType.Error, ua.ErrorMessage(ua.StatusCode(code), reason))
        )
    transport.close()


class _GuardedProtocol(OPCUAProtocol):
    """asyncua's connection, capped per client address, that refuses a packet bigger
    than the limit at its header (asyncua buffers as much as a header says, up to 4 GB,
    before it looks at the size)."""

    guard: Northbound

    def connection_made(self, transport: Any) -> None:
        source = _peer_ip(transport.get_extra_info("peername"))
        same = sum(1 for p in self.clients if _peer_ip(p.peer_name) == source)
        if same >= MAX_CONNECTIONS_PER_SOURCE:
            self.peer_name = transport.get_extra_info("peername")
            self.guard._warn_busy(source)
            _refuse(transport, ua.StatusCodes.BadTcpServerTooBusy, "too many connections")
            return
        super().connection_made(transport)
        if self.processor is not None:  # None: refused (too many connections)
            processor = _GuardedProcessor(self.iserver, self.transport, self.limits)
            processor.guard = self.guard
            processor.set_policies(self.policies)
            self.processor = processor

    async def _activation_watchdog(self) -> None:
        """asyncua's: a connection without an activated session is closed after
        `ACTIVATE_WITHIN_S`; but one whose log-on is being checked then (waiting for a
        log-on thread during a flood) is closed only if that log-on fails."""
        try:
            await asyncio.sleep(self.iserver.max_pending_activation_seconds)
            while isinstance(self.processor, _GuardedProcessor) and self.processor.activating:
                await asyncio.sleep(0.2)
        except asyncio.CancelledError:
            return
        session = self.processor.session if self.processor is not None else None
        if session is None or not session.is_activated():
            log.info("OPC UA: %s did not log on in time: closed", _peer_ip(self.peer_name))
            if self.transport is not None:
                self.transport.close()

    async def _process_one_msg(self, header: Any, buf: Buffer) -> bool:
        """asyncua's, but a message the secure channel layer cannot take (no such channel,
        a bad signature, an unknown type) closes the connection with an error message, as
        OPC UA Part 6 says; asyncua logs it and waits for the next one."""
        try:
            return await super()._process_one_msg(header, buf)
        except Exception as exc:
            source = _peer_ip(self.peer_name)
            code = getattr(exc, "code", None)
            if not isinstance(code, int):
                code = ua.StatusCodes.BadTcpInternalError
            self.guard._warn_once(
                ("bad message", source),
                f"OPC UA: {source} sent a message that cannot be handled "
                f"({type(exc).__name__}: {exc}): connection closed",
            )
            _refuse(self.transport, code, "message refused")
            return False

    def data_received(self, data: bytes) -> None:
        processor = self.processor
        if self.transport is None or self.transport.is_closing():
            return  # refused or closing: take nothing more in
        super().data_received(data)
        if len(self._buffer) < 8 or self.transport.is_closing():
            return
        (size,) = struct.unpack_from("<I", self._buffer, 4)
        limit = processor.chunk_limit() if isinstance(processor, _GuardedProcessor) else 0
        if size > (limit or MAX_CHUNK):
            source = _peer_ip(self.peer_name)
            self.guard._warn_once(
                ("packet", source),
                f"OPC UA: {source} sent a {size} byte packet (at most {limit or MAX_CHUNK}):"
                " connection closed",
            )
            self._buffer = b""
            _refuse(self.transport, ua.StatusCodes.BadTcpMessageTooLarge, "packet too large")


class _GuardedBinaryServer(BinaryServer):
    guard: Northbound

    def _make_protocol(self) -> OPCUAProtocol:
        protocol = _GuardedProtocol(
            iserver=self.iserver,
            policies=self._policies,
            clients=self.clients,
            closing_tasks=self.closing_tasks,
            limits=self.limits,
        )
        protocol.guard = self.guard
        return protocol


class _GuardedServer(Server):
    """asyncua's Server whose listener is `_GuardedBinaryServer` (Server.start of asyncua
    2.1 with that one class changed) and whose endpoints never ask for a clear password."""

    guard: Northbound

    async def start(self) -> None:
        if self.iserver.certificate is not None:
            uacrypto.check_certificate(
                self.iserver.certificate, self._application_uri, socket.gethostname()
            )
        await self._setup_server_nodes()
        _passwords_encrypted(self.iserver.endpoints)
        await self.iserver.start()
        try:
            host, port = self._get_bind_socket_info()
            bserver = _GuardedBinaryServer(self.iserver, host, port, self.limits)
            bserver.guard = self.guard
            bserver.set_policies(self._policies)
            self.bserver = bserver
            await bserver.start()
        except BaseException:
            await self.iserver.stop()
            raise


def _passwords_encrypted(endpoints: list[ua.EndpointDescription]) -> None:
    """On endpoints without encryption, ask for the password encrypted with the server's
    key (asyncua asks for it in clear when no SignAndEncrypt policy is configured)."""
    for ep in endpoints:
        if ep.SecurityMode == ua.MessageSecurityMode.SignAndEncrypt:
            continue
        for policy in ep.UserIdentityTokens:
            if policy.TokenType == ua.UserTokenType.UserName and policy.SecurityPolicyUri in (
                None,
                "",
                security_policies.SecurityPolicyNone.URI,
            ):
                policy.SecurityPolicyUri = security_policies.SecurityPolicyBasic256Sha256.URI


# -- the server ---------------------------------------------------------------------------


@dataclass
class _Var:
    full: str
    nodeid: ua.NodeId
    tag: Tag
    vtype: ua.VariantType | None  # the node's current DataType (None: BaseDataType yet)


class Northbound:
    """The northbound OPC UA server (see the module docstring)."""

    def __init__(
        self,
        cfg: NorthboundConfig,
        paths: Paths,
        authenticate: Authenticate,
        on_write: OnWrite,
        *,
        role_of: RoleOf | None = None,
        recheck_every: float = RECHECK_EVERY,
        listen: str = "0.0.0.0",
    ) -> None:
        self.cfg = cfg
        self.paths = paths
        self.authenticate = authenticate
        self.on_write = on_write
        self.role_of = role_of
        self.recheck_every = recheck_every
        self.listen = listen
        self._users = _Users(authenticate, cfg.allow_anonymous)
        self._logon_pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._recheck: asyncio.Task[None] | None = None
        self._cuts: set[asyncio.Task[None]] = set()
        self.certificate: Certificate | None = None
        self.idx = 2
        self._server: Server | None = None
        self._vars: dict[str, _Var] = {}
        self._by_nodeid: dict[ua.NodeId, _Var] = {}
        self._devices: dict[str, Device] = {}
        self._pending: dict[str, tuple[Any, str, float | None]] = {}
        self._pending_lock = threading.Lock()  # update() may come from another thread
        self._wake: asyncio.Event | None = None
        self._kicked = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._flusher: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._type_warned: set[str] = set()
        self._warned: dict[object, float] = {}
        self._waiting = 0  # log-ons waiting for a log-on thread or on one
        self.published = 0

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def server(self) -> Server | None:
        """The asyncua Server while running (for diagnostics and tests)."""
        return self._server

    @property
    def sessions(self) -> int:
        """Clients connected now (each holds one session)."""
        bserver = self._server.bserver if self._server is not None else None
        return len(bserver.clients) if bserver is not None else 0

    @property
    def endpoint(self) -> str:
        return f"opc.tcp://{self.listen}:{self.cfg.port}/"

    @property
    def allows_none(self) -> bool:
        """Whether sessions may run over a None channel (only when configured)."""
        return "None" in self.cfg.security

    async def start(self, devices: Iterable[Device]) -> None:
        """Generate/load the certificate, build the address space, listen. No-op if disabled."""
        if not self.cfg.enabled:
            log.info("OPC UA server disabled (opcua_server.enabled: false)")
            return
        if self._server is not None:
            raise ApplianceError("the OPC UA server is already running")
        policies = [_POLICIES[p] for p in dict.fromkeys(self.cfg.security)]
        if not policies:
            raise ApplianceError(
                "at least one security policy is needed", field="opcua_server.security"
            )
        self.certificate = await asyncio.to_thread(ensure_certificate, self.paths)
        server = _GuardedServer(user_manager=self._users)
        server.guard = self
        await server.init(await ensure_shelf(self.paths))
        server.set_endpoint(self.endpoint)
        server.set_server_name("IT/OT demarcation appliance")
        server.product_uri = "urn:appliance:opcua-server"
        server.manufacturer_name = "appliance"
        await server.set_application_uri(self.certificate.application_uri)
        await server.load_certificate(str(self.certificate.cert_path))
        await server.load_private_key(str(self.certificate.key_path))
        server.set_security_policy(policies, permission_ruleset=_Ruleset())
        tokens: list[type] = [ua.UserNameIdentityToken]
        if self.cfg.allow_anonymous:
            tokens.insert(0, ua.AnonymousIdentityToken)
        server.set_identity_tokens(tokens)
        if self.allows_none:
            log.warning(
                "OPC UA server: security None offered: values travel unsigned (passwords "
                "are still encrypted; writes need SignAndEncrypt)"
            )
        iserver = server.iserver
        iserver.attribute_service = _GuardedAttributes(iserver.aspace, self)
        server.limits = TransportLimits(
            max_recv_buffer=MAX_CHUNK,
            max_send_buffer=MAX_CHUNK,
            max_chunk_count=-(-MAX_REQUEST // MAX_CHUNK),
            max_message_size=MAX_REQUEST,
        )
        iserver.max_connections = MAX_CONNECTIONS
        iserver.max_pending_messages_per_connection = MAX_QUEUED
        iserver.max_pending_activation_seconds = ACTIVATE_WITHIN_S
        iserver.max_subscriptions = MAX_SUBSCRIPTIONS
        for limit in _OPERATION_LIMITS:
            node = server.get_node(
                ua.NodeId(
                    getattr(ua.ObjectIds, f"Server_ServerCapabilities_OperationLimits_{limit}")
                )
            )
            await node.write_value(ua.Variant(MAX_OPERATIONS, ua.VariantType.UInt32))
        self.idx = await server.register_namespace(NAMESPACE)
        self._server = server
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._wake = asyncio.Event()
        self._logon_pool = concurrent.futures.ThreadPoolExecutor(
            LOGON_THREADS, thread_name_prefix="opcua-logon", initializer=_yield_cpu
        )
        try:
            await self._apply(list(devices))
            await server.start()
        except OSError as exc:
            self._server = None
            self._stop_logons()
            raise ApplianceError(
                f"cannot listen on port {self.cfg.port}: {exc.strerror or exc}",
                field="opcua_server.port",
            ) from None
        except BaseException:
            self._server = None
            self._stop_logons()
            raise
        self._flusher = asyncio.create_task(self._flush_loop(), name="opcua-northbound-flush")
        if self.role_of is not None:
            self._recheck = asyncio.create_task(self._recheck_loop(), name="opcua-recheck")
        if self._pending:
            self._wake.set()
        log.info(
            "OPC UA server on %s (certificate %s, SHA-1 %s): %d device(s), %d tag(s), "
            "security %s, anonymous %s",
            self.endpoint,
            self.certificate.application_uri,
            self.certificate.thumbprint,
            len(self._devices),
            len(self._vars),
            ", ".join(self.cfg.security),
            "allowed" if self.cfg.allow_anonymous else "refused",
        )

    async def reconfigure(self, devices: Iterable[Device]) -> None:
        """Make the address space match `devices`: add, remove and update in place."""
        if self._server is None:
            self._devices = {d.name: d for d in devices}
            return
        await self._apply(list(devices))

    def update(
        self, name: str, value: Any, quality: Quality | str, source_time: float | None
    ) -> None:
        """Record a tag's newest value; one flusher task publishes it (thread-safe, cheap)."""
        with self._pending_lock:
            self._pending[name] = (value, quality, source_time)
            if self._kicked or self._wake is None or self._loop is None:
                return
            self._kicked = True
        if threading.get_ident() == self._loop_thread:
            self._wake.set()
        else:
            self._loop.call_soon_threadsafe(self._wake.set)

    async def flush(self) -> None:
        """Publish everything recorded so far now (tests, shutdown)."""
        await self._flush_once()

    async def stop(self) -> None:
        """Stop listening and drop every session."""
        server, self._server = self._server, None
        tasks = [t for t in (self._flusher, self._recheck, *self._cuts) if t is not None]
        self._flusher = self._recheck = None
        for task in tasks:
            task.cancel()
        for task in tasks:
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        if server is not None:
            await server.stop()
            log.info("OPC UA server stopped")
        self._stop_logons()

    def _stop_logons(self) -> None:
        pool, self._logon_pool = self._logon_pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    def _warn_once(self, what: object, message: str) -> None:
        """`message` as a warning at most once a minute per `what`, not once per try."""
        now = time.monotonic()
        if now - self._warned.get(what, -60.0) >= 60.0:
            if len(self._warned) > 1000:
                self._warned.clear()
            self._warned[what] = now
            log.warning("%s", message)

    def _warn_busy(self, source: str | None) -> None:
        self._warn_once(
            source,
            f"OPC UA: {source} has {MAX_CONNECTIONS_PER_SOURCE} connections open: more refused",
        )

    # -- users --------------------------------------------------------------------------

    async def _logon(
        self, processor: UaProcessor, requesthdr: Any, body: Buffer, source: str | None
    ) -> Logon | None:
        """Check the user name token of an ActivateSession (None: not one; asyncua goes on
        as usual). The password must come protected (`password_of`), then it is checked
        on a thread of its own pool, so a flood of log-ons delays only log-ons."""
        try:
            params = struct_from_binary(ua.ActivateSessionParameters, body)
        except Exception:  # asyncua answers what it cannot parse
            return None
        token = params.UserIdentityToken
        if not isinstance(token, ua.UserNameIdentityToken):
            return None
        session = processor.session or processor.iserver.lookup_external_session(
            requesthdr.AuthenticationToken
        )
        if session is None or session.nonce is None:
            return None  # asyncua refuses it: no such session
        policy = processor._connection.security_policy
        # asyncua checks this signature next; checked first, a forged request costs no hash
        challenge = (policy.host_certificate or b"") + session.nonce
        policy.asymmetric_cryptography.verify(challenge, params.ClientSignature.Signature)
        username = token.UserName or ""
        try:
            password = password_of(token, policy.Mode, session.nonce, processor.iserver.private_key)
        except ServiceError as exc:
            why = ua.StatusCode(exc.code).name
            log.warning("OPC UA: log-on for %s from %s refused: %s", _typed(username), source, why)
            raise
        pool = self._logon_pool
        if pool is None:  # stopping
            raise ServiceError(ua.StatusCodes.BadServerHalted)
        if self._waiting >= MAX_WAITING_LOGONS:
            self._warn_once("logons", f"OPC UA: {MAX_WAITING_LOGONS} log-ons wait: more refused")
            log.info("OPC UA: log-on from %s refused: too many waiting", source)
            raise ServiceError(ua.StatusCodes.BadServerTooBusy)
        self._waiting += 1
        try:
            loop = asyncio.get_running_loop()
            user = await loop.run_in_executor(pool, self._users.check, username, password, source)
        finally:
            self._waiting -= 1
        return Logon(username, password, user)

    def _session_users(self) -> list[tuple[UaUser, Any, Any]]:
        """(user, session, transport or None) of every client session now."""
        server = self._server
        if server is None:
            return []
        seen: dict[int, tuple[UaUser, Any, Any]] = {}
        bserver = server.bserver
        for protocol in list(bserver.clients) if bserver is not None else []:
            session = protocol.processor.session if protocol.processor is not None else None
            if session is not None and isinstance(session.user, UaUser):
                seen[id(session)] = (session.user, session, protocol.transport)
        # sessions with subscriptions outlive their connection (to be re-activated)
        for session in list(getattr(server.iserver, "_external_sessions", {}).values()):
            if isinstance(session.user, UaUser):
                seen.setdefault(id(session), (session.user, session, None))
        return list(seen.values())

    def _apply_role(self, name: str, role: str | None) -> None:
        """Make every session of `name` follow its account: the new role, or cut."""
        for user, session, transport in self._session_users():
            if user.name != name or user.anonymous or user.revoked:
                continue
            if role is None:
                user.revoked = True
                log.warning("OPC UA: %s is disabled or deleted: closing the session", name)
                task = asyncio.create_task(self._cut(session, transport))
                self._cuts.add(task)
                task.add_done_callback(self._cuts.discard)
            elif role != user.app_role:
                log.info("OPC UA: %s is %s now (was %s)", name, role, user.app_role)
                user.app_role = str(role)

    async def _cut(self, session: Any, transport: Any) -> None:
        """Close a revoked user's session (after the refusal has gone out) and its connection."""
        await asyncio.sleep(CUT_AFTER)
        try:
            await session.close_session(True)
        except Exception:  # best effort: the ruleset refuses everything meanwhile
            log.exception("OPC UA: closing a session failed")
        if transport is not None:
            transport.close()

    async def _current_role(self, user: UaUser) -> str | None:
        """The user's role as the accounts say now (None: disabled or deleted)."""
        if self.role_of is None or user.anonymous or not user.name:
            return None if user.revoked else user.app_role
        role = await asyncio.to_thread(self.role_of, user.name)
        self._apply_role(user.name, role)
        return None if user.revoked else role

    async def _recheck_loop(self) -> None:
        """Every `recheck_every` s: each logged-on user's role, so a disabled user's reads
        and subscriptions stop too, not only their writes."""
        assert self.role_of is not None
        while True:
            await asyncio.sleep(self.recheck_every)
            names = {u.name for u, _, _ in self._session_users() if u.name and not u.anonymous}
            for name in sorted(names):
                try:
                    role = await asyncio.to_thread(self.role_of, name)
                except Exception as exc:  # a busy DB: try again next time, keep the session
                    log.warning("OPC UA: cannot check the role of %s: %s", name, exc)
                    continue
                self._apply_role(name, role)

    # -- publishing ---------------------------------------------------------------------

    async def _flush_loop(self) -> None:
        assert self._wake is not None
        while True:
            await self._wake.wait()
            try:
                await self._flush_once()
            except Exception:  # one bad value must not stop publishing the others
                log.exception("OPC UA server: publishing values failed")

    async def _flush_once(self) -> None:
        assert self._wake is not None
        self._wake.clear()
        with self._pending_lock:
            self._kicked = False
            batch, self._pending = self._pending, {}
        if not batch or self._server is None:
            return
        async with self._lock:
            for name, (value, quality, source_time) in batch.items():
                var = self._vars.get(name)
                if var is not None:
                    await self._publish(var, value, quality, source_time)

    async def _publish(
        self, var: _Var, value: Any, quality: str, source_time: float | None
    ) -> None:
        server = self._server
        assert server is not None
        now = datetime.now(UTC)
        code = STATUS.get(quality, ua.StatusCodes.BadCommunicationError)
        if value is None or quality == "bad":
            if value is None and quality != "bad":
                code = ua.StatusCodes.BadNoData
            dv = ua.DataValue(ua.Variant(None), ua.StatusCode(code), _stamp(source_time), now)
            await server.write_attribute_value(var.nodeid, dv)
            self.published += 1
            return
        variant = to_variant(var.vtype, value) if var.vtype is not None else None
        if variant is None:
            vtype = inferred_vtype(value)
            if vtype is None or (var.vtype is not None and var.tag.type is not None):
                if var.full not in self._type_warned:
                    self._type_warned.add(var.full)
                    log.warning("OPC UA server: %s: %r does not fit %s", var.full, value, var.vtype)
                dv = ua.DataValue(
                    ua.Variant(None), ua.StatusCode(ua.StatusCodes.BadTypeMismatch), now, now
                )
                await server.write_attribute_value(var.nodeid, dv)
                return
            await self._retype(var, vtype)
            variant = to_variant(vtype, value)
            assert variant is not None
        dv = ua.DataValue(variant, ua.StatusCode(code), _stamp(source_time), now)
        await server.write_attribute_value(var.nodeid, dv)
        self.published += 1

    async def _retype(self, var: _Var, vtype: ua.VariantType) -> None:
        """Change the DataType of a variable whose tag declares no type to its values' type."""
        server = self._server
        assert server is not None
        empty = ua.DataValue(
            ua.Variant(None), ua.StatusCode(ua.StatusCodes.BadWaitingForInitialData)
        )
        await server.write_attribute_value(var.nodeid, empty)
        await server.write_attribute_value(
            var.nodeid,
            ua.DataValue(ua.Variant(ua.NodeId(vtype.value), ua.VariantType.NodeId)),
            ua.AttributeIds.DataType,
        )
        var.vtype = vtype

    # -- client writes ------------------------------------------------------------------

    async def _client_write(self, wv: ua.WriteValue, user: UaUser) -> ua.StatusCode:
        var = self._by_nodeid.get(wv.NodeId)
        who = user.name or "anonymous"
        if var is None:
            log.warning("OPC UA: %s may not write %s", who, wv.NodeId.to_string())
            return ua.StatusCode(ua.StatusCodes.BadUserAccessDenied)
        if wv.AttributeId != ua.AttributeIds.Value or not var.tag.writable:
            log.warning("OPC UA: %s tried to write %s (not writable)", who, var.full)
            return ua.StatusCode(ua.StatusCodes.BadNotWritable)
        if wv.IndexRange:
            return ua.StatusCode(ua.StatusCodes.BadWriteNotSupported)
        channel = _CHANNEL.get()
        if channel is None or channel.mode != ua.MessageSecurityMode.SignAndEncrypt:
            mode = MODES.get(channel.mode, "?") if channel is not None else "unknown"
            log.warning("OPC UA: %s may not write %s over a %s channel", who, var.full, mode)
            return ua.StatusCode(ua.StatusCodes.BadSecurityModeInsufficient)
        if user.anonymous or user.name in (None, "anonymous"):
            log.warning("OPC UA: %s may not write %s", who, var.full)
            return ua.StatusCode(ua.StatusCodes.BadUserAccessDenied)
        try:
            role = await self._current_role(user)
        except Exception as exc:  # the accounts cannot say: no write on an old answer
            log.warning("OPC UA: cannot check the role of %s: %s", who, exc)
            return ua.StatusCode(ua.StatusCodes.BadInternalError)
        if role != "admin":
            log.warning("OPC UA: %s (%s) may not write %s", who, role or "revoked", var.full)
            return ua.StatusCode(ua.StatusCodes.BadUserAccessDenied)
        dv = wv.Value
        value = dv.Value.Value if dv is not None and dv.Value is not None else None
        if value is None or isinstance(value, list | tuple):
            return ua.StatusCode(ua.StatusCodes.BadTypeMismatch)
        try:
            await asyncio.wait_for(self.on_write(var.full, value, who), WRITE_TIMEOUT)
        except NotFound:
            return ua.StatusCode(ua.StatusCodes.BadNodeIdUnknown)
        except PermissionDenied:
            return ua.StatusCode(ua.StatusCodes.BadUserAccessDenied)
        except (Timeout, TimeoutError):
            return ua.StatusCode(ua.StatusCodes.BadTimeout)
        except ApplianceError as exc:
            log.warning("OPC UA: %s writing %s = %r: %s", who, var.full, value, exc)
            if exc.field == "value":
                return ua.StatusCode(ua.StatusCodes.BadTypeMismatch)
            return ua.StatusCode(ua.StatusCodes.BadCommunicationError)
        except Exception:  # the write hook failing must answer the client, not kill the server
            log.exception("OPC UA: writing %s failed", var.full)
            return ua.StatusCode(ua.StatusCodes.BadInternalError)
        log.info("OPC UA: %s wrote %s = %r", who, var.full, value)
        return ua.StatusCode()

    # -- address space ------------------------------------------------------------------

    async def _apply(self, devices: list[Device]) -> None:
        server = self._server
        assert server is not None
        async with self._lock:
            want_devices = {d.name: d for d in devices}
            want_tags = {f"{d.name}.{t.name}": (d, t) for d in devices for t in d.tags}
            isession = server.iserver.isession
            # removed tags and devices
            gone_tags = [n for n in self._vars if n not in want_tags]
            changed = [
                n
                for n in self._vars
                if n in want_tags
                and declared_vtype(want_tags[n][1]) != declared_vtype(self._vars[n].tag)
            ]
            doomed = [server.get_node(self._vars[n].nodeid) for n in gone_tags + changed]
            gone_devices = [n for n in self._devices if n not in want_devices]
            doomed += [server.get_node(self._folder_id(n)) for n in gone_devices]
            if doomed:
                await server.delete_nodes(doomed, recursive=True)
            for n in gone_tags + changed:
                var = self._vars.pop(n)
                self._by_nodeid.pop(var.nodeid, None)
            # new devices: folders
            items = []
            for name, dev in want_devices.items():
                if name not in self._devices:
                    items.append(self._folder_item(dev))
                elif dev.description != self._devices[name].description:
                    await self._set_text(
                        self._folder_id(name), ua.AttributeIds.Description, dev.description or name
                    )
            await self._add(isession, items)
            # new tags: variables (+ EngineeringUnits)
            items = []
            fresh: list[_Var] = []
            for full, (dev, tag) in want_tags.items():
                old = self._vars.get(full)
                if old is None:
                    var = _Var(full, ua.NodeId(full, self.idx), tag, declared_vtype(tag))
                    items.extend(self._variable_items(dev, var))
                    fresh.append(var)
                elif old.tag != tag:
                    await self._update_attributes(isession, old, tag)
                    old.tag = tag
            await self._add(isession, items)
            waiting = ua.DataValue(
                ua.Variant(None), ua.StatusCode(ua.StatusCodes.BadWaitingForInitialData)
            )
            for var in fresh:
                await server.write_attribute_value(var.nodeid, waiting)
                self._vars[var.full] = var
                self._by_nodeid[var.nodeid] = var
            self._devices = want_devices
        if self._wake is not None and self._pending:
            self._wake.set()

    def _folder_id(self, device: str) -> ua.NodeId:
        return ua.NodeId(device, self.idx)

    def _folder_item(self, dev: Device) -> ua.AddNodesItem:
        item = ua.AddNodesItem()
        item.RequestedNewNodeId = self._folder_id(dev.name)
        item.BrowseName = ua.QualifiedName(dev.name, self.idx)
        item.NodeClass = ua.NodeClass.Object
        item.ParentNodeId = ua.NodeId(ua.ObjectIds.ObjectsFolder)
        item.ReferenceTypeId = ua.NodeId(ua.ObjectIds.Organizes)
        item.TypeDefinition = ua.NodeId(ua.ObjectIds.FolderType)
        attrs = ua.ObjectAttributes()
        attrs.DisplayName = ua.LocalizedText(dev.name)
        attrs.Description = ua.LocalizedText(dev.description or dev.name)
        attrs.EventNotifier = 0
        attrs.WriteMask = 0
        attrs.UserWriteMask = 0
        item.NodeAttributes = attrs
        return item

    def _variable_items(self, dev: Device, var: _Var) -> list[ua.AddNodesItem]:
        tag = var.tag
        item = ua.AddNodesItem()
        item.RequestedNewNodeId = var.nodeid
        item.BrowseName = ua.QualifiedName(tag.name, self.idx)
        item.NodeClass = ua.NodeClass.Variable
        item.ParentNodeId = self._folder_id(dev.name)
        item.ReferenceTypeId = ua.NodeId(ua.ObjectIds.Organizes)
        item.TypeDefinition = ua.NodeId(ua.ObjectIds.BaseDataVariableType)
        attrs = ua.VariableAttributes()
        attrs.DisplayName = ua.LocalizedText(tag.name)
        attrs.Description = ua.LocalizedText(tag.description or var.full)
        attrs.DataType = (
            ua.NodeId(var.vtype.value) if var.vtype else ua.NodeId(ua.ObjectIds.BaseDataType)
        )
        attrs.Value = ua.Variant(None)
        attrs.ValueRank = ua.ValueRank.Scalar
        attrs.ArrayDimensions = None
        attrs.WriteMask = 0
        attrs.UserWriteMask = 0
        attrs.Historizing = False
        attrs.MinimumSamplingInterval = 0.0
        attrs.AccessLevel = self._access(tag)
        attrs.UserAccessLevel = self._access(tag)
        item.NodeAttributes = attrs
        items = [item]
        if tag.unit:
            items.append(self._eu_item(var))
        return items

    def _eu_item(self, var: _Var) -> ua.AddNodesItem:
        item = ua.AddNodesItem()
        item.RequestedNewNodeId = ua.NodeId(f"{var.full}.EngineeringUnits", self.idx)
        item.BrowseName = ua.QualifiedName("EngineeringUnits", 0)
        item.NodeClass = ua.NodeClass.Variable
        item.ParentNodeId = var.nodeid
        item.ReferenceTypeId = ua.NodeId(ua.ObjectIds.HasProperty)
        item.TypeDefinition = ua.NodeId(ua.ObjectIds.PropertyType)
        attrs = ua.VariableAttributes()
        attrs.DisplayName = ua.LocalizedText("EngineeringUnits")
        attrs.Description = ua.LocalizedText(f"engineering unit of {var.full}")
        attrs.DataType = ua.NodeId(ua.ObjectIds.EUInformation)
        attrs.Value = ua.Variant(eu_information(var.tag.unit), ua.VariantType.ExtensionObject)
        attrs.ValueRank = ua.ValueRank.Scalar
        attrs.ArrayDimensions = None
        attrs.WriteMask = 0
        attrs.UserWriteMask = 0
        attrs.AccessLevel = ua.AccessLevel.CurrentRead.mask
        attrs.UserAccessLevel = ua.AccessLevel.CurrentRead.mask
        item.NodeAttributes = attrs
        return item

    @staticmethod
    def _access(tag: Tag) -> int:
        mask = ua.AccessLevel.CurrentRead.mask
        if tag.writable:
            mask |= ua.AccessLevel.CurrentWrite.mask
        return mask

    async def _add(self, isession: Any, items: list[ua.AddNodesItem]) -> None:
        if not items:
            return
        results = await isession.add_nodes(items)
        for item, result in zip(items, results, strict=True):
            if not result.StatusCode.is_good():
                raise ApplianceError(
                    f"OPC UA server: cannot add {item.RequestedNewNodeId.to_string()}: "
                    f"{result.StatusCode.name}"
                )

    async def _set_text(self, nodeid: ua.NodeId, attr: ua.AttributeIds, text: str) -> None:
        assert self._server is not None
        await self._server.write_attribute_value(
            nodeid,
            ua.DataValue(ua.Variant(ua.LocalizedText(text), ua.VariantType.LocalizedText)),
            attr,
        )

    async def _update_attributes(self, isession: Any, var: _Var, tag: Tag) -> None:
        """Same type, other description/unit/writable: change the node in place."""
        server = self._server
        assert server is not None
        old = var.tag
        if tag.description != old.description:
            await self._set_text(
                var.nodeid, ua.AttributeIds.Description, tag.description or var.full
            )
        if tag.writable != old.writable:
            level = ua.DataValue(ua.Variant(self._access(tag), ua.VariantType.Byte))
            await server.write_attribute_value(var.nodeid, level, ua.AttributeIds.AccessLevel)
            await server.write_attribute_value(var.nodeid, level, ua.AttributeIds.UserAccessLevel)
        if tag.unit != old.unit:
            eu_id = ua.NodeId(f"{var.full}.EngineeringUnits", self.idx)
            if old.unit and tag.unit:
                value = ua.Variant(eu_information(tag.unit), ua.VariantType.ExtensionObject)
                await server.write_attribute_value(eu_id, ua.DataValue(value))
            elif old.unit:
                await server.delete_nodes([server.get_node(eu_id)])
            else:
                await self._add(isession, [self._eu_item(dataclasses.replace(var, tag=tag))])
