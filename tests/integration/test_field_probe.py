"""The test connection (`appliance.field.probe`) of a real field role against real devices.

Modbus: the lab PLC simulator in netns ``fp-probe`` (the `plc` fixture, loopback only),
the role's loop in a thread that joined it, with the real pymodbus links: a bare test, a
register range and bits read back as the simulator documents them, a missing register
(exception 2), a closed port (refused), a device that takes the connection and never
answers (the timeout and retries), and the control socket's ``probe`` as the web role
calls it, each audited. OPC UA: the lab simulator on 127.0.0.1 (a process of its own):
connect, the server's state, browse the Objects folder and the PLC folder, a node that
does not exist, a log-on the server refuses.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from appliance.field import store as field_store
from appliance.field.role import FieldRole
from appliance.lab.topology import in_netns
from appliance.paths import Paths
from appliance.state.control import call, socket_path
from appliance.state.db import Audit, Store

NS = "fp-probe"  # the `plc` fixture (conftest) runs the simulator here, on PLC_PORT
PLC_PORT = 1502
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "data", field_store.MODELS)
    try:
        yield s
    finally:
        s.close()


def with_role(tmp_path: Path, store: Store, body: Callable[[FieldRole], Awaitable[None]]) -> None:
    """A started field role with the real adapters; `body`, then close."""

    async def main() -> None:
        role = FieldRole(Paths(tmp_path / "data", tmp_path / "run"), store, ring=lambda: None)
        await role.start()
        try:
            await asyncio.wait_for(body(role), 120)
        finally:
            await role.close()

    asyncio.run(main())


def modbus(port: int = PLC_PORT, **kw: Any) -> dict[str, Any]:
    return {"protocol": "modbus-tcp", "address": f"127.0.0.1:{port}", **kw}


def test_modbus_probes_of_the_lab_plc(plc: str, tmp_path: Path, store: Store) -> None:
    async def body(role: FieldRole) -> None:
        out = await role.probe({"device": modbus()}, "web:admin")
        assert out["ok"] is True and out["target"] == plc, out
        assert out["message"].startswith(f"{plc} answered in ")
        assert out["elapsed_ms"] < 2000

        out = await role.probe(
            {"device": modbus(), "read": {"table": "holding", "address": 2, "count": 3}}, "t"
        )
        assert out["ok"] is True and out["read"]["values"] == [1234, 5678, 42], out
        out = await role.probe(
            {"device": modbus(), "read": {"table": "discrete", "address": 0, "count": 8}}, "t"
        )
        assert out["read"]["values"] == [True, False, True, False, False, True, False, True]
        out = await role.probe(
            {"device": modbus(), "read": {"table": "holding", "address": 20, "count": 8}}, "t"
        )
        text = b"".join(v.to_bytes(2, "big") for v in out["read"]["values"])
        assert text.rstrip(b"\0") == b"LAB-PLC-01"

        out = await role.probe(
            {"device": modbus(), "read": {"table": "holding", "address": 1000, "count": 10}},
            "t",
        )
        assert (out["ok"], out["stage"]) == (False, "read"), out
        assert out["message"].startswith(
            "the device answered exception 2 (illegal data address) for holding 1000-1009"
        )

        out = await role.probe({"device": modbus(1599)}, "t")  # nothing listens there
        assert (out["ok"], out["stage"]) == (False, "connect"), out
        assert "refused" in out["message"]

        # a device that takes the connection and never answers
        mute = socket.socket()
        mute.bind(("127.0.0.1", 0))
        mute.listen(4)
        held: list[socket.socket] = []
        threading.Thread(target=lambda: held.append(mute.accept()[0]), daemon=True).start()
        started = time.monotonic()
        out = await role.probe(
            {"device": modbus(mute.getsockname()[1], timeout=0.3, retries=1)}, "t"
        )
        took = time.monotonic() - started
        mute.close()
        for s in held:
            s.close()
        assert (out["ok"], out["stage"]) == (False, "read"), out
        assert "within 0.3 s (asked 2 times for holding 0" in out["message"]
        assert 0.6 <= took < 3, took

        # as the web role asks: over the control socket
        sock = socket_path(role.paths.run_dir, "field")
        got = await asyncio.to_thread(
            call, sock, "probe", 20.0, request={"device": modbus()}, actor="web:alice"
        )
        assert got["ok"] is True and got["read"]["table"] == "holding"

    in_netns(NS, lambda: with_role(tmp_path, store, body))
    rows = [(a.actor, a.target, a.result) for a in Audit.select().order_by(Audit.id)]
    assert len(rows) == 8 and rows[0] == ("web:admin", plc, "ok")
    assert rows[-1] == ("web:alice", plc, "ok")
    assert [r[2] for r in rows].count("failed") == 3


# -- OPC UA -------------------------------------------------------------------------------


def test_a_host_that_is_not_there_is_no_answer_not_a_library_error(
    plc: str, tmp_path: Path, store: Store
) -> None:
    """A device address with no host behind it (nothing answers ARP): pymodbus cancels
    its own connect, which read "cannot connect: CancelledError" in the UI."""
    # a veth whose peer stays down (this kernel has no dummy links): ARP goes unanswered
    peer = ["peer", "name", "fp-void-p", "netns", NS]
    subprocess.run(["ip", "-n", NS, "link", "add", "fp-void", "type", "veth", *peer], check=True)
    try:
        subprocess.run(
            ["ip", "-n", NS, "addr", "add", "10.77.0.1/24", "dev", "fp-void"], check=True
        )
        subprocess.run(["ip", "-n", NS, "link", "set", "fp-void", "up"], check=True)

        async def body(role: FieldRole) -> None:
            device = {"protocol": "modbus-tcp", "address": "10.77.0.9:502", "timeout": 0.5}
            out = await role.probe({"device": device}, "t")
            assert (out["ok"], out["stage"]) == (False, "connect"), out
            assert "no answer" in out["message"], out
            assert "Cancelled" not in out["message"] and "Error" not in out["message"], out

        in_netns(NS, lambda: with_role(tmp_path, store, body))
    finally:
        subprocess.run(["ip", "-n", NS, "link", "del", "fp-void"], check=False)


def _has_opcua_probe() -> bool:
    from appliance.field import opcua_client

    return hasattr(opcua_client, "probe")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def opcua_sim() -> Iterator[str]:
    port = _free_port()
    argv = ["-m", "appliance.lab.opcua_sim", "--listen", "127.0.0.1", "--port", str(port)]
    p = subprocess.Popen(
        [sys.executable, *argv],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert p.stdout is not None
        for line in p.stdout:
            if "ready:" in line:
                break
        else:
            pytest.fail(f"the OPC UA simulator did not start (exit {p.poll()})")
        yield f"opc.tcp://127.0.0.1:{port}/"
    finally:
        p.kill()
        p.wait(10)
        if p.stdout is not None:
            p.stdout.close()


@pytest.mark.skipif(
    not _has_opcua_probe(),
    reason="appliance.field.opcua_client has no probe() yet: "
    "/work/brief/s5/patches/P-opcua-probe.patch",
)
def test_opcua_probes_of_the_lab_server(opcua_sim: str, tmp_path: Path, store: Store) -> None:
    ua = {"protocol": "opcua", "address": opcua_sim, "timeout": 2}

    async def body(role: FieldRole) -> None:
        out = await role.probe({"device": ua}, "t")
        assert out["ok"] is True and out["browse"] is None, out
        assert out["message"] == f"connected to {opcua_sim} (no security): the server says Running"

        out = await role.probe({"device": ua, "browse": None}, "t")
        assert out["ok"] is True and out["browse"]["node"] == "ns=0;i=85", out
        names = {c["name"]: c for c in out["browse"]["children"]}
        assert names["PLC"]["node_id"] == "ns=2;s=PLC" and names["PLC"]["class"] == "Object"
        assert "Server" in names

        out = await role.probe({"device": ua, "browse": "nsu=urn:lab:plc;s=PLC"}, "t")
        kids = {c["name"]: c for c in out["browse"]["children"]}
        assert set(kids) == {"Temperature", "Counter", "Running", "Batch", "Setpoint"}
        assert kids["Setpoint"] == {
            "node_id": "ns=2;s=Setpoint",
            "name": "Setpoint",
            "class": "Variable",
            "value": 50.0,
            "type": "Double",
            "writable": True,
        }
        assert kids["Counter"]["type"] == "UInt32" and kids["Counter"]["writable"] is False
        assert isinstance(kids["Running"]["value"], bool)
        assert kids["Batch"]["value"].startswith("BATCH-")

        out = await role.probe({"device": ua, "browse": "ns=2;s=Nope"}, "t")
        assert (out["ok"], out["stage"]) == (False, "browse"), out
        assert "browsing ns=2;s=Nope failed" in out["message"]

        user = {"username": "someone", "password": "not-accepted"}
        out = await role.probe({"device": {**ua, "security": user}}, "t")
        assert (out["ok"], out["stage"]) == (False, "connect"), out
        assert "refused the log-on" in out["message"]

        out = await role.probe({"device": {**ua, "address": "opc.tcp://127.0.0.1:1"}}, "t")
        assert (out["ok"], out["stage"]) == (False, "connect"), out
        assert "connection refused" in out["message"]

    with_role(tmp_path, store, body)
    rows = [(a.action, a.result) for a in Audit.select().order_by(Audit.id)]
    assert rows.count(("device.probe", "ok")) == 3
    assert rows.count(("device.probe", "failed")) == 3
