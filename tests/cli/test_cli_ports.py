"""`appliance ports [--json]`: the net role's port list, a table for people, JSON for tools,
one line and exit 10 when the net role is not running."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from appliance.errors import Conflict
from appliance.state.control import ControlServer, socket_path
from appliance.state.live import LiveState

REPO = Path(__file__).resolve().parents[2]


def port(name: str, mac: str, **kw: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "name": name,
        "mac": mac,
        "driver": "igb",
        "pci_path": "0000:02:00.0",
        "label": None,
        "kind": None,
        "role": None,
        "interface": None,
        "admin_up": True,
        "carrier": True,
        "operstate": "UP",
        "speed": 1000,
        "duplex": "full",
        "counters": {
            "rx_bytes": 1_500_000, "rx_packets": 1000, "rx_errors": 1, "rx_dropped": 2,
            "tx_bytes": 3000, "tx_packets": 30, "tx_errors": 0, "tx_dropped": 4,
        },
        "index": 2,
    }  # fmt: skip
    doc.update(kw)
    return doc


PORTS = [
    port("it0", "02:a0:00:00:01:01", label="IT", role="it", interface="it0"),
    port(
        "enp3s0", "00:1b:21:0a:0b:0d", driver="e1000e", pci_path="0000:03:00.0",
        admin_up=False, carrier=None, operstate="DOWN", speed=None, duplex=None, index=3,
    ),
    port("ot0", "02:a0:00:00:02:01", role="ot", interface="ot0", carrier=False, speed=None,
         duplex=None, operstate="LOWERLAYERDOWN", driver="veth", kind="veth", pci_path=None),
]  # fmt: skip


def cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`appliance ARGS` on the unit state under tmp_path (data/, run/)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
    env["APPLIANCE_DATA_DIR"] = str(tmp_path / "data")
    env["APPLIANCE_RUN_DIR"] = str(tmp_path / "run")
    return subprocess.run(
        [sys.executable, "-m", "appliance", *args],
        capture_output=True, text=True, env=env, timeout=60, cwd=REPO,
    )  # fmt: skip


def run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return cli(tmp_path, "ports", *args)


def test_the_table_shows_each_port(tmp_path: Path) -> None:
    LiveState(tmp_path / "run").write("net", {"ports": PORTS})  # alive: this pid, now
    cp = run(tmp_path)
    assert cp.returncode == 0, cp.stderr
    header, *lines = cp.stdout.splitlines()
    assert header.split()[:8] == [
        "PORT",
        "LABEL",
        "ROLE",
        "MAC",
        "CARRIER",
        "SPEED",
        "DRIVER",
        "PCI",
    ]
    it, enp, ot = lines
    assert it.split()[:10] == [
        "it0", "IT", "it", "(it0)", "02:a0:00:00:01:01", "yes", "1000M", "FD", "igb",
        "0000:02:00.0",
    ]  # fmt: skip
    assert "1.5 MB / 1000" in it and "3.0 kB / 30" in it and it.endswith("1 / 6")
    assert "unknown (down)" in enp and "e1000e" in enp and "0000:03:00.0" in enp
    assert ot.split()[:6] == ["ot0", "-", "ot", "(ot0)", "02:a0:00:00:02:01", "NO"]


def test_json_is_the_live_list(tmp_path: Path) -> None:
    LiveState(tmp_path / "run").write("net", {"ports": PORTS})
    cp = run(tmp_path, "--json")
    assert cp.returncode == 0, cp.stderr
    data = json.loads(cp.stdout)
    assert data["ports"] == PORTS and isinstance(data["updated_at"], float)


def test_no_port_besides_loopback(tmp_path: Path) -> None:
    LiveState(tmp_path / "run").write("net", {"ports": []})
    cp = run(tmp_path)
    assert cp.returncode == 0 and "no ports" in cp.stdout


def one_line_error(cp: subprocess.CompletedProcess[str]) -> str:
    assert cp.returncode == 10, (cp.returncode, cp.stdout, cp.stderr)
    assert "Traceback" not in cp.stderr and cp.stdout == ""
    [line] = cp.stderr.splitlines()
    assert line.startswith("appliance: the net role is not running"), line
    return line


def test_without_the_net_role_one_line_and_exit_10(tmp_path: Path) -> None:
    line = one_line_error(run(tmp_path))
    assert str(tmp_path / "run") in line
    one_line_error(run(tmp_path, "--json"))


def test_a_list_the_net_role_left_behind_is_not_shown(tmp_path: Path) -> None:
    live = LiveState(tmp_path / "run")
    live.write("net", {"ports": PORTS})
    doc = json.loads(live.path("net").read_text())
    doc["updated_at"] -= 60  # it stopped writing a minute ago
    live.path("net").write_text(json.dumps(doc))
    one_line_error(run(tmp_path, "--json"))


# -- ports identify ---------------------------------------------------------------------


@pytest.fixture
def net_socket(tmp_path: Path) -> Iterator[list[dict[str, Any]]]:
    """The net role's control socket, answering identify_port as the role does for it0."""
    asked: list[dict[str, Any]] = []

    def identify_port(port: str, seconds: int, actor: str) -> dict[str, Any]:
        asked.append({"port": port, "seconds": seconds, "actor": actor})
        if port == "ot0":
            raise Conflict("ot0 cannot blink its LED: its driver does not support it", field="port")
        return {"port": port, "until": 1_800_000_000.0 + seconds}

    server = ControlServer(socket_path(tmp_path / "run", "net"), {"identify_port": identify_port})
    server.start()
    yield asked
    server.stop()


