"""OPC UA for real: the lab simulator, the client adapter and the northbound server.

Everything listens on 127.0.0.1 on free ports (no namespaces needed): the simulator runs
as its own process (so it can be killed and restarted), the northbound server in the
test's event loop, clients are asyncua's own.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import functools
import itertools
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from asyncua import Client, Server, ua
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256
from testkit import until

from appliance.config.field import Device
from appliance.config.field import Northbound as NorthboundConfig
from appliance.errors import ApplianceError, PermissionDenied
from appliance.field.opcua_client import OpcUaDevice, OpcUaError
from appliance.opcua.server import Northbound, ensure_shelf, shelf_path
from appliance.paths import Paths
from appliance.uacert import KEY_FILE, ensure_certificate

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SIM_NODES = ["Temperature", "Counter", "Running", "Batch", "Setpoint"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(coro: Awaitable[Any], timeout: float = 90) -> Any:
    """Run one async test body with an overall time limit."""
    return asyncio.run(asyncio.wait_for(coro, timeout))  # type: ignore[arg-type]


class Sim:
    """The lab simulator as a process on 127.0.0.1:port."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.proc: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"opc.tcp://127.0.0.1:{self.port}/"

    def start(self) -> None:
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()  # the previous run's
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "appliance.lab.opcua_sim",
                "--listen",
                "127.0.0.1",
                "--port",
                str(self.port),
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert self.proc.stdout is not None
        deadline = time.monotonic() + 60
        for line in self.proc.stdout:
            if "ready:" in line:
                assert "ns=2" in line  # the documented namespace index
                return
            if time.monotonic() > deadline:
                break
        pytest.fail(f"the simulator did not start (exit {self.proc.poll()})")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def terminate(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(20)
        finally:
            if self.proc.stdout is not None:
                self.proc.stdout.close()


@pytest.fixture
def sim() -> Iterator[Sim]:
    s = Sim(free_port())
    s.start()
    try:
        yield s
    finally:
        s.kill()
        s.terminate()


class Recorder:
    """on_value / on_state for OpcUaDevice: every call, in order, with its time."""

    def __init__(self) -> None:
        self.values: list[tuple[float, str, Any, str, float | None]] = []
        self.states: list[tuple[float, bool, str | None]] = []

    def on_value(self, name: str, value: Any, quality: str, source_time: float | None) -> None:
        self.values.append((time.monotonic(), name, value, quality, source_time))

    def on_state(self, ok: bool, error: str | None) -> None:
        self.states.append((time.monotonic(), ok, error))

    def of(self, name: str) -> list[tuple[Any, str, float | None]]:
        return [(v, q, t) for _, n, v, q, t in self.values if n == name]

    def last(self, name: str) -> tuple[Any, str, float | None] | None:
        got = self.of(name)
        return got[-1] if got else None

    def good(self, name: str) -> list[Any]:
        return [v for v, q, _ in self.of(name) if q == "good"]


def sim_device(url: str, **changes: Any) -> Device:
    data: dict[str, Any] = {
        "name": "sim",
        "protocol": "opcua",
        "address": url,
        "poll_interval": 0.5,
        "timeout": 2,
        "tags": [
            {"name": n.lower(), "node": f"ns=2;s={n}", "writable": n == "Setpoint"}
            for n in SIM_NODES
        ]
        + [{"name": "counter_by_uri", "node": "nsu=urn:lab:plc;s=Counter"}],
    }
    data.update(changes)
    return Device.model_validate(data)


@contextlib.asynccontextmanager
async def running(dev: OpcUaDevice, rec: Recorder) -> Any:
    stop = asyncio.Event()
    task = asyncio.create_task(dev.run(rec.on_value, rec.on_state, stop))
    try:
        yield task
    finally:
        stop.set()
        t0 = time.monotonic()
        await asyncio.wait_for(task, 10)
        assert time.monotonic() - t0 < 3, "run() must return within 3 s of stop"


# -- the simulator -------------------------------------------------------------------------


def test_simulator_serves_the_documented_nodes_and_stops_on_sigterm(sim: Sim) -> None:
    async def body() -> None:
        async with Client(sim.url) as c:
            assert await c.get_namespace_index("urn:lab:plc") == 2
            values = {n: await c.get_node(f"ns=2;s={n}").read_data_value() for n in SIM_NODES}
            assert values["Temperature"].Value.VariantType == ua.VariantType.Float
            assert 15 <= values["Temperature"].Value.Value <= 25
            assert values["Counter"].Value.VariantType == ua.VariantType.UInt32
            assert values["Running"].Value.VariantType == ua.VariantType.Boolean
            assert values["Batch"].Value.Value.startswith("BATCH-")
            assert values["Setpoint"].Value.Value == 50.0
            eu = await c.get_node("ns=2;s=Temperature").get_child("0:EngineeringUnits")
            assert (await eu.read_value()).UnitId == 4408652
            first = values["Counter"].Value.Value
            deadline = time.monotonic() + 10
            while (await c.get_node("ns=2;s=Counter").read_value()) == first:
                assert time.monotonic() < deadline, "Counter does not change"
                await asyncio.sleep(0.2)
            await c.get_node("ns=2;s=Setpoint").write_value(12.5)
            assert await c.get_node("ns=2;s=Setpoint").read_value() == 12.5

    run(body())
    assert sim.terminate() == 0  # clean SIGTERM exit


# -- the client adapter against the simulator ----------------------------------------------


def test_client_subscribes_and_sees_changing_values(sim: Sim) -> None:
    rec = Recorder()
    dev = OpcUaDevice(sim_device(sim.url))

    async def body() -> None:
        async with running(dev, rec):
            await until(lambda: len(set(rec.good("counter"))) >= 3, 20, "three counter values")
            await until(lambda: rec.good("batch"), 5, "the batch")
            assert dev.mode_used == "subscription"
        assert rec.states[0][1:] == (True, None)
        counts = rec.good("counter")
        assert counts == sorted(counts) and all(isinstance(c, int) for c in counts)
        assert rec.good("counter_by_uri")  # nsu= names resolve to the same node
        temp, quality, source_time = rec.of("temperature")[-1]
        assert quality == "good" and isinstance(temp, float) and 15 <= temp <= 25
        assert source_time is not None and abs(source_time - time.time()) < 30
        assert rec.good("running")[-1] in (True, False)
        assert rec.good("batch")[-1].startswith("BATCH-")
        assert rec.good("setpoint")[-1] == 50.0

    run(body())


def test_client_writes_a_writable_node(sim: Sim) -> None:
    rec = Recorder()
    dev = OpcUaDevice(sim_device(sim.url))

    async def body() -> None:
        async with running(dev, rec):
            await until(lambda: dev.connected, 20, "the session")
            assert await dev.write("setpoint", 42) == 42.0  # int -> the node's Double
            await until(lambda: 42.0 in rec.good("setpoint"), 10, "the written setpoint")
            with pytest.raises(OpcUaError) as exc:
                await dev.write("counter", 1)
            assert exc.value.kind == "write"
            with pytest.raises(OpcUaError) as exc:
                await dev.write("setpoint", "warm")
            assert exc.value.kind == "value"
            async with Client(sim.url) as c:
                assert await c.get_node("ns=2;s=Setpoint").read_value() == 42.0

    run(body())


def test_client_reports_bad_while_the_device_is_down_and_backs_off(sim: Sim) -> None:
    rec = Recorder()
    dev = OpcUaDevice(sim_device(sim.url), backoff_initial=0.4, backoff_cap=3.0)

    async def body() -> None:
        async with running(dev, rec):
            await until(lambda: rec.good("counter"), 20, "a good counter")
            sim.kill()
            killed = time.monotonic()
            await until(
                lambda: rec.last("counter") is not None and rec.last("counter")[1] == "bad",  # type: ignore[index]
                10,
                "bad quality after the device died",
            )
            assert all(rec.last(n.lower())[1] == "bad" for n in SIM_NODES)  # type: ignore[index]
            await until(lambda: sum(1 for s in rec.states if not s[1]) >= 4, 20, "retries")
            await asyncio.to_thread(sim.start)
            restarted = time.monotonic()
            n_before = len(rec.values)
            await until(
                lambda: any(
                    q == "good" for _, n, _, q, _ in rec.values[n_before:] if n == "counter"
                ),
                30,
                "good values again after the restart",
            )
            assert rec.states[-1][1:] == (True, None)
            # Back-off: retry k (0 = first) waits min(cap, 0.4 * 2**k) * 0.5..1 (jitter).
            failures = [t for t, ok, _ in rec.states if not ok and killed <= t <= restarted]
            gaps = [b - a for a, b in itertools.pairwise(failures)]
            for k, gap in enumerate(gaps):
                assert gap >= 0.5 * min(3.0, 0.4 * 2**k) - 0.05, gaps
            assert len(failures) <= 30, "retries must back off, not spin"
            errors = [e for _, ok, e in rec.states if not ok]
            assert any(e and e.startswith("connect:") for e in errors), errors

    run(body())


def test_client_polls_when_the_server_refuses_subscriptions(shelf: Path) -> None:
    port = free_port()
    rec = Recorder()

    async def body() -> None:
        server = Server()
        await server.init(shelf.with_suffix(""))
        server.set_endpoint(f"opc.tcp://127.0.0.1:{port}/")
        server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        server.iserver.max_subscriptions = 0  # every CreateSubscription is refused
        idx = await server.register_namespace("urn:test")
        var = await server.nodes.objects.add_variable(ua.NodeId("V", idx), "V", 1.0)
        dev = OpcUaDevice(
            Device.model_validate(
                {
                    "name": "nosubs",
                    "protocol": "opcua",
                    "address": f"opc.tcp://127.0.0.1:{port}/",
                    "poll_interval": 0.2,
                    "tags": [
                        {"name": "v", "node": f"ns={idx};s=V"},
                        {"name": "missing", "node": f"ns={idx};s=Missing"},
                    ],
                }
            )
        )
        async with server, running(dev, rec):
            await until(lambda: rec.good("v"), 20, "a polled value")
            assert dev.mode_used == "poll"
            await var.write_value(2.0)
            await until(lambda: 2.0 in rec.good("v"), 5, "the changed value, polled")
            assert rec.last("missing")[:2] == (None, "bad")  # type: ignore[index]

    run(body())


# -- the northbound server ------------------------------------------------------------------

ACCOUNTS = {
    "alice": ("alice-pw", "admin"),
    "olga": ("olga-pw", "operator"),
    "vic": ("vic-pw", "viewer"),
}


def authenticate(user: str, password: str, *, source: str | None = None) -> str | None:
    got = ACCOUNTS.get(user)
    return got[1] if got and got[0] == password else None


def plc_device(name: str = "plc1") -> Device:
    tags = [
        {
            "name": "temp",
            "table": "holding",
            "address": 10,
            "type": "float32",
            "unit": "degC",
            "description": "Oven temperature",
        },
        {"name": "counter", "table": "holding", "address": 0, "type": "uint16"},
        {"name": "setpoint", "table": "holding", "address": 40, "type": "uint16", "writable": True},
    ]
    return Device.model_validate(
        {"name": name, "protocol": "modbus-tcp", "address": "192.168.50.10", "tags": tags}
    )


class Writes:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any, str]] = []
        self.fail: Exception | None = None

    async def __call__(self, tag: str, value: Any, user: str) -> dict[str, Any]:
        self.calls.append((tag, value, user))
        if self.fail is not None:
            raise self.fail
        return {"tag": tag, "value": value}


