"""The web UI's honest state and rough spots (issue 17, items 4, 6 and 10), in chromium
against the appliance in the lab (a lab and a unit of its own: first boot included).

In file order: setup and login leave their address (and the browser's history); no page
logs an error in the console when there is no draft; an unknown address gets the unit's
own 404 (HTML for pages, the JSON error under /api); the conduit form's placeholders
cannot be taken for values and its Direction select is not cut off; "Expire now" only
for conduits that run; during a trial "Review the change" shows what the trial changes;
Confirm repaints the header at once, with one toast. Each test brings the tab to the
state it needs, so any one of them runs alone too.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Page, expect
from test_ui import commit, fetch_json, fill_setup, log_in, shot, signed_in
from uikit import PLC2, Unit

from appliance.web import ui

pytestmark = pytest.mark.browser

DRAFT_CONDUIT = "it-plc2-web"
# A placeholder is an example ("e.g. ..."), says what empty means ("empty: ...") or asks
# for something ("filter tags…"): never text that reads like a value already entered.
PLACEHOLDER = re.compile(r"^(e\.g\. |empty: )|…$")


@pytest.fixture(scope="module")
def tab(context: Any) -> Iterator[Page]:
    """One tab for the file; `tab.problems` collects every console error and script error."""
    pg = context.new_page()
    problems: list[str] = []
    pg.on("pageerror", lambda e: problems.append(f"{pg.url}: page error: {e}"))
    pg.on(
        "console",
        lambda m: problems.append(f"{pg.url}: {m.text}") if m.type == "error" else None,
    )
    pg.problems = problems  # type: ignore[attr-defined]
    yield pg
    pg.close()


def no_draft(tab: Page) -> None:
    """Commit away a draft an earlier test left, so the unit has none."""
    revs = fetch_json(tab, "GET", "/api/revisions")["body"]
    if any(r["state"] == "pending" for r in revs):
        assert fetch_json(tab, "POST", "/api/config/confirm", {})["status"] == 200
    if any(r["state"] == "draft" for r in revs):
        r = fetch_json(tab, "POST", "/api/config/commit", {"confirm_within": None})
        assert r["status"] == 200, r


def draft_conduit(tab: Page) -> None:
    """A conduit that exists only in the draft (added unless it is there already)."""
    r = fetch_json(
        tab,
        "POST",
        "/api/conduits",
        {
            "name": DRAFT_CONDUIT,
            "owner": "maintenance@plant.example",
            "reason": "Engineers open the packer's web page",
            "from": ["10.10.0.2"],
            "to": [PLC2],
            "services": ["tcp/8080"],
        },
    )
    assert r["status"] in (201, 409), r


def record_toasts(tab: Page) -> None:
    """From now on, every toast the page shows is kept in window.__toasts (they vanish)."""
    tab.evaluate(
        """() => {
            window.__toasts = [];
            new MutationObserver((records) => {
                for (const r of records) for (const n of r.addedNodes)
                    if (n.classList && n.classList.contains("toast"))
                        window.__toasts.push(n.textContent);
            }).observe(document.body, {childList: true, subtree: true});
        }"""
    )


# -- item 10: setup and login leave their address ------------------------------------------------


def test_setup_and_login_leave_their_address_and_the_history(tab: Page, unit: Unit) -> None:
    tab.goto("/conduits")
    expect(tab).to_have_url(re.compile(r"/setup$"))
    fill_setup(tab, unit.setup_code(), "blue-cable-ot-gate-42")
    expect(tab.locator("#picture svg, main h1").first).to_be_visible()
    expect(tab).not_to_have_url(re.compile(r"/setup"))
    # the setup page is not in the history: Back does not lead to a form already used
    tab.go_back()
    expect(tab).not_to_have_url(re.compile(r"/setup"))

    signed_in(tab, unit)
    tab.locator("#logout").click()
    expect(tab).to_have_url(re.compile(r"/login"))
    tab.goto("/devices")
    expect(tab).to_have_url(re.compile(r"/login\?next=/devices$"))
    log_in(tab, "blue-cable-ot-gate-42")
    expect(tab).to_have_url(re.compile(r"^https://[^/]+/devices$"))  # not ...?next=/devices
    expect(tab.locator("#user-name")).not_to_be_empty()
    tab.go_back()
    expect(tab).not_to_have_url(re.compile(r"/login"))
    # a signed-in person who opens the login page goes where it would have led
    tab.goto("/login?next=/alarms")
    expect(tab).to_have_url(re.compile(r"^https://[^/]+/alarms$"))
    expect(tab.locator("main h1")).to_have_text("Alarms")


# -- item 10: no console errors without a draft ---------------------------------------------------


def test_no_console_error_on_any_page_without_a_draft(tab: Page, unit: Unit) -> None:
    signed_in(tab, unit)
    no_draft(tab)
    tab.problems.clear()  # type: ignore[attr-defined]
    paths = [p.path for p in ui.PAGES] + ["/tags/plc1.temperature", "/config#edit"]
    for path in paths:
        tab.goto(path)
        expect(tab.locator("main h1")).to_be_visible()
        tab.wait_for_load_state("networkidle")
    assert tab.problems == []  # type: ignore[attr-defined]


# -- item 10: the unit's own 404 -------------------------------------------------------------------


def test_an_unknown_address_gets_the_units_own_404(tab: Page, unit: Unit) -> None:
    signed_in(tab, unit)
    resp = tab.goto("/no-such-page?x=1")
    assert resp is not None and resp.status == 404
    box = tab.locator("#not-found")
    expect(box).to_be_visible()
    expect(box).to_contain_text("/no-such-page")
    expect(tab.locator("main h1")).to_have_text("Page not found")
    expect(tab.locator("#not-found a[href='/']")).to_be_visible()
    shot(tab, "not-found")
    assert "requested URL was not found on the server" not in tab.content()
    # the page has the unit's look: its stylesheet, no script that is not there
    assert tab.evaluate("() => getComputedStyle(document.body).fontFamily") != "Times New Roman"
    api = fetch_json(tab, "GET", "/api/no-such-thing")
    assert api["status"] == 404
    assert set(api["body"]) >= {"error", "field"} and api["body"]["error"], api
    problems = [p for p in tab.problems if "404" not in p]  # type: ignore[attr-defined]
    assert problems == []
    tab.problems.clear()  # type: ignore[attr-defined]


# -- item 6: placeholders and the Direction select -------------------------------------------------


def placeholders(tab: Page) -> list[dict[str, Any]]:
    return tab.evaluate(
        """() => [...document.querySelectorAll("input[placeholder]")]
            .filter((el) => el.placeholder && el.getClientRects().length)
            .map((el) => {
                const ph = getComputedStyle(el, "::placeholder");
                return {name: el.name || el.id || el.dataset.key || "", text: el.placeholder,
                        style: ph.fontStyle, color: ph.color, ink: getComputedStyle(el).color};
            })"""
    )


def test_placeholders_cannot_be_mistaken_for_values(tab: Page, unit: Unit) -> None:
    signed_in(tab, unit)
    tab.goto("/conduits")
    tab.locator("#new-conduit").click()
    expect(tab.locator("#conduit-dialog")).to_be_visible()
    seen = placeholders(tab)
    assert {p["name"] for p in seen} >= {"from", "to", "services"}
    for path in ("/nat", "/interfaces", "/tokens", "/events", "/audit", "/devices"):
        tab.goto(path)
        expect(tab.locator("main h1")).to_be_visible()
        tab.wait_for_load_state("networkidle")
        seen += placeholders(tab)
    for p in seen:
        assert PLACEHOLDER.search(p["text"]), p
        assert p["style"] == "italic", p
        assert p["color"] != p["ink"], p  # greyed, not the colour of typed text


def test_the_direction_select_shows_its_options_whole(tab: Page, unit: Unit) -> None:
    signed_in(tab, unit)
    for width in (1366, 390):
        tab.set_viewport_size({"width": width, "height": 860})
        tab.goto("/conduits")
        tab.locator("#new-conduit").click()
        select = tab.locator("#conduit-form select[name=direction]")
        expect(select).to_be_visible()
        # every option's text, in the select's font, fits inside it beside the arrow
        fits = select.evaluate(
            """(sel) => {
                const ctx = document.createElement("canvas").getContext("2d");
                const cs = getComputedStyle(sel);
                ctx.font = `${cs.fontWeight} ${cs.fontSize} ${cs.fontFamily}`;
                const pad = parseFloat(cs.paddingLeft) + parseFloat(cs.paddingRight);
                const room = sel.clientWidth - pad - 20;
                const need = (o) => Math.ceil(ctx.measureText(o.text).width);
                return [...sel.options].map((o) => [o.text, need(o), room]);
            }"""
        )
        for text, need, room in fits:
            assert need <= room, (width, text, need, room)
        tab.locator("#conduit-cancel").click()
    tab.set_viewport_size({"width": 1366, "height": 860})


# -- item 10: Expire now only for what runs --------------------------------------------------------


def test_expire_now_only_for_conduits_in_the_running_revision(tab: Page, unit: Unit) -> None:
    signed_in(tab, unit)
    draft_conduit(tab)
    tab.goto("/conduits")
    new = tab.locator(f"tr[data-conduit='{DRAFT_CONDUIT}']")
    expect(new).to_contain_text("new in draft")
    expect(new.locator(f"[data-edit='{DRAFT_CONDUIT}']")).to_be_visible()
    expect(new.locator(f"[data-delete='{DRAFT_CONDUIT}']")).to_be_visible()
    expect(new.locator("[data-expire]")).to_have_count(0)
    running = tab.locator("tr[data-conduit='scada-modbus']")
    expect(running.locator("[data-expire='scada-modbus']")).to_be_visible()


# -- item 4: the trial's diff, the header after Confirm, one toast ---------------------------------


def test_review_the_change_during_a_trial_shows_what_the_trial_changes(
    tab: Page, unit: Unit
) -> None:
    signed_in(tab, unit)
    draft_conduit(tab)
    before = next(
        r for r in fetch_json(tab, "GET", "/api/revisions")["body"] if r["state"] == "confirmed"
    )
    commit(tab, 600, "the packer's web page, on trial")
    expect(tab.locator("#pending-bar")).to_be_visible()
    pending = unit.latest()
    assert pending.state == "pending"
    tab.goto("/")
    tab.locator("#pending-bar a", has_text="Review the change").click()
    trial = tab.locator("#trial-diff")
    expect(trial).to_be_visible()
    expect(trial.locator(".add").first).to_be_visible()
    expect(trial).to_contain_text(DRAFT_CONDUIT)
    expect(tab.locator("#trial-changes")).to_contain_text(DRAFT_CONDUIT)
    expect(tab.locator("#trial-revs")).to_have_text(
        f"revision {before['id']} (confirmed) → revision {pending.id} (pending)"
    )
    # with no draft the changes pane says so, and offers no commit
    expect(tab.locator("#no-draft")).to_be_visible()
    expect(tab.locator("#commit-panel")).to_be_hidden()
    shot(tab, "config-trial")


def test_confirm_repaints_the_header_at_once_with_one_toast(tab: Page, unit: Unit) -> None:
    signed_in(tab, unit)
    if unit.latest().state != "pending":
        draft_conduit(tab)
        r = fetch_json(tab, "POST", "/api/config/commit", {"confirm_within": 600})
        assert r["status"] == 200, r
    tab.goto("/conduits")
    pill = tab.locator("#health-pill")
    expect(tab.locator("#pending-bar")).to_be_visible()
    # (a unit up for less than 30 s says "booting" first, whatever else it finds)
    expect(pill).to_have_text("pending-confirm", timeout=45_000)
    record_toasts(tab)
    tab.locator("#pending-bar [data-action=confirm-pending]").click()
    expect(tab.locator("#pending-bar")).to_be_hidden()
    # at once, not at the next poll (nor when the agent has caught up, seconds later)
    expect(pill).not_to_have_text("pending-confirm", timeout=1500)
    expect(pill).to_have_text(re.compile(r"^(ok|degraded)$"))
    tab.wait_for_timeout(7000)  # a status poll or two later
    expect(pill).not_to_have_text("pending-confirm")
    toasts = tab.evaluate("() => window.__toasts")
    assert len(toasts) == 1, toasts
    assert "confirmed" in toasts[0]
