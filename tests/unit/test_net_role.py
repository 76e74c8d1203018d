"""The net role's decisions with fakes at the edges: apply failures, deadlines, drift, counters."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from testkit import Clock

from appliance.errors import ApplyFailed
from appliance.net.links import NicFacts
from appliance.net.ports import Ports, Sysfs
from appliance.net.render import render_fail_closed
from appliance.net.role import PORTS_EVERY_S, NetRole
from appliance.state import revisions as revs
from appliance.state.db import Revision, Store
from appliance.state.live import LiveState

REPO = Path(__file__).resolve().parents[2]
DEMO = yaml.safe_load((REPO / "examples" / "demo.yaml").read_text())
DEMO_IT_MAC = next(i["mac"] for i in DEMO["interfaces"] if i["role"] == "it")


class FakeNft:
    """A kernel that keeps what it was given and can be told to refuse a conduit."""

    def __init__(self) -> None:
        self.listing: list[dict[str, Any]] | None = None
        self.applied: list[dict[str, Any]] = []
        self.refuse: str | None = None

    def apply(self, document: dict[str, Any], *, check_only: bool = False) -> None:
        text = json.dumps(document)
        if self.refuse and self.refuse in text:
            raise ApplyFailed("nftables refused the ruleset: Could not process rule")
        self.applied.append(document)
        self.listing = [
            {k: copy.deepcopy(v) for k, v in cmd["add"].items()} for cmd in document["nftables"][3:]
        ]

    def list_table(self) -> list[dict[str, Any]] | None:
        return copy.deepcopy(self.listing)


class FakeForwarding:
    def __init__(self) -> None:
        self.on = False

    def enabled(self) -> bool:
        return self.on

    def set(self, enabled: bool) -> None:
        self.on = enabled


@pytest.fixture
def env(tmp_path: Path):
    store = Store(tmp_path / "data")
    nft, clock, fwd = FakeNft(), Clock(), FakeForwarding()
    role = NetRole(store, LiveState(tmp_path / "run"), nft, None, clock=clock, forwarding=fwd)
    yield store, nft, clock, role, fwd
    store.close()


def demo(**conduit_changes: Any) -> str:
    doc = copy.deepcopy(DEMO)
    doc["conduits"].append(
        {
            "name": "web",
            "owner": "t",
            "reason": "t",
            "from": ["10.10.0.2"],
            "to": ["192.168.50.10"],
            "services": ["tcp/8080"],
            **conduit_changes,
        }
    )
    return yaml.safe_dump(doc)


def commit(store: Store, clock: Clock, text: str, confirm_within: float | None = None) -> int:
    rev = revs.import_text(store, text, author="t", now=clock.t).revision
    revs.commit(store, author="t", now=clock.t, ref=rev.id, confirm_within=confirm_within)
    return rev.id


def test_start_loads_fail_closed_before_forwarding(env) -> None:
    store, nft, _clock, role, fwd = env
    role.start()
    assert fwd.on
    forward = [o for o in nft.listing if "rule" in o and o["rule"]["chain"] == "forward"]
    assert len(forward) == 1 and "drop" in forward[0]["rule"]["expr"][-1]
    assert store.events(10, "net.fail-closed")


def restarted(store: Store, nft: FakeNft, clock: Clock) -> NetRole:
    """A new net role process on the same kernel and databases."""
    live = LiveState(store.data_dir.parent / "run2")
    return NetRole(store, live, nft, None, clock=clock, forwarding=FakeForwarding())


def test_a_table_found_with_no_configuration_is_replaced_by_fail_closed(env) -> None:
    # after a factory reset the kernel still holds the wiped configuration's table, which
    # the net role would adopt: with no desired revision it closes the gate instead
    store, nft, clock, role, _ = env
    role.start()
    commit(store, clock, yaml.safe_dump(DEMO))
    role.step()
    assert nft.listing is not None and len(nft.applied) == 2
    for rev in Revision.select():
        rev.delete_instance()  # what the reset's wipe leaves: no revision at all
    restarted(store, nft, clock).start()
    assert nft.applied[-1] == render_fail_closed().document()
    assert len(store.events(10, "net.fail-closed")) == 2
    assert "no configuration" in store.events(10, "net.fail-closed")[0].message


def test_a_table_found_with_a_configuration_is_adopted(env) -> None:
    store, nft, clock, role, _ = env
    role.start()
    commit(store, clock, yaml.safe_dump(DEMO))
    role.step()
    applied = len(nft.applied)
    restarted(store, nft, clock).start()
    assert len(nft.applied) == applied  # a restart does not cut traffic


def test_commit_is_applied_then_confirmed(env) -> None:
    store, _nft, clock, role, _ = env
    role.start()
    rev = commit(store, clock, yaml.safe_dump(DEMO))
    role.step()
    assert Revision.get_by_id(rev).state == "confirmed"
    assert role.snapshot(clock.t)["applied"]["revision"] == rev


def test_refused_pending_revision_is_rolled_back_to_the_confirmed_one(env) -> None:
    store, nft, clock, role, _ = env
    role.start()
    good = commit(store, clock, yaml.safe_dump(DEMO))
    role.step()
    nft.refuse = '"tcp", 8080'
    bad = commit(store, clock, demo(), confirm_within=60)
    role.step()
    assert Revision.get_by_id(bad).state == "rolled-back"
    assert "apply failed" in Revision.get_by_id(bad).reason
    assert role.state.applied.revision_id == good
    assert '"tcp", 8080' not in json.dumps(nft.listing)


def test_deadline_reverts_on_the_clock(env) -> None:
    store, _nft, clock, role, _ = env
    role.start()
    good = commit(store, clock, yaml.safe_dump(DEMO))
    role.step()
    pending = commit(store, clock, demo(), confirm_within=30)
    role.step()
    assert role.state.applied.revision_id == pending
    clock.t += 29
    role.step()
    assert Revision.get_by_id(pending).state == "pending"
    clock.t += 2
    role.step()
    assert Revision.get_by_id(pending).state == "rolled-back"
    assert role.state.applied.revision_id == good


def test_drift_is_reasserted_and_counted(env) -> None:
    store, nft, clock, role, _ = env
    role.start()
    commit(store, clock, yaml.safe_dump(DEMO))
    role.step()
    applied_before = len(nft.applied)
    nft.listing = [o for o in nft.listing if "set" not in o]  # someone deleted our sets
    clock.t += 10
    role.step()
    assert role.state.drift_count == 1
    assert len(nft.applied) == applied_before + 1
    assert store.events(10, "net.drift")
    clock.t += 10
    role.step()
    assert role.state.drift_count == 1  # re-asserted ruleset is not drift


def test_counters_survive_a_reapply(env) -> None:
    store, nft, clock, role, _ = env
    role.start()
    commit(store, clock, yaml.safe_dump(DEMO))
    role.step()
    for obj in nft.listing:
        if "set" in obj and obj["set"]["name"] == "c_it_ot_4":
            val = obj["set"]["elem"][0]
            obj["set"]["elem"] = [{"elem": {"val": val, "counter": {"packets": 5, "bytes": 300}}}]
    clock.t += 2
    role.step()
    assert role.state.conduits["scada-modbus"] == {"packets": 5, "bytes": 300}
    commit(store, clock, demo())  # re-apply: the kernel's counters restart from zero
    clock.t += 2
    role.step()
    assert role.state.conduits["scada-modbus"]["packets"] == 5


def test_expiry_reapplies_and_records_once(env) -> None:
    from datetime import UTC, datetime, timedelta

    store, nft, clock, role, _ = env
    role.start()
    expires = datetime.fromtimestamp(clock.t, UTC) + timedelta(seconds=60)
    commit(store, clock, demo(expires=expires.isoformat()))
    role.step()
    assert '"tcp", 8080' in json.dumps(nft.listing)
    clock.t += 61
    role.step()
    assert '"tcp", 8080' not in json.dumps(nft.listing)
    clock.t += 61
    role.step()
    assert len(store.events(10, "conduit.expired")) == 1


# -- the port list ---------------------------------------------------------------------


class FakeNics:
    """Netlink's links as the test says: the appliance's two veths, carrier as set."""

    def __init__(self) -> None:
        self.carrier = {"it0": True, "ot0": True}
        self.reads = 0
        self.fail: str | None = None

    def __call__(self) -> list[NicFacts]:
        self.reads += 1
        if self.fail:
            raise ApplyFailed(self.fail)
        macs = {"it0": "02:a0:00:00:01:01", "ot0": "02:a0:00:00:02:01"}
        return [
            NicFacts(1, "lo", "00:00:00:00:00:00", None, True, True, True, "UNKNOWN", {}),
            *(
                NicFacts(
                    i, name, macs[name], "veth", False, True, self.carrier[name],
                    "UP" if self.carrier[name] else "LOWERLAYERDOWN", {"rx_bytes": 10 * i},
                )
                for i, name in ((2, "it0"), (3, "ot0"))
            ),
        ]  # fmt: skip


@pytest.fixture
def ports_env(tmp_path: Path):
    store = Store(tmp_path / "data")
    nft, clock, nics = FakeNft(), Clock(), FakeNics()
    ports = Ports(nics, Sysfs(tmp_path / "no-sysfs"))
    role = NetRole(
        store, LiveState(tmp_path / "run"), nft, None, clock=clock,
        forwarding=FakeForwarding(), ports=ports,
    )  # fmt: skip
    yield store, clock, role, nics
    store.close()


def test_ports_are_in_the_snapshot_with_the_running_roles(ports_env) -> None:
    store, clock, role, _nics = ports_env
    role.start()
    role.step()
    listed = role.snapshot(clock.t)["ports"]
    assert [(p["name"], p["role"], p["carrier"]) for p in listed] == [
        ("it0", None, True),
        ("ot0", None, True),
    ]  # fail-closed: no configuration names them yet
    assert listed[0]["counters"]["rx_bytes"] == 20 and listed[0]["driver"] == "veth"
    commit(store, clock, yaml.safe_dump(DEMO))
    clock.advance(PORTS_EVERY_S)
    role.step()
    roles = {p["name"]: (p["role"], p["interface"]) for p in role.snapshot(clock.t)["ports"]}
    assert roles == {"it0": ("it", "it0"), "ot0": ("ot", "ot0")}
    assert json.loads(json.dumps(role.snapshot(clock.t)))["ports"][0]["mac"] == DEMO_IT_MAC


def test_ports_are_read_every_few_seconds(ports_env) -> None:
    _store, clock, role, nics = ports_env
    role.start()
    role.step()
    assert nics.reads == 1
    clock.advance(PORTS_EVERY_S - 1)
    role.step()
    assert nics.reads == 1
    clock.advance(1)
    role.step()
    assert nics.reads == 2


def test_a_carrier_change_is_an_event_once(ports_env) -> None:
    store, clock, role, nics = ports_env
    role.start()
    role.step()
    assert store.events(10, "port.") == []  # the first look is no change
    nics.carrier["ot0"] = False
    for _ in range(3):
        clock.advance(PORTS_EVERY_S)
        role.step()
    [lost] = store.events(10, "port.")
    assert (lost.kind, lost.severity, lost.message) == (
        "port.carrier_lost",
        "warning",
        "ot0: carrier lost (no link)",
    )
    assert [p["carrier"] for p in role.snapshot(clock.t)["ports"]] == [True, False]
    nics.carrier["ot0"] = True
    clock.advance(PORTS_EVERY_S)
    role.step()
    assert [e.kind for e in store.events(10, "port.")] == ["port.carrier_up", "port.carrier_lost"]


def test_a_failing_port_read_is_an_error_and_keeps_the_last_list(ports_env) -> None:
    store, clock, role, nics = ports_env
    role.start()
    role.step()
    nics.fail = "netlink cannot list the links: [Errno 105] No buffer space available"
    clock.advance(PORTS_EVERY_S)
    role.step()
    snap = role.snapshot(clock.t)
    assert snap["last_error"] == nics.fail and len(snap["ports"]) == 2
    assert store.events(10, "net.error")[0].message == nics.fail
    nics.fail = None
    clock.advance(PORTS_EVERY_S)
    role.step()
    assert role.snapshot(clock.t)["last_error"] is None  # netlink answers again


def test_without_links_or_ports_there_is_no_port_list(env) -> None:
    _store, _nft, clock, role, _ = env
    role.start()
    role.step()
    assert role.ports is None and role.snapshot(clock.t)["ports"] == []


class FakeConntrack:
    """The flows conntrack would list, set by the test."""

    def __init__(self) -> None:
        from appliance.net.conntrack import Flow

        self.Flow = Flow
        self.now: list[Any] = []

    def flows(self) -> list[Any]:
        return list(self.now)

    def cut(self, flows: list[Any]) -> int:
        return 0


def test_a_conduit_whose_destination_never_answers_is_flagged_once_and_cleared(
    tmp_path: Path,
) -> None:
    """Packets counting is not enough: a conduit to a PLC that is off counts SYNs. Two
    conntrack reads in a row with every connection unanswered make it not answering (one
    event), a reply makes it answer again (one event); attempts timing out clear nothing."""
    from appliance.net.role import ANSWERS_EVERY_S

    store = Store(tmp_path / "data")
    clock, ct = Clock(), FakeConntrack()
    role = NetRole(
        store, LiveState(tmp_path / "run"), FakeNft(), None, clock=clock,
        forwarding=FakeForwarding(), conntrack=ct,  # type: ignore[arg-type]
    )  # fmt: skip
    role.start()
    commit(store, clock, demo())
    role.step()
    syn = ct.Flow("10.10.0.2", "192.168.50.10", 6, 8080, replied=False)

    def tick() -> dict[str, Any]:
        clock.advance(ANSWERS_EVERY_S)
        role.step()
        return role.snapshot(clock.t)["conduits"]["web"]

    assert tick()["answering"] is True  # no attempt: nothing to say
    ct.now = [syn]
    got = tick()
    assert got["answering"] is True and got["unanswered"] == 1  # once may be a SYN in flight
    got = tick()
    assert got["answering"] is False and got == {**got, "connections": 1, "unanswered": 1}
    ct.now = [syn, syn]
    tick()
    [event] = store.events(10, "conduit.not_answering")
    assert event.as_dict()["data"]["conduit"] == "web" and event.severity == "warning"
    ct.now = []  # the attempts timed out: still nobody answered
    assert tick()["answering"] is False
    ct.now = [ct.Flow("10.10.0.2", "192.168.50.10", 6, 8080, replied=True)]
    assert tick()["answering"] is True
    assert len(store.events(10, "conduit.answering")) == 1
    assert len(store.events(10, "conduit.not_answering")) == 1
    store.close()