@pytest.fixture(scope="module")
def shelf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The standard address space cache, built once (by a child process) for these tests."""
    paths = Paths(tmp_path_factory.mktemp("shelf"), Path("/nonexistent"))
    built = asyncio.run(ensure_shelf(paths))
    assert built == shelf_path(paths)
    assert built is not None
    db = built.with_suffix(".db")
    assert db.is_file() and db.stat().st_size > 1_000_000
    assert asyncio.run(ensure_shelf(paths)) == built  # reused, not rebuilt
    return db


@pytest.fixture(autouse=True)
def _shared_shelf(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """Northbound tests find the prebuilt cache where each unit keeps its own."""
    if "northbound" not in request.node.name and "basic256" not in request.node.name:
        return
    db: Path = request.getfixturevalue("shelf")
    for data in (tmp_path / "data", tmp_path / "server" / "data"):
        target = shelf_path(Paths(data, tmp_path)).with_suffix(".db")
        target.parent.mkdir(parents=True)
        target.symlink_to(db)


@contextlib.asynccontextmanager
async def northbound(
    tmp_path: Path,
    devices: list[Device],
    auth: Callable[..., str | None] = authenticate,
    extra: dict[str, Any] | None = None,
    **cfg: Any,
) -> Any:
    port = free_port()
    writes = Writes()
    nb = Northbound(
        NorthboundConfig(port=port, **cfg),
        Paths(tmp_path / "data", tmp_path / "run"),
        auth,
        writes,
        **(extra or {}),
    )
    await nb.start(devices)
    assert nb.server is not None
    # the standard nodes come lazily from the cache, not built in memory
    assert type(nb.server.iserver.aspace._nodes).__name__ == "LazyLoadingDict"
    try:
        yield nb, writes, f"opc.tcp://127.0.0.1:{port}/"
    finally:
        await nb.stop()


def plain(url: str, user: str | None = None, password: str | None = None) -> Client:
    c = Client(url, timeout=10)
    if user is not None:
        c.set_user(user)
        c.set_password(password or "")
    return c


@functools.cache
def it_cert() -> tuple[str, str, str]:
    """An IT client's application certificate (cert, key, application URI), made once."""
    d = Path(tempfile.mkdtemp(prefix="it-client-"))
    atexit.register(shutil.rmtree, d, True)
    info = ensure_certificate(Paths(d / "data", d / "run"), hostname="it-client")
    return str(info.cert_path), str(info.key_path), info.application_uri


