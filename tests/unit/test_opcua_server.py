"""Northbound OPC UA server: certificate, users, permissions, value types (no network)."""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path
from typing import Any

import pytest
from asyncua import ua
from asyncua.crypto.permission_rules import User, UserRole
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from appliance.errors import ApplianceError
from appliance.field.model import Northbound as NorthboundConfig
from appliance.field.model import Tag
from appliance.field.opcua_server import (
    CERT_FILE,
    KEY_FILE,
    Northbound,
    UaUser,
    _Ruleset,
    _Users,
    declared_vtype,
    ensure_certificate,
    eu_information,
    inferred_vtype,
    shelf_path,
    to_variant,
)
from appliance.paths import Paths


@pytest.fixture
def paths(tmp_path: Path) -> Paths:
    return Paths(tmp_path / "data", tmp_path / "run")


def tag(**fields: Any) -> Tag:
    return Tag.model_validate({"name": "t", "node": "ns=2;s=X", **fields})


# -- certificate ----------------------------------------------------------------------------


def test_certificate_is_generated_once_with_private_files(paths: Paths) -> None:
    info = ensure_certificate(paths, hostname="unit7")
    assert info.cert_path == paths.secrets_dir / CERT_FILE
    assert info.key_path == paths.secrets_dir / KEY_FILE
    assert stat.S_IMODE(paths.secrets_dir.stat().st_mode) == 0o700
    for f in (info.cert_path, info.key_path):
        assert stat.S_IMODE(f.stat().st_mode) == 0o600
    assert info.application_uri == "urn:unit7:appliance"
    assert len(info.thumbprint) == 40 and info.fingerprint.startswith("sha256:")

    cert = x509.load_der_x509_certificate(info.cert_path.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == ["urn:unit7:appliance"]
    assert san.get_values_for_type(x509.DNSName) == ["unit7"]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in eku and ExtendedKeyUsageOID.CLIENT_AUTH in eku
    key = cert.public_key()
    assert isinstance(key, rsa.RSAPublicKey) and key.key_size == 2048
    assert cert.signature_hash_algorithm is not None
    assert cert.signature_hash_algorithm.name == "sha256"

    again = ensure_certificate(paths, hostname="other-name")
    assert again == info  # reused: a new hostname does not make IT re-trust the unit


def test_broken_or_mismatched_pair_is_replaced(paths: Paths) -> None:
    first = ensure_certificate(paths, hostname="u")
    first.cert_path.write_bytes(b"not a certificate")
    second = ensure_certificate(paths, hostname="u")
    assert second.thumbprint != first.thumbprint

    # a key that does not belong to the certificate
    other = Paths(paths.data_dir.parent / "other", paths.run_dir)
    ensure_certificate(other, hostname="u")
    second.key_path.write_bytes((other.secrets_dir / KEY_FILE).read_bytes())
    third = ensure_certificate(paths, hostname="u")
    assert third.thumbprint not in (first.thumbprint, second.thumbprint)


def test_address_space_cache_is_per_asyncua_version_on_the_data_partition(paths: Paths) -> None:
    shelf = shelf_path(paths)
    assert shelf.parent == paths.data_dir / "cache"
    assert shelf.name == "opcua-aspace-2_1_0"  # asyncua appends .db; no dots to confuse it
    assert shelf.with_suffix(".db").name == "opcua-aspace-2_1_0.db"


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


def authenticate(user: str, password: str) -> str | None:
    got = ACCOUNTS.get(user)
    return got[1] if got and got[0] == password else None


def test_users_log_on_with_a_password_only() -> None:
    users = _Users(authenticate, allow_anonymous=False)
    alice = users.get_user(None, "alice", "a-pass")
    assert isinstance(alice, UaUser)
    assert alice.app_role == "admin" and alice.name == "alice"
    assert alice.role == UserRole.User  # never asyncua's Admin: that may edit the address space
    assert users.get_user(None, "alice", "wrong") is None
    assert users.get_user(None, "mallory", "x") is None
    assert users.get_user(None, None, None) is None  # anonymous refused by default


def test_anonymous_sessions_are_viewers_when_allowed() -> None:
    user = _Users(authenticate, allow_anonymous=True).get_user(None)
    assert isinstance(user, UaUser) and user.app_role == "viewer"


def test_a_failing_or_odd_authenticator_refuses() -> None:
    def broken(user: str, password: str) -> str:
        raise RuntimeError("database locked")

    assert _Users(broken, allow_anonymous=False).get_user(None, "alice", "a-pass") is None

    def throttled(user: str, password: str) -> str:
        raise ApplianceError("too many failed log-ons, try again in 30 s")

    assert _Users(throttled, allow_anonymous=False).get_user(None, "alice", "a-pass") is None
    assert _Users(lambda u, p: "root", allow_anonymous=False).get_user(None, "a", "b") is None


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
    from appliance.state.live import LiveState

    paths = Paths(tmp_path / "data", tmp_path / "run")
    role = OpcUaRole(paths, None, LiveState(paths.run_dir), lambda u, p: None)  # type: ignore[arg-type]
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
    doc = role.document()
    assert doc["connected"] is False and doc["values"] == 2 and doc["sessions"] == 2
    assert doc["running"] is True and doc["enabled"] is False  # no configuration read yet
    assert doc["endpoints"] == [{"url": "opc.tcp://0.0.0.0:4840/", "security": "None"}]
