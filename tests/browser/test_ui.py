"""The web UI in a real browser against the appliance in the lab (every role running).

One story in order: first-boot setup with the code, login, a conduit created in the UI,
committed, confirmed, its counter rising with traffic from the IT host; a commit nobody
confirms reverting by itself; an alarm acknowledged; the data pages. Each test also
brings the tab to the state it needs, so any one of them runs alone too. Screenshots of
the main pages go to docs/screenshots/.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from playwright.sync_api import Page, Route, expect
from testkit import wait_for
from uikit import ADMIN, BANNER, CONFIG, PASSWORD, PLC1, SHOTS, Unit

pytestmark = pytest.mark.browser

NEW_CONDUIT = "it-plc1-web"


def shot(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    # from the top: a page scrolled down draws its sticky header in the middle of a
    # full-page screenshot
    page.evaluate("() => { document.activeElement?.blur(); window.scrollTo(0, 0); }")
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def fetch_json(page: Page, method: str, path: str, body: Any = None) -> dict[str, Any]:
    """A request made by the page itself (chromium sits in the lab's IT namespace; the
    test process does not), with the session cookie and the page's CSRF token."""
    return page.evaluate(
        """async ([method, path, body]) => {
            const csrf = document.querySelector('meta[name="csrf-token"]')?.content || "";
            const r = await fetch(path, {method, headers: {"Content-Type": "application/json",
              "X-CSRF-Token": csrf}, body: body === null ? undefined : JSON.stringify(body)});
            let data = null;
            try { data = await r.json(); } catch (e) { data = null; }
            return {status: r.status, body: data};
        }""",
        [method, path, body],
    )


def signed_in(page: Page, unit: Unit) -> None:
    """Bring the tab to a signed-in admin session (doing the first-boot setup if needed)."""
    page.goto("/")
    page.wait_for_selector("#setup-form, #login-form, #picture svg")
    if page.locator("#setup-form").is_visible():
        fill_setup(page, unit.setup_code(), PASSWORD)
        expect(page.locator("#picture svg")).to_be_visible()
    elif page.locator("#login-form").is_visible():
        log_in(page, PASSWORD)
        expect(page.locator("#picture svg")).to_be_visible()
    expect(page.locator("#user-role")).to_have_text("admin")


def fill_setup(page: Page, code: str, password: str) -> None:
    form = page.locator("#setup-form")
    form.locator("[name=code]").fill(code)
    form.locator("[name=username]").fill(ADMIN)
    form.locator("[name=password]").fill(password)
    form.locator("[name=password2]").fill(password)
    form.locator("button[type=submit]").click()


def log_in(page: Page, password: str) -> None:
    form = page.locator("#login-form")
    form.locator("[name=username]").fill(ADMIN)
    form.locator("[name=password]").fill(password)
    form.locator("button[type=submit]").click()


def commit(page: Page, confirm_within: int | None, comment: str) -> None:
    page.goto("/config")
    form = page.locator("#commit-form")
    expect(form).to_be_visible()
    if confirm_within is None:
        form.locator("[name=trial]").uncheck()
    else:
        form.locator("[name=trial]").check()
        form.locator("[name=confirm_within]").fill(str(confirm_within))
    form.locator("[name=comment]").fill(comment)
    form.locator("#commit-btn").click()


# -- first boot, login -----------------------------------------------------------------------


