"""The Device setup page (issue 17 item 9): field devices and their tags without YAML.

Against the lab's PLC 2 (192.168.50.11, the lab's register map in appliance.lab.plc:
holding 2, 3, 4 hold 1234, 5678, 42 for ever): a Modbus TCP device with two tags added
through the form, "Test connection" green there and red at an address where nothing
answers, "Read registers" and "Add as tag", the unit's refusals at their fields with
nothing saved, save + commit and the new tag's value on /devices; a Modbus RTU device
shows its serial line, not the address, and is saved without one; an OPC UA device (the
lab's OPC UA server) is browsed from the Objects folder down and a variable added as a
tag; viewers see it all read-only.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Page, expect
from test_ui import commit, fetch_json, shot, signed_in, viewer_tab
from testkit import wait_for
from uikit import ABSENT, PLC2, PREFIX, Unit

from appliance.config.plain import JARGON
from appliance.lab import topology
from appliance.lab.topology import OPCUA_ADDRESS, OPCUA_PORT, LabSpec

pytestmark = pytest.mark.browser

NEW = "packer2"
OPCUA_URL = f"opc.tcp://{OPCUA_ADDRESS}:{OPCUA_PORT}/"


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabSpec]:
    """The browser tests' lab (conftest's) with the lab's OPC UA server, to browse."""
    if os.geteuid() != 0:
        pytest.skip("browser tests need root: they build the lab in network namespaces")
    root = tmp_path_factory.mktemp("brlab")
    spec = LabSpec(prefix=PREFIX, plcs=2, mgmt=False, opcua=True, root=root)
    topology.up(spec)
    try:
        yield spec
    finally:
        topology.down(spec)


def open_setup(page: Page, unit: Unit, device: str | None = None) -> None:
    signed_in(page, unit)
    page.goto("/devices/setup" + (f"?device={device}" if device else ""))
    expect(page.locator("#dev-list tr[data-device]").first).to_be_visible()


def device_row(page: Page, name: str) -> Any:
    return page.locator("#dev-list tr[data-device]").filter(
        has=page.locator(".dev-pick", has_text=re.compile(f"^{name}$"))
    )


def tag_input(page: Page, row: int, key: str) -> Any:
    return page.locator(f"#tag-rows tr[data-tag='{row}'] [data-k='{key}']")


def draft_devices(page: Page) -> list[dict[str, Any]] | None:
    revs = fetch_json(page, "GET", "/api/revisions")["body"]
    if not any(r["state"] == "draft" for r in revs):
        return None
    return fetch_json(page, "GET", "/api/config/draft/devices")["body"]["devices"]


def revision_count(page: Page) -> int:
    return len(fetch_json(page, "GET", "/api/revisions")["body"])


def plain(text: str) -> None:
    assert not [p for p in JARGON if p in text.lower()], text


def add_packer(page: Page) -> None:
    """A new Modbus TCP device for PLC 2 with two tags, typed into the form."""
    page.locator("#dev-add").click()
    panel = page.locator("#dev-panel")
    expect(panel).to_be_visible()
    panel.locator("[data-f=name]").fill(NEW)
    panel.locator("[data-f=address]").fill(f"{PLC2}:502")
    panel.locator("[data-f=poll_interval]").fill("0.5")
    panel.locator("[data-f=description]").fill("line 3 packer, second look")
    page.locator("#tag-add").click()
    tag_input(page, 0, "name").fill("count")
    tag_input(page, 0, "table").select_option("input")
    tag_input(page, 0, "address").fill("0")
    tag_input(page, 0, "type").select_option("uint16")
    page.locator("#tag-add").click()
    tag_input(page, 1, "name").fill("fixed")
    tag_input(page, 1, "address").fill("2")
    tag_input(page, 1, "unit").fill("kPa")
    # the second tag's alarms, folded until asked for
    detail = page.locator("#tag-rows tr[data-detail='1']")
    expect(detail).to_be_hidden()
    page.locator("#tag-rows tr[data-tag='1'] .ds-more").click()
    expect(detail).to_be_visible()
    detail.locator("[data-k='alarms.high']").fill("2000")
    expect(device_row(page, NEW)).to_contain_text(f"{PLC2}:502")


