"""NTP (issue 12): the net role hands chrony the revision's servers and reads its state back.

An NTP server (chronyd, `local stratum 8`) runs on the lab's IT host; the unit's time
client (chronyd, reading its sources from `<run>/chrony/` as the image's drop-in makes it)
runs in the appliance's namespace. Both run with `-x`: they never touch this machine's
clock. The unit syncs to the IT host, `status` and the live document say so, and a
revision naming a server that does not answer takes the sync away: an event."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from labkit import IT_HOST, Appliance, config, wait_for

from appliance.lab import topology
from appliance.lab.topology import LabSpec

pytestmark = pytest.mark.integration

SERVER_CONF = """local stratum 8
allow all
port 123
cmdport 0
bindcmdaddress {dir}/chronyd.sock
pidfile {dir}/chronyd.pid
"""
# what the image's /etc/chrony/conf.d/appliance.conf does, with the lab's socket
CLIENT_CONF = """sourcedir {run}/chrony
port 0
cmdport 0
bindcmdaddress {run}/chrony/chronyd.sock
pidfile {dir}/chronyd.pid
"""


def chronyd(lab: LabSpec, ns: str, name: str, conf: Path) -> None:
    # -x: never adjust this machine's clock; -u root: the lab's dirs are root's
    argv = ["chronyd", "-n", "-x", "-u", "root", "-f", str(conf), "-L", "0"]
    topology.spawn(lab, ns, name, argv)


@pytest.fixture
def clocks(lab: LabSpec, appliance: Appliance, tmp_path: Path) -> Iterator[None]:
    server, client = tmp_path / "ntp-server", tmp_path / "ntp-client"
    for d in (server, client, appliance.paths.run_dir / "chrony"):
        d.mkdir(mode=0o700, exist_ok=True)
    (server / "chrony.conf").write_text(SERVER_CONF.format(dir=server))
    run = appliance.paths.run_dir
    (client / "chrony.conf").write_text(CLIENT_CONF.format(run=run, dir=client))
    chronyd(lab, lab.ns_it, "ntp-server", server / "chrony.conf")
    chronyd(lab, lab.ns_app, "ntp-client", client / "chrony.conf")
    sock = run / "chrony" / "chronyd.sock"
    try:
        wait_for(sock.exists, 5, "the unit's chronyd to listen")
        yield
    finally:
        topology.stop(lab, "ntp-client")
        topology.stop(lab, "ntp-server")


def with_ntp(*servers: str) -> dict:
    return config(time={"ntp": list(servers), "unsynchronised_after_minutes": 1})


def clock(appliance: Appliance) -> dict:
    return appliance.live().get("time") or {}


def test_the_unit_keeps_time_from_the_configured_server(appliance: Appliance, clocks: None) -> None:
    appliance.commit(with_ntp(IT_HOST))
    sources = (appliance.paths.run_dir / "chrony" / "appliance.sources").read_text()
    assert f"server {IT_HOST} iburst" in sources
    assert wait_for(lambda: clock(appliance).get("synchronised"), 30, "chrony to sync")
    got = clock(appliance)
    assert got["source"] == IT_HOST and got["stratum"] == 9 and got["servers"] == [IT_HOST]
    assert abs(got["offset_s"]) < 0.1  # the same machine's clock on both sides
    assert appliance.events("time.synchronised")
    dirs = ["--data-dir", str(appliance.paths.data_dir), "--run-dir", str(appliance.paths.run_dir)]
    status = subprocess.run(
        [sys.executable, "-m", "appliance", "status", *dirs],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    assert f"time:      in sync with {IT_HOST} (stratum 9" in status

    # a revision whose server does not answer: chrony drops the old one, the sync is lost
    appliance.commit(with_ntp("10.10.0.99"))
    assert wait_for(lambda: appliance.events("time.unsynchronised"), 30, "the sync lost")
    # the event is stored before the live document is next written (within a second)
    assert wait_for(lambda: clock(appliance).get("synchronised") is False, 5, "the state")
    got = clock(appliance)
    assert got["unsynchronised_since"] is not None
    assert got["servers"] == ["10.10.0.99"]


def test_without_a_time_client_the_error_says_so(appliance: Appliance) -> None:
    """No chronyd answering (not started): the file is written for when it starts, and the
    net role says the time client did not take it."""
    appliance.commit(with_ntp(IT_HOST))
    assert (appliance.paths.run_dir / "chrony" / "appliance.sources").exists()
    want = "the time client did not take the NTP servers"
    assert wait_for(lambda: (appliance.live().get("last_error") or "").startswith(want), 5, "")
    assert wait_for(lambda: clock(appliance).get("error"), 15, "the status error")
    assert "the time client does not answer" in clock(appliance)["error"]