async def secure(c: Client, mode: str) -> Client:
    """`c` set up for Basic256Sha256 with `mode` (Sign, SignAndEncrypt), or left on None."""
    if mode != "None":
        cert, key, uri = it_cert()
        c.application_uri = uri
        await c.set_security(
            SecurityPolicyBasic256Sha256, cert, key, mode=getattr(ua.MessageSecurityMode, mode)
        )
    return c


@contextlib.asynccontextmanager
async def client(
    url: str, user: str | None = None, password: str | None = None, mode: str = "SignAndEncrypt"
) -> AsyncIterator[Client]:
    """A session as an IT client opens one: Basic256Sha256 SignAndEncrypt unless told."""
    async with await secure(plain(url, user, password), mode) as c:
        yield c


def test_northbound_refuses_anonymous_and_bad_passwords(tmp_path: Path) -> None:
    async def body() -> None:
        async with northbound(tmp_path, [plc_device()]) as (_, _, url):
            with pytest.raises(ua.UaStatusCodeError) as exc:
                async with client(url):
                    pass
            assert exc.value.code == ua.StatusCodes.BadIdentityTokenRejected
            with pytest.raises(ua.UaStatusCodeError) as exc:
                async with client(url, "alice", "guess"):
                    pass
            assert exc.value.code == ua.StatusCodes.BadUserAccessDenied
            endpoints = await Client(url).connect_and_get_server_endpoints()
            tokens = {t.TokenType for e in endpoints for t in e.UserIdentityTokens}
            assert tokens == {ua.UserTokenType.UserName}
            with pytest.raises(ua.UaStatusCodeError) as exc:
                async with client(url, "alice", "guess", mode="Sign"):
                    pass
            assert exc.value.code == ua.StatusCodes.BadUserAccessDenied

    run(body())


