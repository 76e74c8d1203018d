"""The Unit settings page (issue 17 item 9): identity, syslog servers, the fleet heartbeat,
webhooks, LEDs and button without YAML, in chromium against the appliance in the lab.

Each panel saves its own section of the draft; the unit's refusals land at the input the
error names (syslog[0].port, webhooks[0].token) and save nothing; a viewer sees every form
read-only. In file order, the first test commits a new unit name and sees it in the header;
the others leave their changes in the draft only (LEDs on GPIO pins the lab has not got).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Page, expect
from test_ui import commit, fetch_json, shot, signed_in
from uikit import Unit

pytestmark = pytest.mark.browser

NEW_NAME = "line3-gate-east"
VIEWER, VIEWER_PASSWORD = "night-shift", "quiet-hall-lamp-5566"
HOOK_TOKEN = "hook-token-4f1c9a2e"
FLEET_TOKEN = "unit-token-7d2b6e10c4"
PEM = "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUSIEM\n-----END CERTIFICATE-----\n"


def fresh_draft(page: Page) -> int:
    """A draft that holds exactly the running document (no pending revision): its id."""
    revs = fetch_json(page, "GET", "/api/revisions")["body"]
    if any(r["state"] == "pending" for r in revs):
        assert fetch_json(page, "POST", "/api/config/confirm", {})["status"] == 200
    running = fetch_json(page, "GET", "/api/config/running")["body"]["document"]
    r = fetch_json(page, "PUT", "/api/config/draft", running)
    assert r["status"] == 200, r
    return r["body"]["revision"]["id"]


def draft(page: Page, section: str) -> tuple[int, Any]:
    r = fetch_json(page, "GET", f"/api/config/draft/{section}")
    assert r["status"] == 200, r
    return r["body"]["revision"]["id"], r["body"][section]


def settings(page: Page) -> None:
    page.goto("/settings")
    expect(page.locator("#source-note")).to_contain_text("Editing the draft")
    expect(page.locator("#unit-form [data-path='unit.name']")).to_be_visible()


def save(page: Page, section: str) -> None:
    page.locator(f"#{section}-form button.save").click()


def field(page: Page, path: str) -> Any:
    return page.locator(f"[data-path='{path}']")


def refused_at(page: Page, path: str, text: str) -> None:
    el = field(page, path)
    expect(el).to_have_attribute("aria-invalid", "true")
    expect(
        el.locator("xpath=following-sibling::div[contains(@class,'field-error')]")
    ).to_contain_text(text)


# -- identity ---------------------------------------------------------------------------------


def test_a_new_unit_name_is_in_the_header_after_commit(page: Page, unit: Unit) -> None:
    signed_in(page, unit)
    fresh_draft(page)
    settings(page)
    name = field(page, "unit.name")
    expect(name).to_have_value("line3-gate")
    expect(page.locator("#unit-name")).to_have_text("line3-gate")
    # required, and checked before anything is sent
    name.fill("")
    save(page, "unit")
    refused_at(page, "unit.name", "required")
    name.fill(NEW_NAME)
    field(page, "unit.description").fill("cabinet 3, key at the line office")
    save(page, "unit")
    expect(page.locator(".toast").last).to_contain_text("Identity saved to the draft")
    _, value = draft(page, "unit")
    assert value == {
        "name": NEW_NAME,
        "site": "Plant 1, line 3 cabinet",  # kept: the form showed it, nobody changed it
        "description": "cabinet 3, key at the line office",
    }
    page.locator("#unit-form a[href='/config']").click()  # Review and commit
    expect(page).to_have_url(f"{unit.url}/config")
    commit(page, None, "the unit's new name")
    expect(page.locator("#unit-name")).to_have_text(NEW_NAME, timeout=20_000)
    assert unit.latest().state in ("confirmed", "pending")


# -- syslog -----------------------------------------------------------------------------------


def test_a_syslog_server_with_a_bad_port_saves_nothing_and_a_good_one_is_saved(
    page: Page, unit: Unit
) -> None:
    signed_in(page, unit)
    before = fresh_draft(page)
    settings(page)
    page.locator("#syslog-form button.add").click()
    field(page, "syslog[0].host").fill("siem.plant.example")
    field(page, "syslog[0].port").fill("70000")
    save(page, "syslog")
    refused_at(page, "syslog[0].port", "70000 is not a port")
    assert draft(page, "syslog") == (before, [])  # nothing saved, no new revision

    # the default port follows the transport; the CA certificate is there for TLS only
    port = field(page, "syslog[0].port")
    port.fill("")
    expect(port).to_have_attribute("placeholder", "empty: 514")
    ca = field(page, "syslog[0].ca_cert")
    expect(ca).to_be_hidden()
    field(page, "syslog[0].transport").select_option("tls")
    expect(port).to_have_attribute("placeholder", "empty: 6514")
    expect(ca).to_be_visible()
    ca.fill(PEM)
    field(page, "syslog[0].min_severity").select_option("warning")
    field(page, "syslog[0].facility").select_option("local4")
    expect(page.locator("#syslog-form [data-item='0'] .summary")).to_have_text(
        "tls://siem.plant.example:6514"
    )
    # a second server on UDP, then taken away again before saving
    page.locator("#syslog-form button.add").click()
    field(page, "syslog[1].host").fill("10.10.0.99")
    page.locator("#syslog-form [data-item='1'] button.danger").click()
    save(page, "syslog")
    expect(page.locator(".toast").last).to_contain_text("Syslog servers saved to the draft")
    rev, value = draft(page, "syslog")
    assert rev > before
    assert value == [
        {
            "host": "siem.plant.example",
            "port": None,
            "transport": "tls",
            "ca_cert": PEM,
            "min_severity": "warning",
            "facility": "local4",
        }
    ]
    # shown again from the draft
    settings(page)
    expect(field(page, "syslog[0].host")).to_have_value("siem.plant.example")
    shot(page, "settings")  # the README's: the unit's settings as forms
    expect(field(page, "syslog[1].host")).to_have_count(0)


# -- fleet ------------------------------------------------------------------------------------


def test_the_fleet_goes_on_and_off_again(page: Page, unit: Unit) -> None:
    signed_in(page, unit)
    fresh_draft(page)
    settings(page)
    on = page.locator("#fleet-form input[name=fleet-on]")
    url = field(page, "fleet.url")
    expect(on).not_to_be_checked()  # the test configuration has no fleet
    expect(url).to_be_hidden()
    on.check()
    url.fill("https://fleet.plant.example/api/v1/heartbeat")
    field(page, "fleet.interval").fill("30")
    # neither a token nor a client certificate: said at the token, nothing sent
    save(page, "fleet")
    refused_at(page, "fleet.token", "token")
    assert draft(page, "fleet")[1] is None
    field(page, "fleet.token").fill(FLEET_TOKEN)
    save(page, "fleet")
    expect(page.locator(".toast").last).to_contain_text("Fleet saved to the draft")
    value = draft(page, "fleet")[1]
    assert value["url"] == "https://fleet.plant.example/api/v1/heartbeat"
    assert value["token"] == FLEET_TOKEN and value["interval"] == 30
    assert value["outbox_max"] == 10_000  # left empty: the default

    settings(page)
    expect(on).to_be_checked()
    expect(url).to_have_value("https://fleet.plant.example/api/v1/heartbeat")
    expect(field(page, "fleet.token")).to_have_value(FLEET_TOKEN)  # an admin sees it
    on.uncheck()
    expect(url).to_be_hidden()
    save(page, "fleet")
    expect(page.locator(".toast").last).to_contain_text("Fleet saved to the draft")
    assert draft(page, "fleet")[1] is None  # off is no fleet section


# -- webhooks ---------------------------------------------------------------------------------


def test_a_webhook_token_over_http_is_refused_at_the_token(page: Page, unit: Unit) -> None:
    signed_in(page, unit)
    before = fresh_draft(page)
    settings(page)
    page.locator("#webhooks-form button.add").click()
    field(page, "webhooks[0].url").fill("http://hooks.plant.example/alarms")
    field(page, "webhooks[0].token").fill(HOOK_TOKEN)
    expect(field(page, "webhooks[0].ca_cert")).to_be_hidden()  # no TLS, no CA
    save(page, "webhooks")
    refused_at(page, "webhooks[0].token", "https://")
    assert draft(page, "webhooks") == (before, [])

    field(page, "webhooks[0].url").fill("https://hooks.plant.example/alarms")
    ca = field(page, "webhooks[0].ca_cert")
    expect(ca).to_be_visible()
    # the CA certificate read from a file, in the browser
    pick = page.locator("#webhooks-form [data-item='0'] input.pem-file")
    pick.set_input_files({"name": "plant-ca.pem", "mimeType": "text/plain", "buffer": PEM.encode()})
    expect(ca).to_have_value(PEM)
    field(page, "webhooks[0].timeout").fill("5")
    save(page, "webhooks")
    expect(page.locator(".toast").last).to_contain_text("Webhooks saved to the draft")
    assert draft(page, "webhooks")[1] == [
        {
            "url": "https://hooks.plant.example/alarms",
            "token": HOOK_TOKEN,
            "ca_cert": PEM,
            "timeout": 5,
        }
    ]


# -- LEDs and button --------------------------------------------------------------------------


def test_the_led_map_rows_and_the_button_are_saved(page: Page, unit: Unit) -> None:
    signed_in(page, unit)
    fresh_draft(page)
    settings(page)
    form = page.locator("#leds-form")
    expect(form.locator(".led-map")).to_be_hidden()  # no LEDs: no map
    field(page, "leds.backend").select_option("gpio")
    form.locator("button.add-led").click()
    form.locator(".map-row").nth(0).locator("input").fill("17")
    form.locator("button.add-led").click()
    second = form.locator(".map-row").nth(1)
    expect(second.locator("select")).to_have_value("link")  # the next LED not yet placed
    second.locator("input").fill("27")
    # the same LED twice: said at its row, nothing sent
    second.locator("select").select_option("status")
    save(page, "leds")
    expect(second.locator("select")).to_have_attribute("aria-invalid", "true")
    expect(form.locator(".field-error")).to_contain_text("status is listed twice")
    second.locator("select").select_option("link")
    form.locator("input[name=button-on]").check()
    field(page, "leds.button.pin").fill("22")
    field(page, "leds.button.factory_reset").uncheck()
    save(page, "leds")
    expect(page.locator(".toast").last).to_contain_text("LEDs saved to the draft")
    assert draft(page, "leds")[1] == {
        "backend": "gpio",
        "map": {"status": 17, "link": 27},
        "active_high": True,
        "sysfs_root": "/sys/class/leds",
        "button": {"pin": 22, "pull_up": True, "factory_reset": False},
    }
    settings(page)
    rows = page.locator("#leds-form .map-row")
    expect(rows).to_have_count(2)
    expect(field(page, "leds.map.link")).to_have_value("27")
    expect(field(page, "leds.button.pin")).to_have_value("22")


# -- history, the OPC UA server, the web interface ---------------------------------------------


def test_history_opcua_server_and_web_interface_are_saved(page: Page, unit: Unit) -> None:
    signed_in(page, unit)
    before = fresh_draft(page)
    settings(page)
    field(page, "history.retention_days").fill("30")
    field(page, "history.max_mb").fill("")  # empty: the default
    save(page, "history")
    expect(page.locator(".toast").last).to_contain_text("History saved to the draft")
    history = draft(page, "history")[1]
    assert history["retention_days"] == 30 and history["max_mb"] == 1024

    opcua = page.locator("#opcua_server-form")
    expect(field(page, "opcua_server.enabled")).not_to_be_checked()  # the test configuration
    field(page, "opcua_server.enabled").check()
    field(page, "opcua_server.port").fill("4841")
    opcua.get_by_label("signed", exact=True).uncheck()
    save(page, "opcua_server")
    expect(page.locator(".toast").last).to_contain_text("OPC UA server saved to the draft")
    assert draft(page, "opcua_server")[1] == {
        "enabled": True,
        "port": 4841,
        "allow_anonymous": False,
        "security": ["Basic256Sha256-SignAndEncrypt"],
    }

    # an address that is none: at the list's input, nothing saved
    rev = draft(page, "web")[0]
    allow = field(page, "web.metrics_allow")
    allow.fill("10.10.0.20, 10.10.0.300")
    save(page, "web")
    refused_at(page, "web.metrics_allow", "10.10.0.300")
    assert draft(page, "web")[0] == rev
    allow.fill("10.10.0.20, 10.10.5.0/24")
    field(page, "web.http_port").fill("")  # empty: no HTTP redirect
    field(page, "web.banner").fill("Line 3 staff only.")
    save(page, "web")
    expect(page.locator(".toast").last).to_contain_text("Web interface saved to the draft")
    web = draft(page, "web")[1]
    assert web["metrics_allow"] == ["10.10.0.20", "10.10.5.0/24"]
    assert web["http_port"] is None and web["banner"] == "Line 3 staff only."
    assert web["listen_it"] is True and web["https_port"] == 443  # as they were
    assert rev > before


# -- a viewer ---------------------------------------------------------------------------------


@pytest.fixture
def viewer_page(browser: Any, unit: Unit, page: Page) -> Iterator[Page]:
    signed_in(page, unit)
    names = [u["name"] for u in fetch_json(page, "GET", "/api/users")["body"]]
    if VIEWER not in names:
        r = fetch_json(
            page,
            "POST",
            "/api/users",
            {"name": VIEWER, "role": "viewer", "password": VIEWER_PASSWORD},
        )
        assert r["status"] in (200, 201), r
    ctx = browser.new_context(ignore_https_errors=True, base_url=unit.url)
    pg = ctx.new_page()
    pg.goto("/login")
    pg.locator("#login-form [name=username]").fill(VIEWER)
    pg.locator("#login-form [name=password]").fill(VIEWER_PASSWORD)
    pg.locator("#login-form button[type=submit]").click()
    expect(pg.locator("#user-role")).to_have_text("viewer")
    try:
        yield pg
    finally:
        ctx.close()


def test_a_viewer_sees_the_settings_read_only_without_secrets(
    page: Page, unit: Unit, viewer_page: Page
) -> None:
    # a draft with a webhook token and a fleet token in it
    fresh_draft(page)
    hook = [{"url": "https://hooks.plant.example/alarms", "token": HOOK_TOKEN}]
    assert fetch_json(page, "PUT", "/api/config/draft/webhooks", hook)["status"] == 200
    fleet = {"url": "https://fleet.plant.example/hb", "token": FLEET_TOKEN}
    assert fetch_json(page, "PUT", "/api/config/draft/fleet", fleet)["status"] == 200

    pg = viewer_page
    settings(pg)
    expect(field(pg, "webhooks[0].url")).to_have_value("https://hooks.plant.example/alarms")
    forms = pg.locator("form.settings")
    expect(forms).to_have_count(8)
    for i in range(forms.count()):
        expect(forms.nth(i).locator("fieldset")).to_have_js_property("disabled", True)
        expect(forms.nth(i).locator("button.save")).to_be_hidden()
    expect(field(pg, "unit.name")).to_be_disabled()
    expect(field(pg, "webhooks[0].token")).to_have_value("[redacted]")
    expect(field(pg, "fleet.token")).to_have_value("[redacted]")
    html = pg.content()
    assert HOOK_TOKEN not in html and FLEET_TOKEN not in html
