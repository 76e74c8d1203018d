"""Static routes (issue 12): an OT cell behind a router, reached through a route on ot0.

The lab's OT host stands in for the router: it gets the cell's address 192.168.60.10 on
its loopback, and the appliance routes 192.168.60.0/24 via 192.168.50.10 (the OT host's
own address). A conduit to the cell then works like any other; without the route it
cannot; and a commit that drops the route and is not confirmed brings it back on time."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from labkit import PLC1, Appliance, conduit, config, tcp_listener, wait_for

from appliance.lab import topology
from appliance.lab.topology import LabSpec

pytestmark = pytest.mark.integration

CELL = "192.168.60.10"
CELL_NET = "192.168.60.0/24"
PORT = 8502  # a TCP service of the cell (a listener started here)
ROUTE = {"to": CELL_NET, "via": PLC1}


@pytest.fixture
def cell(lab: LabSpec) -> Iterator[str]:
    topology.ns_run(lab.ns_ot, ["ip", "addr", "add", f"{CELL}/32", "dev", "lo"])
    try:
        with tcp_listener(lab.ns_ot, CELL, PORT):
            yield CELL
    finally:
        topology.ns_run(lab.ns_ot, ["ip", "addr", "del", f"{CELL}/32", "dev", "lo"], check=False)


def routed(route: bool = True) -> dict:
    cfg = config()
    if route:
        cfg["interfaces"][1]["routes"] = [ROUTE]
    cfg["conduits"].append(conduit("cell", CELL, [f"tcp/{PORT}"]))
    return cfg


def reached(appliance: Appliance, host: str) -> bool:
    return appliance.probe(host, PORT) == "open"


def routes(lab: LabSpec) -> str:
    return topology.ns_run(lab.ns_app, ["ip", "route", "show", CELL_NET]).stdout.strip()


def test_a_cell_behind_a_router_is_reached_through_its_route(
    appliance: Appliance, lab: LabSpec, cell: str
) -> None:
    appliance.commit(routed(route=False))
    assert routes(lab) == "" and not reached(appliance, cell), "no route: out of reach"

    appliance.commit(routed())
    assert routes(lab) == f"{CELL_NET} via {PLC1} dev ot0 proto static"
    assert wait_for(lambda: reached(appliance, cell), 5, "the cell through the route")
    # the conduit decides as for any OT host: another service does not pass
    assert appliance.probe(cell, 8080) == "dropped"

    appliance.commit(routed(route=False))  # the document no longer has it: it goes
    assert routes(lab) == "" and not reached(appliance, cell)


def test_an_unconfirmed_commit_that_drops_the_route_brings_it_back(
    appliance: Appliance, lab: LabSpec, cell: str
) -> None:
    first = appliance.commit(routed())
    assert wait_for(lambda: reached(appliance, cell), 5, "the cell through the route")
    second = appliance.commit(routed(route=False), confirm_within=10)
    assert routes(lab) == "" and not reached(appliance, cell)
    wait_for(lambda: appliance.revision(second).state == "rolled-back", 15, "the revert")
    appliance.wait_applied(first)
    assert routes(lab) == f"{CELL_NET} via {PLC1} dev ot0 proto static"
    assert wait_for(lambda: reached(appliance, cell), 5, "the cell again after the revert")