def test_northbound_serves_values_with_unit_status_and_time(tmp_path: Path) -> None:
    async def body() -> None:
        async with northbound(tmp_path, [plc_device()]) as (nb, _, url):
            t = time.time() - 5
            nb.update("plc1.temp", 21.5, "good", t)
            nb.update("plc1.counter", 7, "uncertain", None)
            nb.update("not.a-tag", 1, "good", None)  # unknown names are ignored
            await nb.flush()
            async with client(url, "vic", "vic-pw") as c:
                folder = c.get_node("ns=2;s=plc1")
                children = {(await n.read_browse_name()).Name for n in await folder.get_children()}
                assert children == {"temp", "counter", "setpoint"}
                temp = c.get_node("ns=2;s=plc1.temp")
                dv = await temp.read_data_value()
                assert dv.Value.Value == 21.5 and dv.Value.VariantType == ua.VariantType.Float
                assert dv.StatusCode.is_good()
                assert abs(dv.SourceTimestamp.timestamp() - t) < 0.01
                assert (await temp.read_description()).Text == "Oven temperature"
                assert (await temp.read_display_name()).Text == "temp"
                eu = await (await temp.get_child("0:EngineeringUnits")).read_value()
                assert eu.DisplayName.Text == "degC" and eu.UnitId == 4408652
                counter = await c.get_node("ns=2;s=plc1.counter").read_data_value(
                    raise_on_bad_status=False
                )
                assert counter.Value.Value == 7
                assert counter.StatusCode.value == ua.StatusCodes.UncertainLastUsableValue
                never = await c.get_node("ns=2;s=plc1.setpoint").read_data_value(
                    raise_on_bad_status=False
                )
                assert never.StatusCode.value == ua.StatusCodes.BadWaitingForInitialData
                # a subscribed client is told about the device going down
                sub = await c.create_subscription(50, None)
                await sub.subscribe_data_change(temp)
                first = await sub.next_event(5)
                assert first is not None and first.value == 21.5
                nb.update("plc1.temp", None, "bad", None)
                ev = await sub.next_event(5)
                assert ev is not None
                assert ev.data.monitored_item.Value.StatusCode.value == (
                    ua.StatusCodes.BadCommunicationError
                )
                nb.update("plc1.temp", 22.0, "good", None)
                ev = await sub.next_event(5)
                assert ev is not None and ev.value == 22.0

    run(body())


