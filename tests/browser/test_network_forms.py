"""The Interfaces page's networking forms (issue 17 item 9, issue 12): routes, DHCP and VLANs
per interface, the mode (routed or transparent bridge), DNS and time, each panel saving its
own section of the draft with errors at the input the API names; a DHCP lease shown with
the links; viewers see the forms read-only.

Everything goes into the draft only (never committed): the lab's unit keeps running its
base configuration, so no test here cuts the browser off.
"""

from __future__ import annotations

import copy
import time
from typing import Any

import pytest
from playwright.sync_api import Page, expect
from test_ui import fetch_json, shot, signed_in, viewer_tab
from uikit import CONFIG, Unit

pytestmark = pytest.mark.browser


def document(page: Page) -> dict[str, Any]:
    """The draft's document (the running one while there is no draft)."""
    draft = fetch_json(page, "GET", "/api/config/draft")
    if draft["status"] == 200:
        return draft["body"]["document"]
    running = fetch_json(page, "GET", "/api/config/running")
    assert running["status"] == 200, running
    return running["body"]["document"]


def draft_id(page: Page) -> int | None:
    revs = fetch_json(page, "GET", "/api/revisions")["body"]
    return next((r["id"] for r in revs if r["state"] == "draft"), None)


def reset(page: Page, **sections: Any) -> None:
    """A draft with the base interfaces, routed, and `sections` set (None: left out)."""
    doc = document(page)
    doc["interfaces"] = copy.deepcopy(CONFIG["interfaces"])
    doc.pop("bridge", None)
    for name, value in sections.items():
        if value is None:
            doc.pop(name, None)
        else:
            doc[name] = value
    r = fetch_json(page, "PUT", "/api/config/draft", doc)
    assert r["status"] == 200, r


def opened(page: Page, unit: Unit) -> None:
    signed_in(page, unit)
    page.goto("/interfaces")
    expect(page.locator("#if-rows .net-card")).to_have_count(len(CONFIG["interfaces"]))


def at(page: Page, path: str) -> Any:
    return page.locator(f'[data-path="{path}"]')


def error_at(page: Page, path: str) -> Any:
    """The message shown right after the input with that path (which is highlighted)."""
    el = at(page, path)
    expect(el).to_have_attribute("aria-invalid", "true")
    return el.locator("xpath=following-sibling::div[contains(@class, 'field-error')][1]")


def test_a_route_a_vlan_and_dhcp_added_through_the_form_are_in_the_draft(
    page: Page, unit: Unit
) -> None:
    signed_in(page, unit)
    reset(page)
    opened(page, unit)
    page.locator('[data-path="interfaces[1].routes"] > .add-route').click()
    at(page, "interfaces[1].routes[0].to").fill("192.168.60.0/24")
    at(page, "interfaces[1].routes[0].via").fill("192.168.50.254")
    page.locator('[data-path="interfaces[1].vlans"] > .add-vlan').click()
    at(page, "interfaces[1].vlans[0].id").fill("30")
    at(page, "interfaces[1].vlans[0].addresses").fill("192.168.30.1/24")
    at(page, "interfaces[1].vlans[0].description").fill("cell 30")
    page.locator('[data-path="interfaces[1].vlans[0].routes"] > .add-route').click()
    at(page, "interfaces[1].vlans[0].routes[0].to").fill("192.168.31.0/24")
    at(page, "interfaces[1].vlans[0].routes[0].via").fill("192.168.30.254")
    at(page, "interfaces[0].dhcp").check()
    page.locator("#save").click()
    expect(page.locator(".toast").last).to_contain_text("Interfaces saved to the draft")

    it0, ot0 = document(page)["interfaces"]
    assert it0["dhcp"] is True and it0["addresses"] == ["10.10.0.1/24"]
    assert ot0["routes"] == [{"to": "192.168.60.0/24", "via": "192.168.50.254"}]
    (vlan,) = ot0["vlans"]
    assert vlan["id"] == 30 and vlan["name"] == "ot0.30" and vlan["role"] == "ot"
    assert vlan["addresses"] == ["192.168.30.1/24"] and vlan["description"] == "cell 30"
    assert vlan["routes"] == [{"to": "192.168.31.0/24", "via": "192.168.30.254"}]
    # what the form does not change stays as it was
    assert ot0["mac"] == CONFIG["interfaces"][1]["mac"]
    assert ot0["description"] == CONFIG["interfaces"][1]["description"]

    page.reload()  # and the page shows the draft's
    expect(at(page, "interfaces[1].vlans[0].name")).to_have_value("ot0.30")
    expect(at(page, "interfaces[1].routes[0].via")).to_have_value("192.168.50.254")
    expect(at(page, "interfaces[0].dhcp")).to_be_checked()
    shot(page, "interfaces")  # the README's: a route, a VLAN and DHCP on the cards
    # a VLAN removed in the form is gone from the draft at the next save
    page.locator('[data-vlan="0"] .net-head .btn.danger').click()
    page.locator("#save").click()
    expect(page.locator(".toast").last).to_contain_text("Interfaces saved to the draft")
    assert "vlans" not in document(page)["interfaces"][1]