def test_a_device_for_plc2_through_the_form_tested_read_saved_and_polled(
    page: Page, unit: Unit
) -> None:
    open_setup(page, unit)
    assert device_row(page, "plc1").count() == 1  # the running configuration's devices
    add_packer(page)

    # test connection: the lab's PLC 2 answers, in green with the time it took
    page.locator("#probe-btn").click()
    result = page.locator("#probe-result")
    expect(result).to_have_class(re.compile(r"\bok\b"), timeout=20_000)
    expect(result).to_contain_text(re.compile(r"\d+(\.\d)? ms"))
    expect(result).to_contain_text(PLC2)

    # an address where nothing answers: red, and says so
    address = page.locator("#dev-panel [data-f=address]")
    address.fill(f"{ABSENT}:502")
    page.locator("#dev-panel [data-f=timeout]").fill("0.5")
    page.locator("#dev-panel [data-f=retries]").fill("0")
    page.locator("#probe-btn").click()
    expect(result).to_have_class(re.compile(r"\bbad\b"), timeout=20_000)
    expect(result).to_contain_text(ABSENT)
    plain(result.inner_text())
    address.fill(f"{PLC2}:502")
    page.locator("#dev-panel [data-f=timeout]").fill("")
    page.locator("#dev-panel [data-f=retries]").fill("")

    # read what is there: holding 2..4 hold 1234, 5678, 42
    page.locator("#read-table").select_option("holding")
    page.locator("#read-address").fill("2")
    page.locator("#read-count").fill("200")  # more than one request reads: at that field
    page.locator("#read-btn").click()
    expect(page.locator("#read-count")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#read-box .field-error")).to_contain_text("125")
    page.locator("#read-count").fill("3")
    page.locator("#read-btn").click()
    grid = page.locator("#read-grid")
    expect(grid.locator("tr[data-address]")).to_have_count(3, timeout=20_000)
    expect(grid.locator("tr[data-address='2']")).to_contain_text("1234")
    expect(grid.locator("tr[data-address='2']")).to_contain_text("0x04D2")
    expect(grid.locator("tr[data-address='3']")).to_contain_text("5678")
    expect(grid.locator("tr[data-address='4']")).to_contain_text("42")
    grid.locator("tr[data-address='4'] .add-as-tag").click()
    expect(page.locator("#tag-rows tr[data-tag]")).to_have_count(3)
    expect(tag_input(page, 2, "table")).to_have_value("holding")
    expect(tag_input(page, 2, "address")).to_have_value("4")
    expect(tag_input(page, 2, "type")).to_have_value("uint16")
    tag_input(page, 2, "name").fill("answer")
    shot(page, "device-setup")  # the README's: a device tested, read and its tags
    # at 1366 px the tag table fits its box: no column and no Remove button cut off
    fit = page.evaluate(
        """() => {
            const wrap = document.querySelector("#tag-rows .table-wrap");
            const btn = document.querySelector("#tag-rows tr[data-tag='2'] .btn.danger");
            return [wrap.scrollWidth - wrap.clientWidth,
                    wrap.getBoundingClientRect().right - btn.getBoundingClientRect().right];
        }"""
    )
    assert fit[0] <= 2 and fit[1] >= 0, fit

    page.locator("#save").click()
    expect(page.locator(".toast").last).to_contain_text("saved to the draft")
    saved = {d["name"]: d for d in draft_devices(page) or []}
    assert set(saved) == {"plc1", "plc2", "dosing-pump", NEW}, saved.keys()
    new = saved[NEW]
    assert new["protocol"] == "modbus-tcp" and new["address"] == f"{PLC2}:502"
    assert new["poll_interval"] == 0.5
    assert new["serial"] is None and new["security"] is None
    tags = {t["name"]: t for t in new["tags"]}
    assert list(tags) == ["count", "fixed", "answer"]
    assert (tags["count"]["table"], tags["count"]["address"]) == ("input", 0)
    assert (tags["fixed"]["table"], tags["fixed"]["address"]) == ("holding", 2)
    assert tags["fixed"]["alarms"]["high"] == 2000 and tags["fixed"]["unit"] == "kPa"
    assert (tags["answer"]["table"], tags["answer"]["address"]) == ("holding", 4)
    # the other devices came back as they were (keys the form does not show are kept)
    assert saved["plc1"]["tags"][2]["alarms"]["high"] == 1000

    commit(page, None, "packer2 from the device setup page")
    wait_for(
        lambda: unit.latest().state == "confirmed" and NEW in unit.latest().document,
        20,
        "the commit",
    )
    page.goto("/devices")
    expect(page.locator(f"[data-value='{NEW}.fixed']")).to_have_text("1234 kPa", timeout=30_000)
    expect(page.locator(f"[data-value='{NEW}.answer']")).to_have_text("42")
    # the Devices page leads an admin here
    page.locator("#setup-link").click()
    expect(page).to_have_url(re.compile(r"/devices/setup$"))
    expect(device_row(page, NEW)).to_be_visible()
    assert page.problems == []  # type: ignore[attr-defined]


def test_refusals_land_at_the_field_and_nothing_is_saved(page: Page, unit: Unit) -> None:
    open_setup(page, unit, device="plc2")
    before = revision_count(page)
    was = draft_devices(page)
    panel = page.locator("#dev-panel")
    expect(panel.locator("[data-f=name]")).to_have_value("plc2")
    i = int(device_row(page, "plc2").get_attribute("data-device"))

    # the browser checks a required field before asking the unit
    name = tag_input(page, 0, "name")
    name.fill("")
    page.locator("#save").click()
    expect(name).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#tag-rows .field-error")).to_contain_text("required")
    assert revision_count(page) == before
    page.locator("#reload").click()
    expect(tag_input(page, 0, "name")).to_have_value("counter")

    # an address past the last one: the unit refuses it, at that input
    address = tag_input(page, 0, "address")
    expect(address).to_have_attribute("data-path", f"devices[{i}].tags[0].address")
    address.fill("70000")
    page.locator("#save").click()
    expect(address).to_have_attribute("aria-invalid", "true")
    error = page.locator("#tag-rows .field-error")
    expect(error).to_contain_text("65535")
    plain(error.inner_text())
    assert revision_count(page) == before
    assert draft_devices(page) == was

    # a duplicate tag name, at the second name
    address.fill("0")
    tag_input(page, 1, "name").fill("counter")
    page.locator("#save").click()
    second = tag_input(page, 1, "name")
    expect(second).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#tag-rows .field-error")).to_contain_text("already used")
    assert revision_count(page) == before

    # open another device: the refused one is marked in the list, its problem in the box
    device_row(page, "plc1").locator(".dev-pick").click()
    expect(panel.locator("[data-f=name]")).to_have_value("plc1")
    expect(device_row(page, "plc2")).to_have_class(re.compile(r"\bhas-error\b"))
    expect(device_row(page, "plc1")).not_to_have_class(re.compile(r"\bhas-error\b"))
    expect(page.locator(".form-error")).to_contain_text("device plc2, tag counter")
    # and back: the mark is at the field again
    device_row(page, "plc2").locator(".dev-pick").click()
    expect(tag_input(page, 1, "name")).to_have_attribute("aria-invalid", "true")

    page.locator("#reload").click()
    expect(device_row(page, "plc2")).not_to_have_class(re.compile(r"\bhas-error\b"))
    expect(tag_input(page, 1, "name")).to_have_value("sine")
    assert revision_count(page) == before
    assert draft_devices(page) == was
    assert page.problems == []  # type: ignore[attr-defined]


def test_a_modbus_rtu_device_has_a_serial_line_and_no_address(page: Page, unit: Unit) -> None:
    open_setup(page, unit)
    page.locator("#dev-add").click()
    panel = page.locator("#dev-panel")
    panel.locator("[data-f=name]").fill("dosing-rtu")
    address = panel.locator("[data-f=address]")
    expect(address).to_be_visible()
    expect(page.locator("#serial-box")).to_be_hidden()
    expect(page.locator("#security-box")).to_be_hidden()
    address.fill("192.168.50.99:502")  # typed, then the protocol changes: left out

    panel.locator("[data-f=protocol]").select_option("modbus-rtu")
    expect(page.locator("#serial-box")).to_be_visible()
    expect(address).to_be_hidden()
    expect(page.locator("#read-box")).to_be_visible()
    expect(page.locator("#browse-box")).to_be_hidden()
    for key in ("port", "baud", "parity", "stop_bits", "data_bits"):
        expect(panel.locator(f"[data-f='serial.{key}']")).to_be_visible()
    expect(panel.locator("[data-f='serial.parity'] option")).to_have_text(["even", "none", "odd"])
    panel.locator("[data-f='serial.port']").fill("/dev/ttyUSB7")
    panel.locator("[data-f='serial.baud']").fill("9600")
    panel.locator("[data-f='serial.parity']").select_option("N")
    panel.locator("[data-f='serial.stop_bits']").select_option("2")
    panel.locator("[data-f=unit_id]").fill("7")
    page.locator("#tag-add").click()
    tag_input(page, 0, "name").fill("flow")
    tag_input(page, 0, "address").fill("0")
    expect(device_row(page, "dosing-rtu")).to_contain_text("/dev/ttyUSB7 unit 7")

    # OPC UA on the way shows the address, security and node ids instead
    panel.locator("[data-f=protocol]").select_option("opcua")
    expect(address).to_be_visible()
    expect(page.locator("#security-box")).to_be_visible()
    expect(page.locator("#serial-box")).to_be_hidden()
    expect(page.locator("#browse-box")).to_be_visible()
    expect(page.locator("#read-box")).to_be_hidden()
    expect(tag_input(page, 0, "node")).to_be_visible()
    expect(tag_input(page, 0, "address")).to_have_count(0)
    panel.locator("[data-f=protocol]").select_option("modbus-rtu")
    expect(tag_input(page, 0, "address")).to_have_count(1)
    tag_input(page, 0, "address").fill("0")

    with page.expect_request(lambda r: r.method == "PUT" and "/draft/devices" in r.url) as req:
        page.locator("#save").click()
    expect(page.locator(".toast").last).to_contain_text("saved to the draft")
    sent = {d["name"]: d for d in req.value.post_data_json}["dosing-rtu"]
    assert "address" not in sent and "security" not in sent, sent
    assert sent["serial"] == {
        "port": "/dev/ttyUSB7",
        "baud": 9600,
        "parity": "N",
        "stop_bits": 2,
    }  # data bits left at the default: left out
    assert sent["unit_id"] == 7
    assert sent["tags"] == [{"name": "flow", "table": "holding", "address": 0}], sent["tags"]
    saved = {d["name"]: d for d in draft_devices(page) or []}["dosing-rtu"]
    assert saved["address"] is None and saved["serial"]["port"] == "/dev/ttyUSB7"
    assert page.problems == []  # type: ignore[attr-defined]


def test_an_opcua_device_is_browsed_and_a_variable_becomes_a_tag(page: Page, unit: Unit) -> None:
    open_setup(page, unit)
    page.locator("#dev-add").click()
    panel = page.locator("#dev-panel")
    panel.locator("[data-f=name]").fill("cell-opcua")
    panel.locator("[data-f=protocol]").select_option("opcua")
    expect(page.locator("#security-box")).to_be_visible()
    expect(panel.locator("[data-f=unit_id]")).to_be_hidden()
    panel.locator("[data-f=address]").fill(OPCUA_URL)
    page.locator("#probe-btn").click()
    expect(page.locator("#probe-result")).to_have_class(re.compile(r"\bok\b"), timeout=20_000)

    page.locator("#browse-btn").click()
    grid = page.locator("#browse-grid")
    folder = grid.locator("tr[data-node='ns=2;s=PLC'] .browse-into")
    expect(folder).to_be_visible(timeout=20_000)
    folder.click()
    row = grid.locator("tr[data-node='ns=2;s=Temperature']")
    expect(row).to_be_visible(timeout=20_000)
    expect(row).to_contain_text("Variable")
    expect(page.locator("#browse-path")).to_contain_text("Objects \u203a PLC")
    row.locator(".add-as-tag").click()
    expect(tag_input(page, 0, "node")).to_have_value("ns=2;s=Temperature")
    expect(tag_input(page, 0, "name")).to_have_value("temperature")
    expect(page.locator("#tag-rows [data-k=address]")).to_have_count(0)
    # back up the trail
    page.locator("#browse-path a", has_text="Objects").click()
    expect(folder).to_be_visible(timeout=20_000)

    with page.expect_request(lambda r: r.method == "PUT" and "/draft/devices" in r.url) as req:
        page.locator("#save").click()
    expect(page.locator(".toast").last).to_contain_text("saved to the draft")
    sent = {d["name"]: d for d in req.value.post_data_json}["cell-opcua"]
    assert sent["address"] == OPCUA_URL and sent["protocol"] == "opcua"
    for key in ("serial", "security", "unit_id", "max_registers", "max_gap"):
        assert key not in sent, (key, sent)
    assert sent["tags"] == [{"name": "temperature", "node": "ns=2;s=Temperature"}]
    assert page.problems == []  # type: ignore[attr-defined]


def test_viewers_see_the_devices_read_only(page: Page, unit: Unit, browser: Any) -> None:
    with viewer_tab(page, unit, browser) as tab:
        tab.goto("/devices/setup")
        expect(tab.locator("#editable")).to_have_attribute("disabled", "")
        for hidden in ("#save", "#dev-add", "#probe-btn", "#tag-add"):
            expect(tab.locator(hidden)).to_be_hidden()
        # a viewer still opens each device to look at it
        device_row(tab, "plc2").locator(".dev-pick").click()
        expect(tab.locator("#dev-panel [data-f=name]")).to_have_value("plc2")
        expect(tab.locator("#dev-panel [data-f=name]")).to_be_disabled()
        expect(tag_input(tab, 0, "name")).to_be_disabled()
        tab.goto("/devices")
        expect(tab.locator("#setup-link")).to_be_hidden()