def test_northbound_basic256sha256_sign_and_encrypt_with_the_generated_certificate(
    tmp_path: Path,
) -> None:
    async def body() -> None:
        async with northbound(
            tmp_path, [plc_device()], security=["Basic256Sha256-SignAndEncrypt"]
        ) as (nb, _, url):
            assert nb.certificate is not None
            key = nb.certificate.key_path
            assert key.name == KEY_FILE and oct(key.stat().st_mode & 0o777) == "0o600"
            nb.update("plc1.temp", 20.25, "good", None)
            await nb.flush()
            # without security the server does not talk at all
            with pytest.raises(Exception):  # noqa: B017 - asyncua raises several kinds here
                async with client(url, "vic", "vic-pw", mode="None"):
                    pass
            c = plain(url, "vic", "vic-pw")
            c.application_uri = "urn:test:it-client"
            cert, pkey = await c.setup_self_signed_certificate(
                tmp_path / "it-key.pem", tmp_path / "it-cert.der"
            )
            await c.set_security(
                SecurityPolicyBasic256Sha256,
                str(cert),
                str(pkey),
                mode=ua.MessageSecurityMode.SignAndEncrypt,
            )
            async with c:
                assert c.security_policy.peer_certificate == nb.certificate.cert_path.read_bytes()
                assert await c.get_node("ns=2;s=plc1.temp").read_value() == 20.25

    run(body())


def test_northbound_writes_only_for_admins(tmp_path: Path) -> None:
    async def body() -> None:
        async with northbound(tmp_path, [plc_device()]) as (_, writes, url):
            sp = "ns=2;s=plc1.setpoint"
            for user in ("vic", "olga"):
                async with client(url, user, f"{user}-pw") as c:
                    with pytest.raises(ua.UaStatusCodeError) as exc:
                        await c.get_node(sp).write_value(ua.Variant(5, ua.VariantType.UInt16))
                    assert exc.value.code == ua.StatusCodes.BadUserAccessDenied
            assert writes.calls == []
            async with client(url, "alice", "alice-pw") as c:
                await c.get_node(sp).write_value(ua.Variant(5, ua.VariantType.UInt16))
                assert writes.calls == [("plc1.setpoint", 5, "alice")]
                with pytest.raises(ua.UaStatusCodeError) as exc:
                    await c.get_node("ns=2;s=plc1.temp").write_value(1.0)
                assert exc.value.code == ua.StatusCodes.BadNotWritable
                # nor anything else in the address space, nor its structure
                with pytest.raises(ua.UaStatusCodeError) as exc:
                    await c.get_node("ns=2;s=plc1.temp").write_attribute(
                        ua.AttributeIds.DisplayName,
                        ua.DataValue(
                            ua.Variant(ua.LocalizedText("x"), ua.VariantType.LocalizedText)
                        ),
                    )
                assert exc.value.code == ua.StatusCodes.BadNotWritable
                with pytest.raises(ua.UaStatusCodeError):
                    await c.nodes.objects.add_folder(2, "intruder")
                # a failing device write reaches the client as a status, not a dropped session
                writes.fail = PermissionDenied("not now")
                with pytest.raises(ua.UaStatusCodeError) as exc:
                    await c.get_node(sp).write_value(ua.Variant(6, ua.VariantType.UInt16))
                assert exc.value.code == ua.StatusCodes.BadUserAccessDenied
                writes.fail = ApplianceError("device plc1 down")
                with pytest.raises(ua.UaStatusCodeError) as exc:
                    await c.get_node(sp).write_value(ua.Variant(7, ua.VariantType.UInt16))
                assert exc.value.code == ua.StatusCodes.BadCommunicationError
                assert await c.get_node("ns=2;s=plc1.temp").read_display_name()

    run(body())


def test_northbound_anonymous_viewers_when_allowed(tmp_path: Path) -> None:
    async def body() -> None:
        async with northbound(tmp_path, [plc_device()], allow_anonymous=True) as (nb, w, url):
            nb.update("plc1.counter", 3, "good", None)
            await nb.flush()
            async with client(url) as c:
                assert await c.get_node("ns=2;s=plc1.counter").read_value() == 3
                with pytest.raises(ua.UaStatusCodeError) as exc:
                    await c.get_node("ns=2;s=plc1.setpoint").write_value(
                        ua.Variant(1, ua.VariantType.UInt16)
                    )
                assert exc.value.code == ua.StatusCodes.BadUserAccessDenied
            assert w.calls == []

    run(body())


