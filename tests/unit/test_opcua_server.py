"""Northbound OPC UA server: users, permissions, value types, address space cache (no network).

The certificate it presents is `appliance.uacert`'s (test_uacert.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from asyncua import ua
from asyncua.common.utils import ServiceError
from asyncua.crypto import security_policies
from asyncua.crypto.permission_rules import User, UserRole
from cryptography.hazmat.primitives.asymmetric import rsa

from appliance.config.field import Northbound as NorthboundConfig
from appliance.config.field import Tag
from appliance.config.load import load_text
from appliance.errors import ApplianceError
from appliance.opcua.server import (
    _CHANNEL,
    Channel,
    Logon,
    Northbound,
    UaUser,
    _Ruleset,
    _Users,
    declared_vtype,
    eu_information,
    inferred_vtype,
    password_of,
    shelf_path,
    to_variant,
)
from appliance.paths import Paths

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def paths(tmp_path: Path) -> Paths:
    return Paths(tmp_path / "data", tmp_path / "run")


def tag(**fields: Any) -> Tag:
    return Tag.model_validate({"name": "t", "node": "ns=2;s=X", **fields})


def test_address_space_cache_is_per_asyncua_version_on_the_data_partition(paths: Paths) -> None:
    shelf = shelf_path(paths)
    assert shelf.parent == paths.data_dir / "cache"
    assert shelf.name == "opcua-aspace-2_1_0"  # asyncua appends .db; no dots to confuse it
    assert shelf.with_suffix(".db").name == "opcua-aspace-2_1_0.db"


def test_a_cache_build_cancelled_kills_its_builder_and_leaves_no_half_file(
    paths: Paths, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The role stopped during a first start: no builder left running, no partial cache
    that a later start would take for a whole one."""
    from appliance.opcua import server

    builder = (
        "import os, sys, time\n"
        "open(sys.argv[1] + '.db', 'w').write(str(os.getpid()))\n"
        "time.sleep(600)\n"
    )
    monkeypatch.setattr(server, "_BUILD_SHELF", builder)
    cache = paths.data_dir / "cache"

    async def main() -> int:
        task = asyncio.create_task(server.ensure_shelf(paths))
        for _ in range(500):
            written = [p for p in cache.glob("tmp-*") if p.read_text()]
            if written:
                break
            await asyncio.sleep(0.02)
        pid = int(written[0].read_text())
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return pid

    pid = asyncio.run(main())
    state = Path(f"/proc/{pid}/stat")
    assert not state.exists() or state.read_text().split(") ")[1][0] in "ZX", "builder runs on"
    assert list(cache.iterdir()) == []
    assert not shelf_path(paths).with_suffix(".db").exists()


# -- value types ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "vtype"),
    [
        ({}, None),
        ({"type": "bool"}, ua.VariantType.Boolean),
        ({"type": "bit"}, ua.VariantType.Boolean),
        ({"type": "uint16"}, ua.VariantType.UInt16),
        ({"type": "int64"}, ua.VariantType.Int64),
        ({"type": "float32"}, ua.VariantType.Float),
        ({"type": "float64"}, ua.VariantType.Double),
        ({"type": "string"}, ua.VariantType.String),
        ({"type": "int16", "scale": 0.1}, ua.VariantType.Double),
        ({"type": "uint32", "offset": -40}, ua.VariantType.Double),
    ],
)
def test_declared_types(fields: dict[str, Any], vtype: ua.VariantType | None) -> None:
    assert declared_vtype(tag(**fields)) == vtype


@pytest.mark.parametrize(
    ("value", "vtype"),
    [
        (True, ua.VariantType.Boolean),
        (3, ua.VariantType.Int64),
        (2**63, ua.VariantType.UInt64),
        (-(2**70), ua.VariantType.Double),
        (2.5, ua.VariantType.Double),
        ("x", ua.VariantType.String),
        ([1], None),
    ],
)
def test_inferred_types(value: Any, vtype: ua.VariantType | None) -> None:
    assert inferred_vtype(value) == vtype


@pytest.mark.parametrize(
    ("vtype", "value", "expected"),
    [
        (ua.VariantType.Double, 3, 3.0),
        (ua.VariantType.Float, 21.5, 21.5),
        (ua.VariantType.UInt16, 65535, 65535),
        (ua.VariantType.Int16, 5.0, 5),
        (ua.VariantType.Boolean, 1, True),
        (ua.VariantType.String, "LAB", "LAB"),
        (ua.VariantType.UInt16, 65536, None),
        (ua.VariantType.Int32, 1.5, None),
        (ua.VariantType.Double, "1.0", None),
        (ua.VariantType.Double, True, None),
        (ua.VariantType.String, 5, None),
        (ua.VariantType.Boolean, 2, None),
    ],
)
def test_values_fit_the_node_type_or_are_refused(
    vtype: ua.VariantType, value: Any, expected: Any
) -> None:
    got = to_variant(vtype, value)
    if expected is None:
        assert got is None
    else:
        assert got is not None and got.VariantType == vtype
        assert got.Value == expected and type(got.Value) is type(expected)


