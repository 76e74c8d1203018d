"""The opcua role for real: its own process, fed by the field role's value stream.

A lab PLC simulator (`python -m appliance.lab.plc`) listens in netns ``fo-opcua``
(loopback only); the field role and the opcua role run there as the daemon runs them
(`appliance run --roles field` / `--roles opcua`, one process each). An asyncua client
with the web UI's accounts reads values that change; the field role is killed (values
go Bad) and restarted (Good again); an admin's write reaches the PLC through the field
role's control socket and is audited; a viewer's is refused, and so is an admin's over
a channel that is not encrypted; a viewer disabled in the accounts loses the session;
disabling the server in a new revision stops it. The value stream itself (snapshot,
batches, a slow reader cut off without blocking the poll loop) is checked without a
namespace, in tests/unit/test_valuestream.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from asyncua import Client, ua
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256
from testkit import until, wait_for

from appliance.lab.topology import in_netns
from appliance.paths import Paths
from appliance.state import revisions as revs
from appliance.state.db import Audit, Store
from appliance.state.live import LiveState
from appliance.uacert import ensure_certificate
from appliance.web import accounts

T = TypeVar("T")
NS = "fo-opcua"
PLC_PORT = 1502
UA_PORT = 14840
URL = f"opc.tcp://127.0.0.1:{UA_PORT}/"
ROOT = Path(__file__).resolve().parents[2]
ADMIN = ("alice", "Oven-Admin-Password-7")
VIEWER = ("vic", "Oven-Viewer-Password-7")


def in_ns(fn: Callable[[], T]) -> T:
    """Run fn in a thread that joined NS: its sockets live there, the process stays put."""
    return in_netns(NS, fn)


def listening(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
        return True
    return False


def config(plc: str, enabled: bool = True) -> str:
    devices = [
        {
            "name": "plc1",
            "protocol": "modbus-tcp",
            "address": plc,
            "poll_interval": 0.25,
            "tags": [
                {"name": "counter", "table": "holding", "address": 0},
                {"name": "temp", "table": "holding", "address": 10, "type": "float32",
                 "unit": "degC"},
                {"name": "sp", "table": "holding", "address": 44, "writable": True},
                {"name": "fixed", "table": "holding", "address": 4},
            ],
        }
    ]  # fmt: skip
    server = {
        "enabled": enabled,
        "port": UA_PORT,
        "security": ["Basic256Sha256-SignAndEncrypt", "None"],
    }
    interfaces = [{"name": "ot0", "role": "ot", "addresses": ["192.168.50.1/24"]}]
    return yaml.safe_dump(
        {"version": 1, "interfaces": interfaces, "opcua_server": server, "devices": devices}
    )


class Role:
    """One role as the daemon runs it: `appliance run --roles <name>` in the namespace."""

    def __init__(self, name: str, paths: Paths, tmp: Path) -> None:
        self.name, self.paths, self.tmp = name, paths, tmp
        self.proc: subprocess.Popen[bytes] | None = None
        self.stopped_in: float | None = None

    def start(self) -> None:
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "APPLIANCE_DATA_DIR": str(self.paths.data_dir),
            "APPLIANCE_RUN_DIR": str(self.paths.run_dir),
            "PYTHONFAULTHANDLER": "1",
        }
        log = (self.tmp / f"{self.name}.log").open("ab")
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", NS, sys.executable, "-m", "appliance", "run",
             "--roles", self.name],
            env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        log.close()

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def stop(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        t0 = time.monotonic()
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGABRT)  # faulthandler: where it hangs
            time.sleep(1)
            self.proc.kill()
            self.proc.wait()
        self.stopped_in = time.monotonic() - t0
        return self.proc.returncode

    def log(self) -> str:
        return (self.tmp / f"{self.name}.log").read_text(errors="replace")[-3000:]


def test_the_opcua_role_end_to_end(plc: str, tmp_path: Path) -> None:
    paths = Paths(tmp_path / "data", tmp_path / "run")
    store = Store(paths.data_dir, accounts.MODELS)
    live = LiveState(paths.run_dir)
    accounts.create_user(ADMIN[0], "admin", ADMIN[1], by="test", now=time.time())
    accounts.create_user(VIEWER[0], "viewer", VIEWER[1], by="test", now=time.time())

    def commit(text: str) -> None:
        rev = revs.import_text(store, text, author="test", now=time.time()).revision
        revs.commit(store, author="test", now=time.time(), ref=rev.id)
        revs.confirm(store, author="net", now=time.time(), automatic=True)

    commit(config(plc))
    field = Role("field", paths, tmp_path)
    opcua = Role("opcua", paths, tmp_path)

    def doc() -> dict[str, Any]:
        return live.read("opcua") or {}

    def fdoc() -> dict[str, Any]:
        return live.read("field") or {}

    field.start()
    opcua.start()
    try:
        wait_for(lambda: doc().get("running") and doc().get("connected"), 30, "opcua up", doc)
        d = doc()
        assert d["role"] == "opcua" and d["pid"] == opcua.proc.pid  # type: ignore[union-attr]
        assert d["enabled"] is True and d["port"] == UA_PORT and d["values"] == 4
        assert d["endpoints"] == [
            {"url": f"opc.tcp://0.0.0.0:{UA_PORT}/", "security": p}
            for p in ("Basic256Sha256-SignAndEncrypt", "None")
        ]
        # the field role no longer carries the OPC UA server (nor its memory)
        maps = Path(f"/proc/{fdoc()['pid']}/maps").read_text()
        assert "asyncua/server" not in maps

        it = ensure_certificate(Paths(tmp_path / "it", tmp_path / "it-run"), hostname="it")

        async def connect(user: tuple[str, str], encrypted: bool = True) -> Client:
            c = Client(URL, timeout=10)
            c.set_user(user[0])
            c.set_password(user[1])
            if encrypted:
                c.application_uri = it.application_uri
                await c.set_security(
                    SecurityPolicyBasic256Sha256,
                    str(it.cert_path),
                    str(it.key_path),
                    mode=ua.MessageSecurityMode.SignAndEncrypt,
                )
            return c

        async def body() -> None:
            viewer = await connect(VIEWER)
            async with viewer:
                counter = viewer.get_node("ns=2;s=plc1.counter")
                fixed = viewer.get_node("ns=2;s=plc1.fixed")

                async def read(node: Any) -> ua.DataValue:
                    return await node.read_data_value(raise_on_bad_status=False)

                async def good_value(node: Any) -> Any:
                    dv = await read(node)
                    return dv.Value.Value if dv.StatusCode.is_good() else None

                await until(lambda: good_value(fixed), 15, "plc1.fixed good")
                assert (await read(fixed)).Value.Value == 42
                first = await until(lambda: good_value(counter), 15, "plc1.counter good")

                async def moved() -> bool:
                    v = await good_value(counter)
                    return v is not None and v != first

                await until(moved, 15, "the counter changing")
                await until(lambda: asyncio.sleep(0, doc()["sessions"] == 1), 5, "sessions: 1")

                # the field role dies: every value goes Bad, the server stays up
                await asyncio.to_thread(field.kill)

                async def bad() -> bool:
                    dv = await read(counter)
                    return dv.StatusCode.value == ua.StatusCodes.BadCommunicationError

                await until(bad, 10, "values bad after the field role died")
                assert (await read(fixed)).StatusCode.value == ua.StatusCodes.BadCommunicationError
                await until(
                    lambda: asyncio.sleep(0, doc()["connected"] is False), 5, "connected: false"
                )
                # it comes back: good values again, through the same session
                await asyncio.to_thread(field.start)
                await until(lambda: good_value(fixed), 30, "values good after the restart")

                # a viewer may not write
                sp = viewer.get_node("ns=2;s=plc1.sp")
                with pytest.raises(ua.UaStatusCodeError) as exc:
                    await sp.write_value(ua.DataValue(ua.Variant(5, ua.VariantType.UInt16)))
                assert exc.value.code == ua.StatusCodes.BadUserAccessDenied

            # an admin over the None channel reads (the password went encrypted) but may
            # not write: writes need SignAndEncrypt
            async with await connect(ADMIN, encrypted=False) as unsigned:
                sp = unsigned.get_node("ns=2;s=plc1.sp")
                with pytest.raises(ua.UaStatusCodeError) as exc:
                    await sp.write_value(ua.DataValue(ua.Variant(99, ua.VariantType.UInt16)))
                assert exc.value.code == ua.StatusCodes.BadSecurityModeInsufficient

            admin = await connect(ADMIN)
            async with admin:
                sp = admin.get_node("ns=2;s=plc1.sp")
                await sp.write_value(ua.DataValue(ua.Variant(123, ua.VariantType.UInt16)))

                async def written() -> bool:
                    return (await good_value(sp)) == 123

                await until(written, 10, "the written value read back over OPC UA")

            # a wrong password is refused
            intruder = await connect((ADMIN[0], "wrong-password-123"))
            with pytest.raises(ua.UaError):
                async with intruder:
                    pass

            # a viewer disabled in the accounts while logged on: the session is closed
            async with await connect(VIEWER) as doomed:
                fixed = doomed.get_node("ns=2;s=plc1.fixed")
                assert (await fixed.read_data_value()).Value.Value == 42
                accounts.update_user(VIEWER[0], now=time.time(), disabled=True)
                with pytest.raises(Exception):  # noqa: B017 - a refusal or a closed connection
                    for _ in range(100):
                        await fixed.read_data_value()
                        await asyncio.sleep(0.1)

        in_ns(lambda: asyncio.run(body()))
        # the write went through the field role: the PLC has it, and it is audited there
        wait_for(
            lambda: fdoc().get("tags", {}).get("plc1.sp", {}).get("value") == 123,
            10,
            "the PLC polled with the written value",
            fdoc,
        )
        audits = list(Audit.select().where(Audit.action == "tag.write"))
        assert [(a.actor, a.target, a.result, a.source) for a in audits] == [
            ("alice", "plc1.sp", "ok", "opcua")
        ]
        assert json.loads(audits[0].detail) == {"value": 123}
        # the log-ons were made with the client's address (the per-address throttle)
        assert accounts.get_user(ADMIN[0]).last_login_from == "127.0.0.1"

        # disabled in a new revision: the role stops the server, keeps running
        commit(config(plc, enabled=False))
        LiveState(paths.run_dir).ring("opcua")
        wait_for(lambda: doc().get("running") is False, 15, "the server stopped", doc)
        assert doc()["enabled"] is False and doc()["pid"] == opcua.proc.pid  # type: ignore[union-attr]
        wait_for(lambda: not in_ns(lambda: listening(UA_PORT)), 10, "the port closed")
        # and enabled again
        commit(config(plc))
        wait_for(lambda: doc().get("running") is True, 20, "the server back", doc)
        wait_for(lambda: in_ns(lambda: listening(UA_PORT)), 10, "the port open")
    finally:
        rc_opcua = opcua.stop()
        stopped_in = opcua.stopped_in
        rc_field = field.stop()
        store.close()
    assert rc_opcua == 0, opcua.log()
    assert rc_field == 0, field.log()
    assert stopped_in is not None and stopped_in < 3.0, f"opcua stopped in {stopped_in:.1f} s"