def test_northbound_reconfigure_adds_and_removes_without_restart(tmp_path: Path) -> None:
    async def body() -> None:
        async with (
            northbound(tmp_path, [plc_device()]) as (nb, _, url),
            client(url, "vic", "vic-pw") as c,
        ):
            sub = await c.create_subscription(50, None)
            await sub.subscribe_data_change(c.get_node("ns=2;s=plc1.temp"))
            await sub.next_event(5)  # the initial (waiting) value
            changed = plc_device().model_copy(
                update={
                    "tags": [
                        plc_device()
                        .tags[0]
                        .model_copy(update={"description": "Kiln", "unit": "K"}),
                        plc_device().tags[2].model_copy(update={"writable": False}),
                    ]
                }
            )
            other = Device.model_validate(
                {
                    "name": "ua1",
                    "protocol": "opcua",
                    "address": "opc.tcp://192.168.50.20:4840/",
                    "tags": [{"name": "level", "node": "ns=2;s=Level", "unit": "%"}],
                }
            )
            await nb.reconfigure([changed, other])
            nb.update("ua1.level", 55.5, "good", None)
            nb.update("plc1.temp", 19.0, "good", None)
            await nb.flush()
            level = c.get_node("ns=2;s=ua1.level")
            assert await level.read_value() == 55.5  # untyped tag: typed by its value
            assert await level.read_data_type() == ua.NodeId(ua.ObjectIds.Double)
            gone = await c.get_node("ns=2;s=plc1.counter").read_data_value(
                raise_on_bad_status=False
            )
            assert gone.StatusCode.value == ua.StatusCodes.BadNodeIdUnknown
            temp = c.get_node("ns=2;s=plc1.temp")
            assert (await temp.read_description()).Text == "Kiln"
            eu = await (await temp.get_child("0:EngineeringUnits")).read_value()
            assert eu.DisplayName.Text == "K"
            levels = await c.get_node("ns=2;s=plc1.setpoint").get_user_access_level()
            assert ua.AccessLevel.CurrentWrite not in levels
            # the monitored item on the kept node still works
            ev = await sub.next_event(5)
            assert ev is not None and ev.value == 19.0
            await nb.reconfigure([other])
            folder = await c.get_node("ns=2;s=plc1").read_attribute(
                ua.AttributeIds.BrowseName, raise_on_bad_status=False
            )
            assert folder.StatusCode.value == ua.StatusCodes.BadNodeIdUnknown
            objects = {
                (await n.read_browse_name()).Name for n in await c.nodes.objects.get_children()
            }
            assert "ua1" in objects and "plc1" not in objects

    run(body())


# -- the client adapter against the northbound server: security and passwords -------------


def test_client_logs_on_with_basic256sha256_and_a_password(tmp_path: Path) -> None:
    rec = Recorder()

    async def body() -> None:
        async with northbound(
            tmp_path / "server", [plc_device()], security=["Basic256Sha256-SignAndEncrypt"]
        ) as (nb, writes, url):
            nb.update("plc1.temp", 23.0, "good", time.time())
            nb.update("plc1.setpoint", 4, "good", None)

            def upstream(**security: Any) -> OpcUaDevice:
                return OpcUaDevice(
                    Device.model_validate(
                        {
                            "name": "upstream",
                            "protocol": "opcua",
                            "address": url,
                            "poll_interval": 0.2,
                            "security": security,
                            "tags": [
                                {"name": "t", "node": "nsu=urn:appliance:tags;s=plc1.temp"},
                                {"name": "sp", "node": "ns=2;s=plc1.setpoint", "writable": True},
                            ],
                        }
                    ),
                    paths=Paths(tmp_path / "client", tmp_path / "run"),
                    backoff_initial=0.2,
                )

            secure = {"policy": "Basic256Sha256", "mode": "SignAndEncrypt"}
            dev = upstream(**secure, username="alice", password="alice-pw")
            async with running(dev, rec):
                await until(lambda: rec.good("t"), 20, "the value over an encrypted channel")
                assert rec.good("t")[-1] == 23.0
                nb.update("plc1.temp", 24.0, "uncertain", None)
                await until(
                    lambda: rec.last("t") is not None and rec.last("t")[:2] == (24.0, "uncertain"),  # type: ignore[index]
                    10,
                    "the uncertain value",
                )
                assert await dev.write("sp", 9) == 9
                assert writes.calls == [("plc1.setpoint", 9, "alice")]
            # the wrong password: the device is reported down with an auth error
            bad = Recorder()
            async with running(upstream(**secure, username="alice", password="nope"), bad):
                await until(lambda: bad.states, 20, "a failed log-on")
            assert bad.states[0][1] is False and (bad.states[0][2] or "").startswith("auth:")
            assert (tmp_path / "client" / "secrets" / KEY_FILE).exists()

    run(body(), timeout=120)


# -- the northbound server: access control -------------------------------------------------

ALL_POLICIES = ["None", "Basic256Sha256-Sign", "Basic256Sha256-SignAndEncrypt"]