def test_engineering_units() -> None:
    eu = eu_information("degC")
    assert eu.UnitId == (ord("C") << 16) | (ord("E") << 8) | ord("L") == 4408652
    assert eu.DisplayName.Text == "degC" and eu.Description.Text == "degree Celsius"
    assert eu.NamespaceUri == "http://www.opcfoundation.org/UA/units/un/cefact"
    assert eu_information("%").UnitId == (ord("P") << 8) | ord("1")
    odd = eu_information("widgets/h")
    assert odd.UnitId == -1 and odd.DisplayName.Text == "widgets/h"


# -- users and permissions ------------------------------------------------------------------

ACCOUNTS = {
    "alice": ("a-pass", "admin"),
    "olga": ("o-pass", "operator"),
    "vic": ("v-pass", "viewer"),
}


def authenticate(user: str, password: str, *, source: str | None = None) -> str | None:
    got = ACCOUNTS.get(user)
    return got[1] if got and got[0] == password else None


def test_users_log_on_with_a_password_only() -> None:
    users = _Users(authenticate, allow_anonymous=False)
    alice = users.check("alice", "a-pass", "10.0.0.7")
    assert isinstance(alice, UaUser)
    assert alice.app_role == "admin" and alice.name == "alice"
    assert alice.role == UserRole.User  # never asyncua's Admin: that may edit the address space
    assert users.check("alice", "wrong", "10.0.0.7") is None
    assert users.check("mallory", "x", "10.0.0.7") is None
    assert users.check("", "x", "10.0.0.7") is None
    assert users.get_user(None, None, None) is None  # anonymous refused by default


def test_users_are_checked_before_asyncua_asks_never_on_its_call() -> None:
    """asyncua calls get_user on the event loop: it only hands out what `check` found (on
    a thread, before), for the same name and password; it never hashes a password."""
    called: list[str] = []

    def counting(user: str, password: str, *, source: str | None = None) -> str | None:
        called.append(user)
        return authenticate(user, password)

    users = _Users(counting, allow_anonymous=True)
    assert users.get_user(None, "alice", "a-pass") is None  # not checked beforehand
    assert called == []
    alice = users.check("alice", "a-pass", None)
    mode = ua.MessageSecurityMode.SignAndEncrypt
    token = _CHANNEL.set(Channel(mode, "10.0.0.7", Logon("alice", "a-pass", alice)))
    try:
        assert users.get_user(None, "alice", "a-pass") is alice
        assert users.get_user(None, "alice", "other") is None
        assert users.get_user(None, "vic", "a-pass") is None
        assert users.get_user(None, None, None) is None  # not anonymous: a user name token
    finally:
        _CHANNEL.reset(token)
    assert called == ["alice"]


def test_authenticate_is_told_the_client_address() -> None:
    seen: list[str | None] = []

    def recording(user: str, password: str, *, source: str | None = None) -> str | None:
        seen.append(source)
        return "viewer"

    _Users(recording, allow_anonymous=False).check("vic", "v-pass", "192.0.2.5")
    assert seen == ["192.0.2.5"]