def test_first_boot_setup_needs_the_code_once(page: Page, unit: Unit) -> None:
    page.goto("/conduits")
    expect(page).to_have_url(re.compile(r"/setup$"))
    code = unit.setup_code()
    form = page.locator("#setup-form")
    # a short password is refused at the field, before anything is sent
    fill_setup(page, code, "short")
    expect(form.locator("[name=password]")).to_have_attribute("aria-invalid", "true")
    expect(form.locator(".field-error").first).to_contain_text("12 characters")
    # a wrong code is refused by the unit
    fill_setup(page, "AAAA-BBBB-CCCC-DDDD", PASSWORD)
    expect(form.locator(".field-error, .form-error .alert").first).to_be_visible()
    expect(page).to_have_url(re.compile(r"/setup$"))
    # the right code: the first admin exists and is signed in
    fill_setup(page, code, PASSWORD)
    expect(page.locator("#picture svg")).to_be_visible()
    expect(page.locator("#user-name")).to_have_text(ADMIN)
    expect(page.locator("#user-role")).to_have_text("admin")
    # the code worked once
    again = fetch_json(
        page, "POST", "/api/setup", {"code": code, "username": "second", "password": PASSWORD}
    )
    assert again["status"] >= 400, again
    page.goto("/setup")
    expect(page.locator("#setup-done")).to_be_visible()


def test_login_shows_banner_refuses_a_wrong_password_and_logs_out(page: Page, unit: Unit) -> None:
    signed_in(page, unit)
    page.locator("#logout").click()
    expect(page).to_have_url(re.compile(r"/login"))
    expect(page.locator("#login-banner")).to_have_text(BANNER)
    page.goto("/devices")
    expect(page).to_have_url(re.compile(r"/login"))
    log_in(page, PASSWORD + "-wrong")
    expect(page.locator("#login-form .form-error .alert")).to_be_visible()
    expect(page).to_have_url(re.compile(r"/login"))
    log_in(page, PASSWORD)
    expect(page).to_have_url(re.compile(r"/devices$"))
    expect(page.locator("#user-name")).to_have_text(ADMIN)


# -- conduit: create, commit, confirm, traffic -----------------------------------------------------


def test_conduit_created_committed_confirmed_and_its_counter_rises(page: Page, unit: Unit) -> None:
    signed_in(page, unit)
    assert unit.probe(PLC1, 8080) == "dropped"  # nothing crosses without a conduit

    page.goto("/conduits")
    page.locator("#new-conduit").click()
    form = page.locator("#conduit-form")
    form.locator("[name=name]").fill(NEW_CONDUIT)
    form.locator("[name=owner]").fill("maintenance@plant.example")
    form.locator("[name=reason]").fill("Engineers open the PLC's web page")
    form.locator("[name=from]").fill("10.10.0.2")
    form.locator("[name=to]").fill("192.168.50.999")
    form.locator("[name=services]").fill("tcp/8080")
    form.locator("#conduit-save").click()
    # the unit refuses the address, and the UI says so at the field
    expect(form.locator("[name=to]")).to_have_attribute("aria-invalid", "true")
    expect(form.locator(".field-error")).to_contain_text("192.168.50.999")
    form.locator("[name=to]").fill(PLC1)
    form.locator("#conduit-save").click()
    expect(page.locator("#conduit-dialog")).to_be_hidden()
    row = page.locator(f"tr[data-conduit='{NEW_CONDUIT}']")
    expect(row).to_contain_text("new in draft")
    shot(page, "conduits")

    commit(page, 300, "engineers need the PLC web page")
    expect(page.locator("#pending-bar")).to_be_visible()
    expect(page.locator("#cfg-countdown")).to_have_text(re.compile(r"\d+ (min|s)"))
    pending = unit.latest()
    assert pending.state == "pending"
    assert pending.confirm_deadline is not None
    # the change runs on trial: the conduit passes traffic before anyone confirms
    wait_for(lambda: unit.probe(PLC1, 8080) == "open", 30, "the new conduit to pass traffic")
    shot(page, "config-countdown")
    page.locator("#cfg-confirm").click()
    expect(page.locator("#pending-bar")).to_be_hidden()
    expect(page.locator("#cfg-pending")).to_be_hidden()
    wait_for(lambda: unit.revision(pending.id).state == "confirmed", 15, "the confirmation")

    page.goto("/")
    counter = page.locator(f"[data-counter='{NEW_CONDUIT}']")
    expect(counter).to_be_visible()
    for _ in range(5):
        assert unit.probe(PLC1, 8080) == "open"
    expect(counter).not_to_have_text(re.compile(r"^0 pkts"), timeout=30_000)
    expect(page.locator("#ov-rev")).to_contain_text(f"revision {pending.id} (confirmed)")
    shot(page, "overview")


