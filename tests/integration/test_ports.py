"""The port list in the lab: the appliance's veths with their MACs, and the carrier of it0
going down and up as its peer end (lan0, in the lab's IT namespace) is set down and up."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from labkit import Appliance, config, wait_for

from appliance.lab import topology
from appliance.lab.topology import IT_MAC, OT_MAC, LabSpec
from appliance.net.role import PORTS_EVERY_S

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def ports_of(app: Appliance) -> dict[str, dict[str, Any]]:
    return {p["name"]: p for p in app.live().get("ports") or []}


def cli_ports(app: Appliance, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
    env["APPLIANCE_DATA_DIR"] = str(app.paths.data_dir)
    env["APPLIANCE_RUN_DIR"] = str(app.paths.run_dir)
    return subprocess.run(
        [sys.executable, "-m", "appliance", "ports", *args],
        capture_output=True, text=True, env=env, timeout=60, cwd=REPO,
    )  # fmt: skip


@pytest.fixture
def lan0_restored(lab: LabSpec) -> Iterator[None]:
    """The IT host's link is up with its default route again after the test (a link set
    down loses the routes through it)."""
    yield
    topology.ns_run(lab.ns_it, ["ip", "link", "set", "lan0", "up"])
    topology.ns_run(
        lab.ns_it,
        ["ip", "route", "replace", "default", "via", "10.10.0.1", "dev", "lan0", "onlink"],
    )


def test_the_appliances_ports_are_listed_with_their_macs(appliance: Appliance) -> None:
    ports = wait_for(lambda: ports_of(appliance), 10, "the net role's port list")
    assert set(ports) == {"it0", "ot0"}  # loopback is no port
    assert (ports["it0"]["mac"], ports["ot0"]["mac"]) == (IT_MAC, OT_MAC)
    assert {p["kind"] for p in ports.values()} == {"veth"}
    assert {p["driver"] for p in ports.values()} == {"veth"}
    assert {p["pci_path"] for p in ports.values()} == {None}
    appliance.commit(config())
    ports = wait_for(
        lambda: (p := ports_of(appliance)) and p["it0"]["role"] and p,
        10,
        "the configured roles on the ports",
    )
    assert {n: (p["role"], p["interface"]) for n, p in ports.items()} == {
        "it0": ("it", "it0"),
        "ot0": ("ot", "ot0"),
    }
    ports = wait_for(
        lambda: (p := ports_of(appliance)) and all(x["carrier"] for x in p.values()) and p,
        10,
        "a carrier on both ports",
    )
    # sysfs was read in the appliance's namespace (`ip netns exec` mounts its own): the
    # host has no it0, and the veth says 10000 Mb/s full duplex
    assert (ports["it0"]["speed"], ports["it0"]["duplex"]) == (10000, "full")
    listed = json.loads(cli_ports(appliance, "--json").stdout)["ports"]
    assert {p["name"]: p["mac"] for p in listed} == {"it0": IT_MAC, "ot0": OT_MAC}
    table = cli_ports(appliance)
    assert table.returncode == 0 and IT_MAC in table.stdout and "it (it0)" in table.stdout


def test_carrier_follows_the_peer_end_at_once(
    appliance: Appliance, lab: LabSpec, lan0_restored: None
) -> None:
    appliance.commit(config())
    wait_for(lambda: ports_of(appliance).get("it0", {}).get("carrier"), 10, "it0's carrier")
    topology.ns_run(lab.ns_it, ["ip", "link", "set", "lan0", "down"])
    # at once, on the netlink event: well before the periodic read every PORTS_EVERY_S
    wait_for(
        lambda: ports_of(appliance)["it0"]["carrier"] is False,
        PORTS_EVERY_S - 1,
        "it0's carrier to go",
        detail=lambda: ports_of(appliance)["it0"],
    )
    assert ports_of(appliance)["ot0"]["carrier"] is True
    [lost] = wait_for(lambda: appliance.events("port.carrier_lost"), 5, "port.carrier_lost")
    assert lost["severity"] == "warning" and lost["message"].startswith("it0 (it)")
    assert lost["data"] == {"port": "it0", "mac": IT_MAC, "role": "it", "label": None}
    topology.ns_run(lab.ns_it, ["ip", "link", "set", "lan0", "up"])
    wait_for(
        lambda: ports_of(appliance)["it0"]["carrier"] is True,
        PORTS_EVERY_S - 1,
        "it0's carrier to come back",
    )
    [up] = wait_for(lambda: appliance.events("port.carrier_up"), 5, "port.carrier_up")
    assert up["message"].startswith("it0 (it): carrier up")
    assert len(appliance.events("port.carrier_lost")) == 1


def test_identify_asks_the_kernel_in_the_appliances_namespace(appliance: Appliance) -> None:
    # the lab's NICs are veths, which cannot blink: the kernel's refusal is the answer
    # (the request never reaches a NIC of the host: the net role runs in the lab)
    wait_for(lambda: "it0" in ports_of(appliance), 10, "the port list")
    cp = cli_ports(appliance, "identify", "it0", "--seconds", "2")
    assert cp.returncode == 4, (cp.stdout, cp.stderr)
    assert cp.stderr.strip() == (
        "appliance: port: it0 cannot blink its LED: its driver does not support it"
    )
    cp = cli_ports(appliance, "identify", "eth9")
    assert cp.returncode == 3 and "no port 'eth9' (ports: it0, ot0)" in cp.stderr
    cp = cli_ports(appliance, "identify", "it0", "--seconds", "0")
    assert cp.returncode == 2 and "0 is not in the range 1<=x<=300" in cp.stderr
    assert appliance.events("port.identify") == []
