"""The DHCP client (issue 12): the lease script's files, the supervisor of the clients and
the net role's use of the leases, with a stand-in for udhcpc that runs the real script.

The stand-in (FAKE_UDHCPC) does what udhcpc does at the script: `deconfig` at its start,
then `bound` with the environment a server's answer gives; SIGUSR2 (release) runs
`deconfig`, SIGUSR1 (renew) `renew`; SIGTERM ends it."""

from __future__ import annotations

import json
import os
import signal
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from testkit import Clock

from appliance.config.load import validate_data
from appliance.net.dhcp import DhcpClients, Lease, lease_from_env, parse_lease
from appliance.net.dhcp_script import handle
from appliance.net.links import LinkObs
from appliance.net.role import NetRole
from appliance.state import revisions as revs
from appliance.state.db import Store
from appliance.state.live import LiveState

from . import factory
from .test_net_role import FakeForwarding, FakeNft

ENV = {
    "interface": "it0",
    "ip": "10.10.0.100",
    "mask": "24",
    "router": "10.10.0.2 10.10.0.3",
    "dns": "10.10.0.53 10.10.0.54",
    "lease": "120",
    "serverid": "10.10.0.2",
    "domain": "plant.example",
}

FAKE_UDHCPC = textwrap.dedent(
    """
    import os, signal, subprocess, sys, time
    args = sys.argv[1:]
    iface, script = args[args.index("-i") + 1], args[args.index("-s") + 1]
    env = dict(os.environ, interface=iface)
    lease = dict(env, ip="10.10.0.100", mask="24", router="10.10.0.2", dns="10.10.0.53",
                 lease=os.environ.get("APPLIANCE_FAKE_LEASE", "120"), serverid="10.10.0.2")
    def run(event, e):
        subprocess.run([script, event], env=e, check=True)
    signal.signal(signal.SIGUSR2, lambda *_: run("deconfig", env))
    signal.signal(signal.SIGUSR1, lambda *_: run("renew", dict(lease, dns="10.10.0.99")))
    run("deconfig", env)
    run("bound", lease)
    print("args", " ".join(args), flush=True)
    while True:
        time.sleep(0.05)
    """
)


# -- the lease and the script -----------------------------------------------------------


def test_the_lease_from_udhcpcs_environment() -> None:
    data = lease_from_env(ENV, 1000.0, pid=42)
    assert data == {
        "link": "it0",
        "address": "10.10.0.100/24",
        "router": "10.10.0.2",
        "dns": ["10.10.0.53", "10.10.0.54"],
        "server": "10.10.0.2",
        "domain": "plant.example",
        "lease_s": 120,
        "at": 1000.0,
        "pid": 42,
    }
    lease = parse_lease("it0", json.dumps(data))
    assert lease.expires_at == 1120.0 and lease.remaining(1100.0) == 20
    # a dotted subnet instead of the prefix length, no router, no DNS
    bare = lease_from_env({"ip": "10.1.2.3", "subnet": "255.255.0.0", "lease": "60"}, 0.0)
    assert (bare["address"], bare["router"], bare["dns"]) == ("10.1.2.3/16", None, [])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"ip": "10.10.0.300"}, "ip '10.10.0.300' is not an IPv4 address"),
        ({"mask": "", "subnet": ""}, "the lease has no subnet mask"),
        ({"lease": "soon"}, "lease 'soon' is not a number of seconds"),
        ({"dns": "10.10.0.53 ns.example"}, "dns 'ns.example' is not an IPv4 address"),
    ],
)
def test_a_bad_lease_is_refused_with_what_is_wrong(change: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        lease_from_env({**ENV, **change}, 0.0)


def test_a_file_that_is_no_lease_says_so() -> None:
    with pytest.raises(ValueError, match="not a lease"):
        parse_lease("it0", '{"address": "10.10.0.100/24"}')
    with pytest.raises(ValueError, match="not a lease"):
        parse_lease("it0", "[1, 2")


def test_the_script_writes_the_lease_and_deconfig_removes_it(tmp_path: Path) -> None:
    path = tmp_path / "it0.json"
    assert handle("bound", ENV, tmp_path, 7, 1000.0) == "it0: bound 10.10.0.100/24 for 120 s"
    assert json.loads(path.read_text())["pid"] == 7
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    # a new client deconfigures at its start: the lease an earlier one holds runs on
    assert "runs on" in handle("deconfig", ENV, tmp_path, 8, 1010.0)
    assert path.exists()
    # ... until it ran out, or when its own client deconfigures
    handle("deconfig", ENV, tmp_path, 7, 1010.0)
    assert not path.exists()
    handle("bound", ENV, tmp_path, 7, 1000.0)
    handle("deconfig", ENV, tmp_path, 8, 1200.0)
    assert not path.exists()
    assert handle("leasefail", ENV, tmp_path, 7, 0.0) == "it0: leasefail"
    with pytest.raises(ValueError, match="is not a link name"):
        handle("bound", {**ENV, "interface": "../x"}, tmp_path, 7, 0.0)


# -- the supervisor, with the stand-in client -----------------------------------------------


@pytest.fixture
def fake_client(tmp_path: Path) -> tuple[str, ...]:
    path = tmp_path / "fake-udhcpc.py"
    path.write_text(FAKE_UDHCPC)
    return (sys.executable, str(path))


def wait_for(pred: Any, timeout: float = 10.0) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = pred()
        if got:
            return got
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout} s")