def test_unconfirmed_commit_reverts_by_itself(page: Page, unit: Unit) -> None:
    signed_in(page, unit)
    page.goto("/conduits")
    name = "scada-modbus"
    row = page.locator(f"tr[data-conduit='{name}']")
    expect(row).to_be_visible()
    row.locator(f"[data-delete='{name}']").click()
    page.locator("dialog.modal[open] button[value=ok]").click()
    expect(row).to_contain_text("removed in draft")
    draft = unit.latest()
    assert draft.state == "draft"

    commit(page, 10, "try without the SCADA conduit")
    expect(page.locator("#pending-bar")).to_be_visible()
    pending = unit.revision(draft.id)
    assert pending.state == "pending" and pending.confirm_deadline is not None
    # nobody confirms: the unit goes back by itself, and the page says so
    expect(page.locator("#revert-bar")).to_be_visible(timeout=60_000)
    expect(page.locator("#revert-bar")).to_contain_text(f"Revision {pending.id} was rolled back")
    expect(page.locator("#reverted")).to_be_visible()
    expect(page.locator("#pending-bar")).to_be_hidden()
    assert unit.revision(pending.id).state == "rolled-back"
    page.goto("/revisions")
    expect(page.locator(f"tr[data-revision='{pending.id}']")).to_contain_text("rolled-back")
    # the SCADA conduit is back on the wire
    wait_for(lambda: unit.probe(PLC1, 502) == "open", 30, "the reverted conduit to pass again")


def test_yaml_errors_point_at_their_line(page: Page, unit: Unit) -> None:
    signed_in(page, unit)
    doc = json.loads(json.dumps(CONFIG))
    doc["conduits"][0]["services"] = ["modbus", "tcp/0"]
    text = yaml.safe_dump(doc, sort_keys=False)
    bad_line = next(i for i, ln in enumerate(text.splitlines(), 1) if "tcp/0" in ln)
    held: list[Route] = []
    # the document the editor starts from: the draft, or the running one without a draft
    document = re.compile(r"/api/config/(draft|running)$")
    page.route(document, lambda route: held.append(route))
    page.goto("/config#edit")
    expect(page.locator("#pane-edit")).to_be_visible()
    # while the document is on its way nobody can type: the late answer would land in the text
    wait_for(lambda: held or page.wait_for_timeout(50), 10, "the editor to ask for its document")
    expect(page.locator("#yaml")).not_to_be_editable()
    held[0].continue_()
    page.unroute(document)
    expect(page.locator("#yaml")).to_be_editable()
    page.locator("#yaml").fill(text)
    page.locator("#yaml-save").click()
    error = page.locator("#yaml-errors li").first
    expect(error).to_contain_text(f"line {bad_line}")
    expect(error).to_contain_text("services")
    expect(page.locator(f"#gutter [data-err-line='{bad_line}']")).to_be_visible()


# -- field data ------------------------------------------------------------------------------------


def test_alarm_acknowledged_in_the_ui(page: Page, unit: Unit) -> None:
    signed_in(page, unit)
    page.goto("/alarms")
    row = page.locator("tr[data-alarm='plc1.pressure:high']")
    expect(row).to_be_visible(timeout=30_000)
    expect(row).to_contain_text("warning")  # a high limit; high_high is critical
    row.locator("[data-ack]").click()
    expect(row).to_contain_text(re.compile(rf"by (web:)?{ADMIN}\b"))
    shot(page, "alarms")
    alarms = fetch_json(page, "GET", "/api/alarms?active=1")["body"]
    items = alarms if isinstance(alarms, list) else alarms.get("alarms") or alarms.get("items")
    mine = [a for a in items if a["key"] == "plc1.pressure:high"]
    assert mine and mine[0]["acked"] and mine[0]["acked_by"].endswith(ADMIN)