def test_a_route_via_a_router_off_the_subnets_is_refused_at_its_input(
    page: Page, unit: Unit
) -> None:
    signed_in(page, unit)
    reset(page)
    before = draft_id(page), document(page)
    opened(page, unit)
    page.locator('[data-path="interfaces[0].routes"] > .add-route').click()
    at(page, "interfaces[0].routes[0].to").fill("10.20.0.0/24")
    page.locator("#save").click()  # the router is missing: said in the browser, nothing sent
    expect(error_at(page, "interfaces[0].routes[0].via")).to_contain_text("required")
    at(page, "interfaces[0].routes[0].via").fill("10.99.0.1")
    page.locator("#save").click()
    expect(error_at(page, "interfaces[0].routes[0].via")).to_contain_text(
        "10.99.0.1 is not in a subnet of it0's addresses"
    )
    assert (draft_id(page), document(page)) == before  # nothing saved


def test_transparent_bridge_mode_and_back_to_routed(page: Page, unit: Unit) -> None:
    signed_in(page, unit)
    # bridge ports carry no addresses of their own: the draft's interfaces without them
    bare = [{**i, "addresses": []} for i in CONFIG["interfaces"]]
    reset(page)
    assert fetch_json(page, "PUT", "/api/config/draft/interfaces", bare)["status"] == 200
    opened(page, unit)
    expect(page.locator("#bridge-opts")).to_be_hidden()
    expect(page.locator("#mode-form input[value=routed]")).to_be_checked()
    page.locator("#mode-form input[value=bridge]").check()
    ports = page.locator("#bridge-ports input[name=port]")
    expect(ports).to_have_count(2)
    expect(page.locator("#bridge-ports input[value=it0]")).to_be_checked()
    expect(page.locator("#bridge-ports input[value=ot0]")).to_be_checked()

    # a bridge without its OT port: refused, said at the ports and at ot0, nothing saved
    before = document(page)
    page.locator("#bridge-ports input[value=ot0]").uncheck()
    page.locator("#mode-save").click()
    expect(at(page, "bridge.ports")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#mode-form")).to_contain_text("a bridge needs a port with role ot")
    expect(at(page, "interfaces[1]")).to_have_attribute("aria-invalid", "true")
    assert document(page) == before

    page.locator("#bridge-ports input[value=ot0]").check()
    page.locator("#mode-form input[name=lldp]").check()
    page.locator("#mode-save").click()
    expect(page.locator(".toast").last).to_contain_text("Transparent bridge mode saved")
    bridge = document(page)["bridge"]
    assert bridge["name"] == "br0" and bridge["ports"] in (None, ["it0", "ot0"])
    assert bridge["pass_l2"] == {"lldp": True, "stp": False}

    page.reload()
    expect(page.locator("#mode-form input[value=bridge]")).to_be_checked()
    expect(page.locator("#mode-form input[name=lldp]")).to_be_checked()
    page.locator("#mode-form input[value=routed]").check()
    expect(page.locator("#bridge-opts")).to_be_hidden()
    page.locator("#mode-save").click()
    expect(page.locator(".toast").last).to_contain_text("Routed mode saved")
    assert document(page).get("bridge") is None


def test_ntp_servers_and_dns_are_saved_and_a_bad_host_is_refused_at_its_field(
    page: Page, unit: Unit
) -> None:
    signed_in(page, unit)
    reset(page, time=None, dns=None)
    opened(page, unit)
    time_form, dns_form = page.locator("#time-form"), page.locator("#dns-form")
    for _ in range(2):
        time_form.get_by_role("button", name="Add NTP server").click()
    at(page, "time.ntp[0]").fill("ntp1.plant.example")
    at(page, "time.ntp[1]").fill("10.10.0.123")
    time_form.locator("[name=unsync]").fill("30")
    page.locator("#time-save").click()
    expect(page.locator(".toast").last).to_contain_text("Time saved to the draft")
    assert document(page)["time"] == {
        "ntp": ["ntp1.plant.example", "10.10.0.123"],
        "unsynchronised_after_minutes": 30.0,
    }

    dns_form.get_by_role("button", name="Add DNS server").click()
    at(page, "dns.servers[0]").fill("10.10.0.53")
    dns_form.get_by_role("button", name="Add search domain").click()
    at(page, "dns.search[0]").fill("plant.example")
    page.locator("#dns-save").click()
    expect(page.locator(".toast").last).to_contain_text("DNS saved to the draft")
    assert document(page)["dns"] == {"servers": ["10.10.0.53"], "search": ["plant.example"]}

    # an empty row is dropped before saving, so the error's index is the input's
    before = document(page)
    time_form.get_by_role("button", name="Add NTP server").click()
    time_form.get_by_role("button", name="Add NTP server").click()
    at(page, "time.ntp[3]").fill("bad host!")
    page.locator("#time-save").click()
    expect(error_at(page, "time.ntp[2]")).to_contain_text("'bad host!' is not a host name")
    expect(at(page, "time.ntp[3]")).to_have_count(0)
    assert document(page) == before  # nothing saved
    # a DNS server is an address: a name there is refused at its field
    at(page, "dns.servers[0]").fill("dns.plant.example")
    page.locator("#dns-save").click()
    expect(error_at(page, "dns.servers[0]")).to_contain_text("is not an IP address")
    assert document(page) == before


FAKE_LEASES = """(() => {
  const real = window.fetch;
  window.fetch = async (...args) => {
    const resp = await real(...args);
    const leases = sessionStorage.getItem("test-leases");
    if (!leases || !String(args[0]).endsWith("/api/status") || !resp.ok) return resp;
    const body = await resp.json();
    for (const link of body.links || []) {
      const lease = JSON.parse(leases)[link.name];
      if (lease) link.dhcp = lease;
    }
    return new Response(JSON.stringify(body), { status: 200, headers: resp.headers });
  };
})();"""


def test_a_dhcp_lease_is_shown_with_the_links(page: Page, unit: Unit) -> None:
    signed_in(page, unit)
    page.add_init_script(FAKE_LEASES)  # (does nothing without the session's test-leases)
    page.goto("/interfaces")
    links = page.locator("#links-now")
    expect(links.locator("tr[data-link=it0]")).to_be_visible()
    expect(links).not_to_contain_text("DHCP lease")  # no lease anywhere: nothing said

    # the lease as the net role reports a bound one, put into the page's own /api/status
    # answers (in the browser: a request from the test process would leave the lab)
    leases = {
        "it0": {
            "bound": True,
            "address": "10.10.0.77/24",
            "server": "10.10.0.254",
            "router": "10.10.0.254",
            "expires_at": time.time() + 2.5 * 3600,
        },
        "ot0": {"bound": False, "client_pid": 4242},  # a client without a lease yet
    }
    page.evaluate("(l) => sessionStorage.setItem('test-leases', JSON.stringify(l))", leases)
    try:
        page.reload()
        it0 = links.locator("tr[data-link=it0]")
        expect(it0).to_contain_text("10.10.0.77/24 from 10.10.0.254, expires in 2 h")
        expect(it0).to_contain_text("router 10.10.0.254")
        expect(links.locator("tr[data-link=ot0] .lease")).to_have_count(0)
    finally:
        page.evaluate("() => sessionStorage.removeItem('test-leases')")


def test_viewers_see_the_forms_read_only(page: Page, unit: Unit, browser: Any) -> None:
    with viewer_tab(page, unit, browser) as tab:
        tab.goto("/interfaces")
        for fieldset in ("#editable", "#mode-edit", "#dns-edit", "#time-edit"):
            expect(tab.locator(fieldset)).to_have_attribute("disabled", "")
            controls = tab.locator(f"{fieldset} :is(input, button, select)")
            expect(controls.first).to_be_attached()  # drawn
            # (DNS has no input of its own until a server is added: its buttons count)
            for control in controls.all():
                expect(control).to_be_disabled()
        for button in ("#save", "#mode-save", "#dns-save", "#time-save"):
            expect(tab.locator(button)).to_be_hidden()
        expect(tab.locator("#if-rows .net-card")).to_have_count(len(CONFIG["interfaces"]))
