"""The web UI as a new IT admin meets it (issue 17, items 1 and 5), in chromium against
the appliance in the lab (a lab and a unit of its own: first boot included).

In file order: from the overview to a confirmed conduit in at most 8 actions (the editor
suggests the name and commits on trial itself); "Save to draft" still batches; required
fields marked and checked in the browser, the unit's refusals in plain words at the field.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Locator, Page, expect
from test_ui import fetch_json, signed_in
from testkit import wait_for
from uikit import IT_HOST, PLC1, Unit

from appliance.config.plain import JARGON

pytestmark = pytest.mark.browser

MAX_ACTIONS = 8  # the goal for one conduit, overview to confirmed
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1366, "height": 900}


@pytest.fixture(scope="module")
def tab(context: Any) -> Iterator[Page]:
    pg = context.new_page()
    problems: list[str] = []
    pg.on("pageerror", lambda e: problems.append(f"{pg.url}: page error: {e}"))
    pg.problems = problems  # type: ignore[attr-defined]
    yield pg
    pg.close()


class Actions:
    """The person's actions (clicks, typing into a field, choosing), counted."""

    def __init__(self) -> None:
        self.done: list[str] = []

    def click(self, where: Locator, what: str) -> None:
        where.click()
        self.done.append(f"click {what}")

    def fill(self, where: Locator, text: str, what: str) -> None:
        where.fill(text)
        self.done.append(f"type {what}")


def settled(tab: Page) -> None:
    """No pending revision and no draft left by an earlier test."""
    revs = fetch_json(tab, "GET", "/api/revisions")["body"]
    if any(r["state"] == "pending" for r in revs):
        assert fetch_json(tab, "POST", "/api/config/confirm", {})["status"] == 200
    if any(r["state"] == "draft" for r in revs):
        r = fetch_json(tab, "POST", "/api/config/commit", {"confirm_within": None})
        assert r["status"] == 200, r


# -- item 1: fewer steps ------------------------------------------------------------------------


def test_a_conduit_from_the_overview_to_confirmed_in_at_most_8_actions(
    tab: Page, unit: Unit
) -> None:
    signed_in(tab, unit)
    settled(tab)
    assert unit.probe(PLC1, 8080) == "dropped"
    tab.goto("/")
    expect(tab.locator("#picture svg")).to_be_visible()
    before = unit.latest().id
    act = Actions()

    act.click(tab.locator("#ov-new-conduit"), "New conduit")
    form = tab.locator("#conduit-form")
    expect(form).to_be_visible()
    act.fill(form.locator("[name=owner]"), "maintenance@plant.example", "owner")
    act.fill(form.locator("[name=reason]"), "Engineers open the PLC's web page", "reason")
    act.fill(form.locator("[name=from]"), IT_HOST, "from")
    act.fill(form.locator("[name=to]"), PLC1, "to")
    act.fill(form.locator("[name=services]"), "tcp/8080", "services")
    # the name was suggested from owner, destination (the device at that address) and service
    expect(form.locator("[name=name]")).to_have_value("maintenance-plc1-tcp8080")
    act.click(form.locator("#conduit-commit"), "Save and commit on trial")
    expect(tab.locator("#conduit-dialog")).to_be_hidden()
    bar = tab.locator("#pending-bar")
    expect(bar).to_be_visible()
    expect(bar.locator("[data-countdown]")).to_have_text(re.compile(r"\d+ (min|s)"))
    pending = unit.latest()
    assert pending.id > before and pending.state == "pending", pending.state
    assert pending.confirm_deadline is not None
    wait_for(lambda: unit.probe(PLC1, 8080) == "open", 30, "the conduit to pass on trial")
    act.click(bar.locator("[data-action=confirm-pending]"), "Confirm")
    expect(bar).to_be_hidden()
    wait_for(lambda: unit.revision(pending.id).state == "confirmed", 15, "the confirmation")

    assert len(act.done) <= MAX_ACTIONS, act.done
    assert unit.probe(PLC1, 8080) == "open"


def test_save_to_draft_still_batches_and_the_editor_says_what_a_commit_takes(
    tab: Page, unit: Unit
) -> None:
    signed_in(tab, unit)
    settled(tab)
    tab.goto("/conduits")
    form = tab.locator("#conduit-form")
    for n, port in enumerate((8081, 8082)):
        tab.locator("#new-conduit").click()
        form.locator("[name=owner]").fill("maintenance@plant.example")
        form.locator("[name=reason]").fill("batch")
        form.locator("[name=from]").fill(IT_HOST)
        form.locator("[name=to]").fill(PLC1)
        form.locator("[name=services]").fill(f"tcp/{port}")
        if n == 1:
            # the first one waits in the draft: a commit from here would take it along
            expect(tab.locator("#conduit-batch")).to_contain_text("maintenance-plc1-tcp8081")
        form.locator("#conduit-save").click()
        expect(tab.locator("#conduit-dialog")).to_be_hidden()
    for port in (8081, 8082):
        row = tab.locator(f"tr[data-conduit='maintenance-plc1-tcp{port}']")
        expect(row).to_contain_text("new in draft")
    assert unit.latest().state == "draft"
    settled(tab)


# -- item 5: required fields, plain words ----------------------------------------------------------


def test_required_fields_are_marked_and_checked_in_the_browser(tab: Page, unit: Unit) -> None:
    signed_in(tab, unit)
    settled(tab)
    tab.goto("/conduits")
    tab.locator("#new-conduit").click()
    form = tab.locator("#conduit-form")
    for name in ("name", "owner", "reason", "from", "to", "services"):
        label = form.locator(f"label:has([name={name}])")
        expect(label.locator("abbr.req")).to_have_count(1)
    expect(form.locator("label:has([name=description]) abbr.req")).to_have_count(0)
    asked: list[str] = []
    tab.on("request", lambda r: asked.append(r.url) if r.method != "GET" else None)
    form.locator("#conduit-commit").click()
    expect(form.locator("[name=owner]")).to_have_attribute("aria-invalid", "true")
    expect(form.locator(".field-error")).to_have_count(6)
    assert asked == []  # nothing was sent
    # what the unit refuses reads as a plain sentence at its field
    form.locator("[name=owner]").fill("maintenance@plant.example")
    form.locator("[name=reason]").fill("check")
    form.locator("[name=from]").fill(IT_HOST)
    form.locator("[name=to]").fill("10.10.0.300")
    form.locator("[name=services]").fill("tcp/0")
    form.locator("#conduit-save").click()
    expect(form.locator("[name=to]")).to_have_attribute("aria-invalid", "true")
    texts = form.locator(".field-error").all_inner_texts()
    assert any("'10.10.0.300' is not an IP address" in t for t in texts), texts
    for t in texts:
        assert not [p for p in JARGON if p in t.lower()], t
    tab.locator("#conduit-cancel").click()