def plaintext_password(c: Client) -> Client:
    """`c` sends its password as it is, whatever the endpoint asks (a careless client)."""

    def policy(token_type: ua.UserTokenType) -> ua.UserTokenPolicy:
        return ua.UserTokenPolicy(
            PolicyId="username",
            TokenType=token_type,
            SecurityPolicyUri="http://opcfoundation.org/UA/SecurityPolicy#None",
        )

    c.server_policy = policy  # type: ignore[method-assign]
    return c


def test_northbound_default_offers_no_none_endpoint_and_opens_no_session_without_security(
    tmp_path: Path,
) -> None:
    async def body() -> None:
        async with northbound(tmp_path, [plc_device()]) as (nb, _, url):
            assert "None" not in nb.cfg.security
            # discovery over an unsecured channel still answers (that is how clients find
            # the endpoints), and lists no unsecured one
            endpoints = await Client(url).connect_and_get_server_endpoints()
            assert {e.SecurityMode for e in endpoints} == {
                ua.MessageSecurityMode.Sign,
                ua.MessageSecurityMode.SignAndEncrypt,
            }
            # a client that opens a None channel anyway gets no session on it
            c = plain(url, "vic", "vic-pw")
            await c.connect_socket()
            try:
                await c.send_hello()
                await c.open_secure_channel()
                with pytest.raises(ua.UaStatusCodeError) as exc:
                    await c.create_session()
                assert exc.value.code == ua.StatusCodes.BadSecurityPolicyRejected
            finally:
                c.disconnect_socket()
            async with client(url, "vic", "vic-pw", mode="Sign") as c:
                assert await c.get_node("ns=2;s=plc1.temp").read_display_name()

    run(body())


def test_northbound_takes_a_password_only_encrypted(tmp_path: Path) -> None:
    async def body() -> None:
        async with northbound(tmp_path, [plc_device()], security=ALL_POLICIES) as (_, _, url):
            # asyncua encrypts the password with the server's key where the endpoint asks
            for mode in ("None", "Sign", "SignAndEncrypt"):
                async with client(url, "vic", "vic-pw", mode=mode) as c:
                    assert await c.get_node("ns=2;s=plc1.temp").read_display_name()
            # in plain text it is refused unless the channel itself is encrypted
            for mode in ("None", "Sign"):
                c = plaintext_password(await secure(plain(url, "vic", "vic-pw"), mode))
                with pytest.raises(ua.UaStatusCodeError) as exc:
                    async with c:
                        pass
                assert exc.value.code == ua.StatusCodes.BadIdentityTokenRejected, mode
            c = plaintext_password(await secure(plain(url, "vic", "vic-pw"), "SignAndEncrypt"))
            async with c:
                assert await c.get_node("ns=2;s=plc1.temp").read_display_name()
            # an encrypted password made for another session (not this session's nonce:
            # a replay of one seen on a signed-only channel) is refused
            c = await secure(plain(url, "vic", "vic-pw"), "Sign")
            encrypt = c._encrypt_password

            def stale_nonce(password: str, policy_uri: str) -> tuple[bytes, str]:
                real, c._server_nonce = c._server_nonce, b"\x01" * 32
                try:
                    return encrypt(password, policy_uri)
                finally:
                    c._server_nonce = real

            c._encrypt_password = stale_nonce  # type: ignore[method-assign]
            with pytest.raises(ua.UaStatusCodeError) as exc:
                async with c:
                    pass
            assert exc.value.code == ua.StatusCodes.BadIdentityTokenInvalid

    run(body())


def test_northbound_none_only_still_asks_for_an_encrypted_password(tmp_path: Path) -> None:
    async def body() -> None:
        async with northbound(tmp_path, [plc_device()], security=["None"]) as (_, _, url):
            endpoints = await Client(url).connect_and_get_server_endpoints()
            [policy] = [t for e in endpoints for t in e.UserIdentityTokens]
            assert policy.SecurityPolicyUri == SecurityPolicyBasic256Sha256.URI
            async with client(url, "vic", "vic-pw", mode="None") as c:
                assert await c.get_node("ns=2;s=plc1.temp").read_display_name()

    run(body())


def test_northbound_writes_only_over_sign_and_encrypt(tmp_path: Path) -> None:
    async def body() -> None:
        async with northbound(tmp_path, [plc_device()], security=ALL_POLICIES) as (_, w, url):
            sp = "ns=2;s=plc1.setpoint"
            for mode in ("None", "Sign"):
                async with client(url, "alice", "alice-pw", mode=mode) as c:
                    with pytest.raises(ua.UaStatusCodeError) as exc:
                        await c.get_node(sp).write_value(ua.Variant(5, ua.VariantType.UInt16))
                    assert exc.value.code == ua.StatusCodes.BadSecurityModeInsufficient, mode
                    assert await c.get_node(sp).read_display_name()  # reads are fine
            assert w.calls == []
            async with client(url, "alice", "alice-pw", mode="SignAndEncrypt") as c:
                await c.get_node(sp).write_value(ua.Variant(5, ua.VariantType.UInt16))
            assert w.calls == [("plc1.setpoint", 5, "alice")]

    run(body())


