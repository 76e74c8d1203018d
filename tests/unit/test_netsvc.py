"""NTP and DNS (issue 12): the document's `time` and `dns`, chrony's files and state, the net
role's events and snapshot, and health's clock-unsynchronised."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import pytest
import yaml
from testkit import Clock

from appliance.agent.health import health
from appliance.config.load import sha256_of
from appliance.config.model import Config
from appliance.config.netsvc import Dns, Time
from appliance.errors import ApplianceError
from appliance.net.netsvc import (
    NetServices,
    TimeStatus,
    parse_status,
    resolv_conf_text,
    sources_text,
    write_atomically,
)
from appliance.net.role import TIME_EVERY_S, NetRole
from appliance.state import revisions as revs
from appliance.state.db import Store
from appliance.state.live import LiveState

from .test_agent_health import codes, good, net_doc
from .test_net_role import DEMO, FakeForwarding, FakeNft

SOURCES = """^,*,10.10.0.2,8,2,377,1,-0.000000006,-0.000000053,0.000003341
^,?,10.10.0.9,0,6,0,4294967295,0.000000000,0.000000000,0.000000000
"""
TRACKING = (
    "0A0A0002,10.10.0.2,9,1796357917.419701512,-0.000002429,-0.000000047,0.000001140,"
    "0.005,-0.000,0.676,0.000006543,0.000004760,1.0,Normal\n"
)


def test_documents_without_time_or_dns_keep_their_hash() -> None:
    c = Config.model_validate(DEMO)
    assert "time" not in c.canonical() and "dns" not in c.canonical()
    with_time = Config.model_validate({**DEMO, "time": {"ntp": ["10.10.0.2"]}})
    assert with_time.canonical()["time"] == {
        "ntp": ["10.10.0.2"],
        "unsynchronised_after_minutes": 60.0,
    }
    assert sha256_of(with_time) != sha256_of(c)


@pytest.mark.parametrize(
    ("section", "value", "path", "words"),
    [
        ("time", {"ntp": ["not a host"]}, "time.ntp.0", "not a host name or IP address"),
        ("time", {"ntp": ["ntp.example", "NTP.example"]}, "time.ntp", "listed twice"),
        ("time", {"ntp": [f"10.0.0.{n}" for n in range(9)]}, "time.ntp", "at most 8"),
        ("time", {"unsynchronised_after_minutes": 0}, "time.unsynchronised", "greater than"),
        ("time", {"servers": ["x"]}, "time.servers", "Extra inputs"),
        ("dns", {"servers": ["ns.example"]}, "dns.servers.0", "given by address"),
        ("dns", {"servers": ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"]}, "dns.servers", ""),
        ("dns", {"search": ["10.0.0.1"]}, "dns.search.0", "a search domain is a DNS name"),
    ],
)
def test_bad_time_and_dns_are_refused_at_their_path(
    section: str, value: dict, path: str, words: str
) -> None:
    with pytest.raises(Exception) as e:
        Config.model_validate({**DEMO, section: value})
    text = str(e.value).replace("\n", " ")
    assert path.replace(".", ".") in text.replace(" ", "") or path in text
    assert words in text


def test_chrony_and_resolver_files() -> None:
    assert sources_text(Time(ntp=["10.10.0.2", "ntp.plant.example"])).splitlines()[1:] == [
        "server 10.10.0.2 iburst",
        "server ntp.plant.example iburst",
    ]
    assert resolv_conf_text(
        Dns(servers=["10.10.0.53", "fd00::53"], search=["plant.example"])
    ).splitlines()[1:] == ["nameserver 10.10.0.53", "nameserver fd00::53", "search plant.example"]
    assert resolv_conf_text(Dns()).splitlines()[1:] == []


def test_chronyc_state_is_read() -> None:
    st = parse_status(SOURCES, TRACKING)
    assert st == TimeStatus(
        True, source="10.10.0.2", stratum=9, offset_s=-4.7e-08, sources=2, reachable=1
    )
    # no source selected (just reloaded, none answers): not in sync, whatever tracking says
    assert not parse_status(SOURCES.replace("^,*", "^,?"), TRACKING).synchronised
    unsynced = TRACKING.replace("Normal", "Not synchronised")
    assert parse_status(SOURCES, unsynced) == TimeStatus(False, sources=2, reachable=1)
    assert parse_status("", "garbage") == TimeStatus(False)


def test_files_are_rewritten_only_when_they_change(tmp_path: Path) -> None:
    f = tmp_path / "d" / "resolv.conf"
    assert write_atomically(f, "a\n") and f.read_text() == "a\n"
    assert not write_atomically(f, "a\n")
    assert write_atomically(f, "b\n") and f.read_text() == "b\n"
    assert [p.name for p in f.parent.iterdir()] == ["resolv.conf"]  # no temp file left


class FakeChrony:
    def __init__(self) -> None:
        self.status_: TimeStatus = TimeStatus(False, sources=1)
        self.configured: list[list[str]] = []
        self.refuse = False

    def configure(self, time: Time) -> bool:
        if self.refuse:
            raise ApplianceError("chronyc -h /run/chrony/chronyd.sock -n: 506 Cannot talk")
        changed = not self.configured or self.configured[-1] != list(time.ntp)
        self.configured.append(list(time.ntp))
        return changed

    def status(self) -> TimeStatus:
        return self.status_


@pytest.fixture
def env(tmp_path: Path):
    store = Store(tmp_path / "data")
    chrony, clock = FakeChrony(), Clock()
    services = NetServices(tmp_path / "run", chrony)  # type: ignore[arg-type]
    role = NetRole(
        store,
        LiveState(tmp_path / "run"),
        FakeNft(),
        None,
        clock=clock,
        forwarding=FakeForwarding(),
        services=services,
    )
    role.start()
    yield store, chrony, clock, role, tmp_path / "run"
    store.close()


def commit(store: Store, clock: Clock, doc: dict) -> int:
    rev = revs.import_text(store, yaml.safe_dump(doc), author="t", now=clock.t).revision
    revs.commit(store, author="t", now=clock.t, ref=rev.id)
    return rev.id


def with_time(ntp: list[str], dns: list[str] | None = None) -> dict:
    doc = copy.deepcopy(DEMO)
    doc["time"] = {"ntp": ntp, "unsynchronised_after_minutes": 5}
    if dns is not None:
        doc["dns"] = {"servers": dns}
    return doc


def test_the_revision_configures_chrony_and_the_resolver(env) -> None:
    store, chrony, clock, role, run = env
    commit(store, clock, with_time(["10.10.0.2"], dns=["10.10.0.53"]))
    role.step()
    assert chrony.configured == [["10.10.0.2"]]
    assert "nameserver 10.10.0.53" in (run / "resolv.conf").read_text()
    [ev] = store.events(5, "net.services")
    assert ev.message == "resolver: 10.10.0.53; time: NTP from 10.10.0.2"
    # a revision without them takes them back (commit-confirm reverts them with the rest)
    commit(store, clock, DEMO)
    clock.t += 1
    role.step()
    assert chrony.configured[-1] == [] and "nameserver" not in (run / "resolv.conf").read_text()


def test_sync_lost_and_regained_are_events_and_in_the_snapshot(env) -> None:
    store, chrony, clock, role, _ = env
    commit(store, clock, with_time(["10.10.0.2"]))
    chrony.status_ = parse_status(SOURCES, TRACKING)
    role.step()
    clock.t += TIME_EVERY_S
    role.step()
    assert [e.kind for e in store.events(10) if e.kind.startswith("time.")] == ["time.synchronised"]
    snap = role.snapshot(clock.t)["time"]
    assert snap["synchronised"] and snap["source"] == "10.10.0.2"
    assert snap["servers"] == ["10.10.0.2"] and snap["unsynchronised_since"] is None

    chrony.status_ = TimeStatus(False, sources=1, reachable=0)
    lost_at = clock.t + TIME_EVERY_S
    clock.t = lost_at
    role.step()
    [lost] = store.events(1, "time.unsynchronised")
    assert lost.severity == "warning" and "0 of 1 NTP servers answer" in lost.message
    clock.t += TIME_EVERY_S
    role.step()  # still out of sync: no second event, and the time it began is kept
    assert len(store.events(10, "time.unsynchronised")) == 1
    assert role.snapshot(clock.t)["time"]["unsynchronised_since"] == lost_at


def test_no_ntp_server_no_time_events(env) -> None:
    store, chrony, clock, role, _ = env
    commit(store, clock, DEMO)
    for _ in range(3):
        role.step()
        chrony.status_ = dataclasses.replace(chrony.status_, synchronised=False)
        clock.t += TIME_EVERY_S
    assert not [e for e in store.events(20) if e.kind.startswith("time.")]
    assert role.snapshot(clock.t)["time"]["servers"] == []


def test_chrony_that_cannot_be_told_is_a_net_error(env) -> None:
    store, chrony, clock, role, _ = env
    chrony.refuse = True
    commit(store, clock, with_time(["10.10.0.2"]))
    role.step()
    assert role.state.last_error.startswith("the time client did not take the NTP servers")


def time_doc(**over: object) -> dict:
    return {
        "servers": ["10.10.0.2"],
        "synchronised": False,
        "sources": 1,
        "reachable": 0,
        "unsynchronised_after_s": 300.0,
        "unsynchronised_since": None,
        "error": None,
        **over,
    }


def test_health_says_clock_unsynchronised_after_the_documented_time() -> None:
    now = good().net["updated_at"] + 0.5
    recent = good(net=net_doc(time=time_doc(unsynchronised_since=now - 299)))
    assert "clock-unsynchronised" not in codes(health(recent, now))
    late = good(net=net_doc(time=time_doc(unsynchronised_since=now - 301)))
    h = health(late, now)
    assert h.state == "degraded" and "clock-unsynchronised" in codes(h)
    [reason] = [r for r in h.reasons if r.code == "clock-unsynchronised"]
    assert reason.message == ("the clock has not been in sync for 5 min: 0 of 1 NTP servers answer")
    in_sync = good(net=net_doc(time=time_doc(synchronised=True, unsynchronised_since=None)))
    assert health(in_sync, now).state == "ok"
    not_kept = good(net=net_doc(time=time_doc(servers=[], unsynchronised_since=now - 1e6)))
    assert health(not_kept, now).state == "ok"


def test_chronyd_is_told_only_when_there_were_or_are_servers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A unit (or the lab) without NTP servers never asks chronyd, which need not run;
    going from servers to none does tell it."""
    from appliance.net.netsvc import Chrony

    calls: list[tuple[str, ...]] = []
    chrony = Chrony(tmp_path / "run")
    monkeypatch.setattr(chrony, "_chronyc", lambda *args: calls.append(args) or "")
    assert chrony.configure(Time()) is True and calls == []  # the file, and no reload
    assert chrony.configure(Time(ntp=["10.10.0.2"])) is True and len(calls) == 1
    assert chrony.configure(Time()) is True and len(calls) == 2  # servers gone: told
    assert chrony.configure(Time()) is False and len(calls) == 2
