"""Static routes on an interface (issue 12): validated with their field paths, on the side
of their interface, and out of the canonical form when there are none."""

from __future__ import annotations

from typing import Any

import pytest

from appliance.config.load import sha256_of, validate_data
from appliance.errors import ConfigInvalid

from . import factory

CELL = {"to": "192.168.60.0/24", "via": "192.168.50.254"}


def with_routes(*routes: dict[str, Any], conduits: list[dict[str, Any]] | None = None) -> dict:
    doc = factory.base()
    doc["interfaces"][1]["routes"] = list(routes)
    if conduits is not None:
        doc["conduits"] = conduits
    return doc


def error_of(doc: dict[str, Any]) -> tuple[str, str]:
    with pytest.raises(ConfigInvalid) as e:
        validate_data(doc)
    path, message, _line = e.value.errors[0]
    return path, message


def test_a_route_to_a_cell_behind_a_router_is_kept() -> None:
    config = validate_data(with_routes(CELL)).config
    [route] = config.interfaces[1].routes
    assert (str(route.to), str(route.via)) == ("192.168.60.0/24", "192.168.50.254")
    assert config.canonical()["interfaces"][1]["routes"] == [CELL]


def test_no_routes_leave_the_document_and_its_hash_as_before() -> None:
    plain = validate_data(factory.base()).config
    empty = validate_data(with_routes()).config
    assert "routes" not in plain.canonical()["interfaces"][1]
    assert sha256_of(plain) == sha256_of(empty)


@pytest.mark.parametrize(
    ("route", "path", "message"),
    [
        (
            {"to": "192.168.60.0/24", "via": "10.1.1.1"},
            "interfaces[1].routes[0].via",
            "10.1.1.1 is not in a subnet of ot0's addresses",
        ),
        (
            {"to": "fd00:60::/64", "via": "192.168.50.254"},
            "interfaces[1].routes[0].via",
            "192.168.50.254 is not an IPv6 address",
        ),
        (
            {"to": "0.0.0.0/0", "via": "192.168.50.254"},
            "interfaces[1].routes[0].to",
            "0.0.0.0/0 is the default route: use gateway",
        ),
        (
            {"to": "192.168.50.128/25", "via": "192.168.50.254"},
            "interfaces[1].routes[0].to",
            "192.168.50.128/25 overlaps 192.168.50.0/24, a subnet of the unit's own",
        ),
        ({"to": "192.168.60.0/24"}, "interfaces[1].routes[0].via", "is required"),
    ],
)
def test_a_bad_route_names_its_field(route: dict[str, Any], path: str, message: str) -> None:
    assert error_of(with_routes(route)) == (path, message)


def test_one_route_per_network() -> None:
    other = {**CELL, "via": "192.168.50.253"}
    assert error_of(with_routes(CELL, other)) == (
        "interfaces[1].routes[1].to",
        "192.168.60.0/24 has a route already (interfaces[1].routes[0])",
    )


def test_a_routed_network_is_on_its_interfaces_side() -> None:
    """A conduit may go to the cell behind ot0's router, and may not come from it."""
    to_cell = factory.conduit("cell", to=["192.168.60.10"])
    validate_data(with_routes(CELL, conduits=[to_cell]))
    from_cell = factory.conduit("back", from_=["192.168.60.7"], to=["192.168.50.11"])
    assert error_of(with_routes(CELL, conduits=[from_cell])) == (
        "conduits[0].from[0]",
        "192.168.60.7/32 is on the OT side (ot0 192.168.60.0/24); `from` lists IT hosts",
    )