def test_identify_asks_the_net_role(tmp_path: Path, net_socket: list[dict[str, Any]]) -> None:
    cp = run(tmp_path, "identify", "it0", "--seconds", "20")
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout.strip() == "it0: blinking until 2027-01-15 08:00:20 UTC (20 s)"
    [asked] = net_socket
    assert asked["port"] == "it0" and asked["seconds"] == 20
    assert asked["actor"].startswith("cli:")


def test_identify_refused_is_one_line(tmp_path: Path, net_socket: list[dict[str, Any]]) -> None:
    cp = run(tmp_path, "identify", "ot0")
    assert cp.returncode == 4, cp.stderr
    assert cp.stderr.strip() == (
        "appliance: port: ot0 cannot blink its LED: its driver does not support it"
    )
    assert net_socket[0]["seconds"] == 15  # the default


def test_identify_without_the_net_role(tmp_path: Path) -> None:
    line = one_line_error(run(tmp_path, "identify", "it0"))
    assert str(socket_path(tmp_path / "run", "net")) in line


def test_identify_seconds_out_of_range(tmp_path: Path, net_socket: list[dict[str, Any]]) -> None:
    cp = run(tmp_path, "identify", "it0", "--seconds", "301")
    assert cp.returncode == 2 and "301 is not in the range 1<=x<=300" in cp.stderr
    assert "Traceback" not in cp.stderr and net_socket == []


def test_status_says_which_port_has_a_cable(tmp_path: Path) -> None:
    LiveState(tmp_path / "run").write("net", {"ports": PORTS})
    cp = cli(tmp_path, "status")
    assert cp.returncode == 0, cp.stderr
    [line] = [x for x in cp.stdout.splitlines() if x.startswith("ports:")]
    assert line == ("ports:     it0 (it) cable yes, enp3s0 cable unknown (down), ot0 (ot) cable NO")


def test_status_says_which_conduit_is_not_answered(tmp_path: Path) -> None:
    conduits = {
        "scada": {"packets": 40, "bytes": 4000, "active": True, "answering": True},
        "vendor": {
            "packets": 12,
            "bytes": 720,
            "active": True,
            "answering": False,
            "connections": 3,
            "unanswered": 3,
        },
    }
    LiveState(tmp_path / "run").write("net", {"conduits": conduits})
    cp = cli(tmp_path, "status")
    assert cp.returncode == 0, cp.stderr
    lines = {x.split()[1]: x for x in cp.stdout.splitlines() if x.startswith("conduit:")}
    assert "NOT ANSWERING" not in lines["scada"]
    assert lines["vendor"].endswith("NOT ANSWERING (3 attempts without a reply)")