def test_devices_live_values_and_tag_chart(page: Page, unit: Unit) -> None:
    signed_in(page, unit)
    page.goto("/devices")
    counter = page.locator("[data-value='plc1.counter']")
    expect(counter).to_have_text(re.compile(r"^\d+$"), timeout=30_000)
    first = int(counter.inner_text())
    expect(counter).not_to_have_text(str(first), timeout=10_000)  # it refreshes by itself
    shot(page, "devices")
    page.locator("a[href='/tags/plc1.temperature']").click()
    expect(page).to_have_url(re.compile(r"/tags/plc1\.temperature$"))
    page.locator("[data-range='900']").click()
    series = page.locator("#chart path.series")
    expect(series).to_have_attribute("d", re.compile(r"^M[\d.]+,[\d.]+L"), timeout=30_000)
    expect(page.locator("#csv-link")).to_have_attribute("href", re.compile(r"format=csv"))
    shot(page, "tag-chart")


def test_sql_console_reads_and_refuses_writes(page: Page, unit: Unit) -> None:
    signed_in(page, unit)
    page.goto("/sql")
    page.locator("#query").fill("SELECT tag, device, unit FROM tags ORDER BY tag")
    page.locator("#run").click()
    expect(page.locator("#sql-table")).to_contain_text("plc1.counter")
    expect(page.locator("#sql-note")).to_contain_text("row")
    shot(page, "sql")
    page.locator("#query").fill("DELETE FROM samples")
    page.locator("#run").click()
    refused = page.locator("#sql-form .field-error, #sql-form .form-error .alert")
    expect(refused.first).to_be_visible()


def test_events_audit_and_system_pages(page: Page, unit: Unit) -> None:
    signed_in(page, unit)
    page.goto("/events?kind=config.")
    rows = page.locator("#log-table tbody tr[data-id]")
    expect(rows.first).to_be_visible()
    for kind in rows.locator("td:nth-child(4)").all_inner_texts():
        assert kind.startswith("config."), kind
    shot(page, "events")
    page.goto("/audit")
    expect(page.locator("#log-table")).to_contain_text(ADMIN)
    page.goto("/system")
    expect(page.locator("#sys-unit dd[data-key=version]")).to_have_text(re.compile(r"\d+\.\d+"))
    expect(page.locator("#sys-unit dd[data-key=certificate]")).to_contain_text("sha256:")
    shot(page, "system")


def test_no_script_errors_or_policy_violations(page: Page, unit: Unit) -> None:
    signed_in(page, unit)
    for path in ("/", "/conduits", "/nat", "/interfaces", "/revisions", "/users", "/tokens"):
        page.goto(path)
        expect(page.locator("main h1")).to_be_visible()
    assert page.problems == []  # type: ignore[attr-defined]


VIEWER, VIEWER_PASSWORD = "night-shift", "read-only-but-long-enough-42"


@contextlib.contextmanager
def viewer_tab(page: Page, unit: Unit, browser: Any) -> Iterator[Page]:
    """A second browser context signed in as a viewer (made through the admin's `page`
    when missing), closed afterwards."""
    signed_in(page, unit)
    body = {"name": VIEWER, "role": "viewer", "password": VIEWER_PASSWORD}
    assert fetch_json(page, "POST", "/api/users", body)["status"] in (201, 409)
    ctx = browser.new_context(ignore_https_errors=True, base_url=unit.url)
    try:
        tab = ctx.new_page()
        tab.goto("/login")
        tab.locator("#login-form [name=username]").fill(VIEWER)
        tab.locator("#login-form [name=password]").fill(VIEWER_PASSWORD)
        tab.locator("#login-form button[type=submit]").click()
        expect(tab.locator("#user-role")).to_have_text("viewer")
        yield tab
    finally:
        ctx.close()
