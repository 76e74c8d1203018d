"""The Interfaces page's port list (issue 12): every NIC of the unit with its MAC, cable
and role; a port not in use goes into the editor by its MAC with one click; Blink asks
the net role to flash the port's LED and says plainly when the NIC cannot."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Page, expect
from test_ui import fetch_json, signed_in
from uikit import Unit

from appliance.lab import topology

SPARE = "brspare0"  # a NIC the configuration does not name: made here, in the unit's namespace


@pytest.fixture
def spare(unit: Unit) -> Iterator[str]:
    ns = unit.spec.ns_app
    topology.ns_run(ns, ["ip", "link", "add", SPARE, "type", "veth", "peer", "name", "brspare1"])
    try:
        yield SPARE
    finally:
        topology.ns_run(ns, ["ip", "link", "del", SPARE], check=False)


def test_the_ports_are_listed_and_a_spare_one_joins_the_editor_by_its_mac(
    page: Page, unit: Unit, spare: str
) -> None:
    signed_in(page, unit)
    page.goto("/interfaces")
    row = page.locator(f"#ports tr[data-port='{spare}']")
    expect(row).to_be_visible(timeout=20_000)  # the net role lists it within 5 s
    ports = {p["name"]: p for p in fetch_json(page, "GET", "/api/ports")["body"]["ports"]}
    mac = ports[spare]["mac"]
    expect(row).to_contain_text(mac)
    expect(row).to_contain_text("—")  # not in use
    # the configured ports show their role, and are not offered again
    for name, p in ports.items():
        if p.get("role"):
            used = page.locator(f"#ports tr[data-port='{name}']")
            expect(used).to_contain_text(f"{p['role']} ({p['interface']})")
            expect(used.locator(".use-port")).to_have_count(0)

    row.locator(".use-port").click()
    expect(page.locator(".toast").last).to_contain_text(f"{spare} ({mac}) added below")
    names = page.locator("#if-rows input[data-key='name']")
    macs = page.locator("#if-rows input[data-key='mac']")
    expect(names.last).to_have_value(spare)
    expect(macs.last).to_have_value(mac)
    expect(row.locator(".use-port")).to_have_count(0)  # once is enough

    # a veth cannot blink: the page says so, in words
    row.locator(".blink-port").click()
    expect(page.locator(".toast").last).to_contain_text(f"{spare}: ")
    page.locator("#reload").click()  # discard the edit: nothing was saved
    expect(names.last).not_to_have_value(spare)