def test_a_client_per_link_is_started_restarted_and_stopped(
    tmp_path: Path, fake_client: tuple[str, ...]
) -> None:
    clock = Clock()
    clients = DhcpClients(tmp_path / "run", client=fake_client, clock=clock)
    try:
        assert clients.sync(["it0"], ready=[]) == []  # no such link yet: no client
        [started] = clients.sync(["it0"], ready=["it0"])
        assert started.message.startswith("it0: DHCP client started (pid ")
        leases = wait_for(lambda: clients.leases(["it0"])[0])
        assert leases["it0"].address == "10.10.0.100/24"
        assert leases["it0"].pid == clients.pid("it0")
        assert clients.sync(["it0"]) == []  # running: nothing to do

        # it dies: started again after a pause, asking for the address it held
        first = clients.pid("it0")
        os.kill(first, signal.SIGKILL)
        wait_for(lambda: clients.pid("it0") is None)
        [died] = clients.sync(["it0"])
        assert died.severity == "warning" and "exited (status -9)" in died.message
        assert clients.sync(["it0"]) == []  # within the pause
        clock.advance(1.0)
        [again] = clients.sync(["it0"])
        assert "started" in again.message and clients.pid("it0") != first

        # dropped: released (deconfig) and stopped, the lease file gone
        [stopped] = clients.sync([])
        assert stopped.message == "it0: DHCP client stopped, lease released"
        assert clients.pid("it0") is None and clients.leases(["it0"]) == ({}, {})
    finally:
        clients.close()


def test_a_client_left_by_an_earlier_role_is_ended(
    tmp_path: Path, fake_client: tuple[str, ...]
) -> None:
    """A net role killed with SIGKILL leaves its clients running (their own sessions): the
    next one ends them before it starts its own, so one client asks for the link."""
    first = DhcpClients(tmp_path / "run", client=fake_client)
    second = DhcpClients(tmp_path / "run", client=fake_client)
    try:
        first.sync(["it0"])
        old = first.pid("it0")
        wait_for(lambda: first.leases(["it0"])[0])
        second.sync(["it0"])
        assert second.pid("it0") not in (None, old)
        wait_for(lambda: first._clients["it0"].child.poll() is not None)
        # the lease the first one got runs on (the new client's deconfig leaves it)
        assert second.leases(["it0"])[0]["it0"].address == "10.10.0.100/24"
    finally:
        first.close()
        second.close()


def test_a_client_that_cannot_start_is_an_error_and_is_tried_again(tmp_path: Path) -> None:
    clock = Clock()
    clients = DhcpClients(tmp_path / "run", client=("/nonexistent/udhcpc",), clock=clock)
    [failed] = clients.sync(["it0"])
    assert failed.severity == "error" and "command not found" in failed.message
    assert clients.sync(["it0"]) == []
    clock.advance(2.0)
    assert clients.sync(["it0"])[0].severity == "error"


# -- the net role ------------------------------------------------------------------------------


class FakeLinks:
    """The links adapter as the role sees it: every configured link present, and what
    reconcile was given."""

    def __init__(self) -> None:
        self.given: list[dict[str, Lease]] = []

    def fileno(self) -> int:
        return -1

    def nics(self) -> list:
        return []

    def reconcile(self, config, leases=None, now=None) -> list[str]:
        self.given.append(dict(leases or {}))
        return []

    def observe(self, config) -> list[LinkObs]:
        return [LinkObs(i.name, i.role, present=True) for i in config.links()]


class FakeServices:
    def __init__(self) -> None:
        self.dns: list[list[str]] = []

    def apply(self, time_, dns) -> list[str]:
        self.dns.append(list(dns.servers))
        return []

    def time_status(self):
        from appliance.net.netsvc import TimeStatus

        return TimeStatus(False)


@pytest.fixture
def role_env(tmp_path: Path, fake_client: tuple[str, ...]):
    store = Store(tmp_path / "data")
    clock = Clock(time.time())  # the stand-in writes leases on the wall clock
    links, services = FakeLinks(), FakeServices()
    dhcp = DhcpClients(tmp_path / "run", client=fake_client)
    role = NetRole(
        store, LiveState(tmp_path / "run"), FakeNft(), links, clock=clock,
        forwarding=FakeForwarding(), ports=None, blinker=None, services=services, dhcp=dhcp,
    )  # fmt: skip
    role.ports = None
    yield store, clock, role, links, services, dhcp
    dhcp.close()
    store.close()


def commit(store: Store, clock: Clock, doc: dict, confirm_within: float | None = None) -> None:
    validate_data(doc)
    rev = revs.import_text(store, yaml.safe_dump(doc), author="t", now=clock.t).revision
    revs.commit(store, author="t", now=clock.t, ref=rev.id, confirm_within=confirm_within)