def test_northbound_checks_the_role_at_every_write_and_cuts_disabled_users(
    tmp_path: Path,
) -> None:
    roles = {"alice": "admin", "vic": "viewer"}
    asked: list[str] = []

    def role_of(name: str) -> str | None:
        asked.append(name)
        return roles.get(name)

    async def body() -> None:
        extra = {"role_of": role_of, "recheck_every": 0.3}
        async with northbound(tmp_path, [plc_device()], extra=extra) as (_, w, url):
            sp = "ns=2;s=plc1.setpoint"
            async with client(url, "alice", "alice-pw") as c, client(url, "vic", "vic-pw") as v:
                node = c.get_node(sp)
                await node.write_value(ua.Variant(1, ua.VariantType.UInt16))
                roles["alice"] = "viewer"  # demoted while logged on
                with pytest.raises(ua.UaStatusCodeError) as exc:
                    await node.write_value(ua.Variant(2, ua.VariantType.UInt16))
                assert exc.value.code == ua.StatusCodes.BadUserAccessDenied
                roles["alice"] = "admin"
                await node.write_value(ua.Variant(3, ua.VariantType.UInt16))
                del roles["alice"]  # disabled or deleted
                with pytest.raises(ua.UaStatusCodeError) as exc:
                    await node.write_value(ua.Variant(4, ua.VariantType.UInt16))
                assert exc.value.code == ua.StatusCodes.BadUserAccessDenied
                assert [x[1] for x in w.calls] == [1, 3]
                # and the session is gone: nothing more is answered on it
                with pytest.raises(Exception):  # noqa: B017 - closed connection or refusal
                    for _ in range(50):
                        await node.read_display_name()
                        await asyncio.sleep(0.1)
                # a session that only reads is cut too, at the next periodic check
                assert await v.get_node(sp).read_display_name()
                del roles["vic"]
                with pytest.raises(Exception):  # noqa: B017
                    for _ in range(50):
                        await v.get_node(sp).read_display_name()
                        await asyncio.sleep(0.1)
            assert "vic" in asked

    run(body())


def test_northbound_logon_flood_does_not_stall_other_clients(tmp_path: Path) -> None:
    """argon2 takes a core for a while: a flood of wrong passwords must not stop the
    event loop from answering everyone else (the hash runs in a thread)."""
    hashing_s = 1.0
    checked: list[float] = []

    def slow(user: str, password: str, *, source: str | None = None) -> str | None:
        time.sleep(hashing_s)  # like argon2: holds a thread, not the loop
        checked.append(time.monotonic())
        return authenticate(user, password)

    async def body() -> None:
        async with northbound(tmp_path, [plc_device()], slow) as (nb, _, url):
            nb.update("plc1.temp", 20.0, "good", None)
            await nb.flush()
            async with client(url, "vic", "vic-pw") as c:
                temp = c.get_node("ns=2;s=plc1.temp")
                checked.clear()

                async def wrong(i: int) -> None:
                    with contextlib.suppress(ua.UaError, OSError, TimeoutError):
                        async with client(url, "alice", f"guess-{i}"):
                            pass

                flood = [asyncio.create_task(wrong(i)) for i in range(8)]
                worst = 0.0
                t_end = time.monotonic() + 30
                while not all(f.done() for f in flood) and time.monotonic() < t_end:
                    t0 = time.monotonic()
                    assert await temp.read_value() == 20.0
                    worst = max(worst, time.monotonic() - t0)
                    await asyncio.sleep(0.02)
                await asyncio.gather(*flood)
            assert len(checked) == 8, "the flood did not reach the password check"
            assert worst < hashing_s / 2, f"a read waited {worst:.2f} s during a log-on flood"

    run(body())


def test_northbound_tells_authenticate_where_a_logon_comes_from(tmp_path: Path) -> None:
    seen: list[tuple[str, str | None]] = []

    def recording(user: str, password: str, *, source: str | None = None) -> str | None:
        seen.append((user, source))
        return authenticate(user, password)

    async def body() -> None:
        async with northbound(tmp_path, [plc_device()], recording) as (_, _, url):
            async with client(url, "vic", "vic-pw"):
                pass
            with pytest.raises(ua.UaStatusCodeError):
                async with client(url, "alice", "nope"):
                    pass
        assert seen == [("vic", "127.0.0.1"), ("alice", "127.0.0.1")]

    run(body())
