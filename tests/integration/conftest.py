"""Integration fixtures: one lab per session (prefix "t"), a fresh appliance per test, and
the lab PLC simulator alone in a test module's own namespace (`plc`)."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from labkit import PREFIX, Appliance
from testkit import wait_for

from appliance import proc
from appliance.lab import demo, topology
from appliance.lab.topology import LabSpec, in_netns
from appliance.roles import ROLE_NAMES

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabSpec]:
    if os.geteuid() != 0:
        pytest.skip("integration tests need root: they create network namespaces and nftables")
    spec = LabSpec(prefix=PREFIX, plcs=2, mgmt=False, root=tmp_path_factory.mktemp("lab"))
    topology.up(spec)
    try:
        yield spec
    finally:
        topology.down(spec)


@pytest.fixture
def appliance(lab: LabSpec, tmp_path: Path) -> Iterator[Appliance]:
    app = Appliance(lab, tmp_path)
    app.start()
    try:
        yield app
    finally:
        app.stop()
        # the next test starts from a kernel without our table, as a fresh unit would
        topology.ns_run(lab.ns_app, ["nft", "delete", "table", "inet", "appliance"], check=False)
        app.store.close()


def _ip(*args: str, check: bool = True) -> None:
    subprocess.run(["ip", *args], check=check, capture_output=True)


def _listening(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
        return True
    return False


@pytest.fixture(scope="module")
def plc(request: pytest.FixtureRequest) -> Iterator[str]:
    """The lab PLC simulator (`python -m appliance.lab.plc`) in the test module's own
    namespace `NS` (made here, loopback only), on 127.0.0.1:`PLC_PORT`; yields that
    address. The module runs its clients in NS (`in_netns`), so no lab is needed."""
    if os.geteuid() != 0:
        pytest.skip("needs root: creates a network namespace")
    ns: str = request.module.NS
    port: int = request.module.PLC_PORT
    _ip("netns", "del", ns, check=False)
    _ip("netns", "add", ns)
    _ip("-n", ns, "link", "set", "lo", "up")
    sim = proc.spawn(
        ["ip", "netns", "exec", ns, sys.executable, "-m", "appliance.lab.plc",
         "--bind", "127.0.0.1", "--port", str(port), "--other-port", "18080"],
        env={"PYTHONPATH": str(ROOT)}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:

        def listening() -> bool:
            assert sim.poll() is None, "the PLC simulator exited"
            return in_netns(ns, lambda: _listening(port))

        wait_for(listening, 20, "the PLC simulator to listen", every=0.1)
        yield f"127.0.0.1:{port}"
    finally:
        proc.stop(sim, 5)
        _ip("netns", "del", ns, check=False)


@pytest.fixture
def every_role(lab: LabSpec, tmp_path: Path) -> Iterator[Appliance]:
    """The appliance with every role (the `appliance` fixture runs the net role alone)."""
    app = Appliance(lab, tmp_path)
    missing = demo.start_appliance(lab, app.paths, roles=ROLE_NAMES)
    try:
        assert missing == [], f"roles did not start: {missing}"
        yield app
    finally:
        app.stop()
        topology.ns_run(lab.ns_app, ["nft", "delete", "table", "inet", "appliance"], check=False)
        app.store.close()