def test_a_refused_user_name_is_not_written_to_the_journal(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # a password typed into the user name box must not land in the journal (it goes to
    # syslog and the support bundle)
    typed = "Winter2026!-pw"
    caplog.set_level("DEBUG", logger="opcua.server")
    refusing = _Users(lambda u, p, source=None: None, allow_anonymous=False)
    assert refusing.check(typed, "x", "192.0.2.5") is None
    throttled = _Users(_raise_throttled, allow_anonymous=False)
    assert throttled.check(typed, "x", "192.0.2.5") is None
    assert refusing.get_user(None, typed, "x") is None
    assert caplog.records and typed not in caplog.text
    assert "192.0.2.5" in caplog.text


def _raise_throttled(user: str, password: str, *, source: str | None = None) -> str:
    raise ApplianceError("too many failed log-ons, try again in 30 s")


def test_anonymous_sessions_are_viewers_when_allowed() -> None:
    user = _Users(authenticate, allow_anonymous=True).get_user(None)
    assert isinstance(user, UaUser) and user.app_role == "viewer" and user.anonymous


def test_a_failing_or_odd_authenticator_refuses() -> None:
    def broken(user: str, password: str, *, source: str | None = None) -> str:
        raise RuntimeError("database locked")

    assert _Users(broken, allow_anonymous=False).check("alice", "a-pass", None) is None

    def throttled(user: str, password: str, *, source: str | None = None) -> str:
        raise ApplianceError("too many failed log-ons, try again in 30 s")

    assert _Users(throttled, allow_anonymous=False).check("alice", "a-pass", None) is None
    root = _Users(lambda u, p, source=None: "root", allow_anonymous=False)
    assert root.check("a", "b", None) is None


# -- passwords on the wire --------------------------------------------------------------------

NONCE = bytes(range(32))


@pytest.fixture(scope="module")
def server_key() -> tuple[Any, Any]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key, key.public_key()


def encrypted(public_key: Any, password: str, nonce: bytes, uri: str | None = None) -> Any:
    """A user name token as asyncua's client makes it for an endpoint asking encryption."""
    blob = ua.ua_binary.Primitives.Bytes.pack(password.encode() + nonce)
    data, alg = security_policies.encrypt_asymmetric(
        public_key, blob, uri or security_policies.SecurityPolicyBasic256Sha256.URI
    )
    return ua.UserNameIdentityToken(UserName="vic", Password=data, EncryptionAlgorithm=alg)


def test_a_password_in_clear_is_taken_only_inside_an_encrypted_channel(
    server_key: tuple[Any, Any],
) -> None:
    key, _ = server_key
    clear = ua.UserNameIdentityToken(UserName="vic", Password=b"v-pass")
    assert password_of(clear, ua.MessageSecurityMode.SignAndEncrypt, NONCE, key) == "v-pass"
    for mode in (ua.MessageSecurityMode.None_, ua.MessageSecurityMode.Sign):
        with pytest.raises(ServiceError) as exc:
            password_of(clear, mode, NONCE, key)
        assert exc.value.code == ua.StatusCodes.BadIdentityTokenRejected


def test_an_encrypted_password_needs_our_key_and_this_sessions_nonce(
    server_key: tuple[Any, Any],
) -> None:
    key, public = server_key
    none = ua.MessageSecurityMode.None_
    assert password_of(encrypted(public, "v-pass", NONCE), none, NONCE, key) == "v-pass"
    sha256 = security_policies.SecurityPolicyAes256Sha256RsaPss.URI
    assert password_of(encrypted(public, "pässword", NONCE, sha256), none, NONCE, key) == (
        "pässword"
    )
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    bad = [
        encrypted(stranger, "v-pass", NONCE),  # not made with our key
        encrypted(public, "v-pass", bytes(32)),  # another session's nonce: a replay
        encrypted(public, "", b""),  # no nonce at all
        ua.UserNameIdentityToken(UserName="vic", Password=b"x", EncryptionAlgorithm="rot13"),
    ]
    rsa15 = encrypted(public, "v-pass", NONCE, security_policies.SecurityPolicyBasic128Rsa15.URI)
    bad.append(rsa15)  # PKCS#1 v1.5: not accepted
    for token in bad:
        with pytest.raises(ServiceError) as exc:
            password_of(token, none, NONCE, key)
        assert exc.value.code == ua.StatusCodes.BadIdentityTokenInvalid, token.EncryptionAlgorithm


def test_ruleset_allows_reading_and_writing_values_but_not_editing_the_address_space() -> None:
    rules = _Ruleset()
    admin = UaUser(role=UserRole.User, name="alice", app_role="admin")
    read = ua.NodeId(ua.ObjectIds.ReadRequest_Encoding_DefaultBinary)
    write = ua.NodeId(ua.ObjectIds.WriteRequest_Encoding_DefaultBinary)
    add = ua.NodeId(ua.ObjectIds.AddNodesRequest_Encoding_DefaultBinary)
    delete = ua.NodeId(ua.ObjectIds.DeleteNodesRequest_Encoding_DefaultBinary)
    assert rules.check_validity(admin, read, None)
    assert rules.check_validity(admin, write, None)
    assert not rules.check_validity(admin, add, None)
    assert not rules.check_validity(admin, delete, None)
    # a session that never logged on carries asyncua's plain anonymous User
    assert not rules.check_validity(User(role=UserRole.Anonymous), read, None)
    # a user disabled since logging on may do nothing at all
    gone = UaUser(role=UserRole.User, name="alice", app_role="admin", revoked=True)
    assert not rules.check_validity(gone, read, None)


# -- configuration ---------------------------------------------------------------------------


def test_the_default_offers_signed_endpoints_only() -> None:
    assert NorthboundConfig().security == ["Basic256Sha256-SignAndEncrypt", "Basic256Sha256-Sign"]
    assert NorthboundConfig(security=["None"]).security == ["None"]  # when asked for
    for example in sorted((ROOT / "examples").glob("*.yaml")):
        config = load_text(example.read_text(), str(example)).config
        assert "None" not in config.opcua_server.security, example


# -- start-up checks ------------------------------------------------------------------------


async def _no_write(tag: str, value: Any, user: str) -> None:
    raise AssertionError("not called")


def test_disabled_server_does_not_start(paths: Paths) -> None:
    nb = Northbound(NorthboundConfig(enabled=False), paths, authenticate, _no_write)
    asyncio.run(nb.start([]))
    assert not nb.running
    assert not paths.secrets_dir.exists()  # no certificate made for nothing


def test_no_security_policy_is_an_error_naming_the_field(paths: Paths) -> None:
    nb = Northbound(NorthboundConfig(security=[]), paths, authenticate, _no_write)
    with pytest.raises(ApplianceError) as exc:
        asyncio.run(nb.start([]))
    assert exc.value.field == "opcua_server.security"
    assert not nb.running


# -- the opcua role's side of the value stream -------------------------------------------


class FakeNorthbound:
    running = True
    sessions = 2
    endpoint = "opc.tcp://0.0.0.0:4840/"
    cfg = NorthboundConfig(security=["None"])

    def __init__(self) -> None:
        self.updates: list[tuple[str, Any, str, float | None]] = []

    def update(self, name: str, value: Any, quality: str, source_time: float | None) -> None:
        self.updates.append((name, value, quality, source_time))


def test_opcua_role_applies_snapshots_changes_and_goes_bad_when_the_stream_drops(
    tmp_path: Path,
) -> None:
    from appliance.opcua.role import OpcUaRole

    paths = Paths(tmp_path / "data", tmp_path / "run")
    role = OpcUaRole(paths, None, lambda u, p, source=None: None)  # type: ignore[arg-type]
    nb = FakeNorthbound()
    role.northbound = nb  # type: ignore[assignment]
    role.handle(b'{"snapshot": {"p.a": [1, "good", 5.0], "p.b": [null, "bad", null]}, "t": 6}\n')
    assert role.connected and role.last_update is not None
    assert sorted(nb.updates) == [("p.a", 1, "good", 5.0), ("p.b", None, "bad", None)]
    nb.updates.clear()
    role.handle(b'{"values": {"p.b": [2.5, "uncertain", 7.0]}, "t": 7}\n')
    assert nb.updates == [("p.b", 2.5, "uncertain", 7.0)]
    assert role.values["p.b"] == [2.5, "uncertain", 7.0]
    nb.updates.clear()
    for garbage in (b"not json\n", b'{"values": {"p.a": 3}}\n', b"[1, 2]\n", b'{"snapshot": 5}\n'):
        role.handle(garbage)  # logged and skipped, never raises
    role.disconnected()
    assert not role.connected
    assert sorted(nb.updates) == [("p.a", 1, "bad", 5.0), ("p.b", 2.5, "bad", 7.0)]
    doc = role.snapshot(0.0)
    assert doc["connected"] is False and doc["values"] == 2 and doc["sessions"] == 2
    assert doc["running"] is True and doc["enabled"] is False  # no configuration read yet
    assert doc["endpoints"] == [{"url": "opc.tcp://0.0.0.0:4840/", "security": "None"}]


def test_opcua_role_asks_the_accounts_for_a_users_role_now(tmp_path: Path) -> None:
    import time

    from appliance.config.model import Config
    from appliance.opcua import role as opcua_role
    from appliance.state.db import Store
    from appliance.web import accounts

    store = Store(tmp_path / "data", accounts.MODELS)
    try:
        now = time.time()
        accounts.create_user("alice", "admin", "Oven-Admin-Password-7", by="t", now=now)
        accounts.create_user("olga", "operator", "Oven-Operator-Pass-7", by="t", now=now)
        assert opcua_role._role_of("alice") == "admin"
        assert opcua_role._role_of("olga") == "operator"
        accounts.update_user("olga", now=now, role="viewer")
        assert opcua_role._role_of("olga") == "viewer"
        accounts.update_user("olga", now=now, disabled=True)
        assert opcua_role._role_of("olga") is None
        accounts.delete_user("olga")
        assert opcua_role._role_of("olga") is None
        assert opcua_role._role_of("nobody") is None
    finally:
        store.close()
    from appliance.roles import Change

    paths = Paths(tmp_path / "data", tmp_path / "run")
    made: list[dict[str, Any]] = []

    class Recording(FakeNorthbound):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__()
            made.append(kwargs)

        async def start(self, devices: Any) -> None:
            pass

    role = opcua_role.OpcUaRole(paths, store, authenticate, northbound=Recording)
    asyncio.run(role.apply(Change(None, Config())))
    assert [m["role_of"] for m in made] == [opcua_role._role_of]