def dhcp_doc(dhcp: bool = True) -> dict:
    doc = factory.base()
    if dhcp:
        doc["interfaces"][0].update({"dhcp": True, "addresses": []})
    return doc


def steps(role: NetRole, clock: Clock, until: Any, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        clock.t = time.time()
        role.step()
        if until():
            return
        time.sleep(0.05)
    raise AssertionError("not within the time")


def kinds(store: Store, prefix: str = "dhcp.") -> list[str]:
    return [e.kind for e in reversed(store.events(100, prefix))]


def test_the_role_applies_the_lease_shows_it_and_makes_events(role_env) -> None:
    store, clock, role, links, services, dhcp = role_env
    commit(store, clock, dhcp_doc())
    steps(role, clock, lambda: "it0" in role.leases)
    assert kinds(store) == ["dhcp.client", "dhcp.bound"]
    bound = store.events(1, "dhcp.bound")[0]
    want = "it0: DHCP lease 10.10.0.100/24 from 10.10.0.2 (router 10.10.0.2, 120 s)"
    assert bound.message == want
    steps(role, clock, lambda: links.given and "it0" in links.given[-1])
    assert services.dns[-1] == ["10.10.0.53"]  # the document names no DNS server
    it = next(link for link in role.snapshot(clock.t)["links"] if link["name"] == "it0")
    assert it["dhcp"]["bound"] and it["dhcp"]["address"] == "10.10.0.100/24"
    assert it["dhcp"]["router"] == "10.10.0.2" and it["dhcp"]["server"] == "10.10.0.2"
    assert it["dhcp"]["expires_at"] == pytest.approx(clock.t + 120, abs=5)
    assert it["dhcp"]["client_pid"] == dhcp.pid("it0")
    ot = next(link for link in role.snapshot(clock.t)["links"] if link["name"] == "ot0")
    assert "dhcp" not in ot

    # a renewal that changes the DNS server is an event; one that changes nothing is not
    os.kill(dhcp.pid("it0"), signal.SIGUSR1)
    steps(role, clock, lambda: role.leases["it0"].dns == ("10.10.0.99",))
    assert kinds(store)[-1] == "dhcp.renewed" and services.dns[-1] == ["10.10.0.99"]
    os.kill(dhcp.pid("it0"), signal.SIGUSR1)
    before = role.leases["it0"].at
    steps(role, clock, lambda: role.leases["it0"].at != before)
    assert kinds(store).count("dhcp.renewed") == 1

    # released (the server took it back): lost, a warning, and reconcile loses it
    os.kill(dhcp.pid("it0"), signal.SIGUSR2)
    steps(role, clock, lambda: "it0" not in role.leases)
    lost = store.events(1, "dhcp.lost")[0]
    assert lost.severity == "warning" and "was taken back" in lost.message
    steps(role, clock, lambda: links.given and "it0" not in links.given[-1])


def test_a_lease_that_runs_out_is_lost(role_env, monkeypatch: pytest.MonkeyPatch) -> None:
    store, clock, role, _links, _services, dhcp = role_env
    monkeypatch.setenv("APPLIANCE_FAKE_LEASE", "3")
    commit(store, clock, dhcp_doc())
    steps(role, clock, lambda: "it0" in role.leases)
    steps(role, clock, lambda: "it0" not in role.leases, timeout=6)
    assert "ran out" in store.events(1, "dhcp.lost")[0].message
    assert dhcp.pid("it0") is not None  # the client goes on asking


def test_a_revision_without_dhcp_stops_the_client_and_commit_confirm_brings_it_back(
    role_env,
) -> None:
    store, clock, role, links, _services, dhcp = role_env
    commit(store, clock, dhcp_doc())
    steps(role, clock, lambda: "it0" in role.leases)
    commit(store, clock, dhcp_doc(dhcp=False), confirm_within=10)
    steps(role, clock, lambda: dhcp.pid("it0") is None and not role.leases)
    assert kinds(store)[-2:] == ["dhcp.client", "dhcp.released"]
    assert not (dhcp.dir / "it0.json").exists()
    steps(role, clock, lambda: links.given and "it0" not in links.given[-1])
    # not confirmed: the revision with dhcp comes back, and its client with it
    clock_end = time.time() + 10
    while time.time() < clock_end and "it0" not in role.leases:
        clock.t = time.time() + 11  # past the confirm deadline
        role.step()
        time.sleep(0.05)
    assert "it0" in role.leases and dhcp.pid("it0") is not None


def test_a_lease_that_meets_another_sides_subnet_is_refused(role_env) -> None:
    store, clock, role, links, _services, _dhcp = role_env
    doc = dhcp_doc()
    doc["interfaces"][1]["addresses"] = ["10.10.0.129/25"]  # OT meets the lease's /24
    doc["conduits"] = []
    commit(store, clock, doc)
    want = "it0: DHCP lease refused: 10.10.0.100/24 overlaps 10.10.0.129/25 on ot0"
    steps(role, clock, lambda: role.state.last_error == want)
    assert role.leases == {} and not store.events(10, "dhcp.bound")
    assert all("it0" not in given for given in links.given)
