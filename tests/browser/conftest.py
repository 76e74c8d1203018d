"""Browser-test fixtures: a lab (prefix "br") with the appliance running every role, and
Debian's chromium driven by Playwright from inside the lab's IT namespace.

Chromium runs as `ip netns exec br-it chromium ...` (Playwright talks to it over a pipe,
so the namespace does not matter to Playwright), and opens the UI the way an IT user
would: https://10.10.0.1/ on the appliance's IT interface (web.listen_it is on in the
test configuration). So the lab needs no management link in the machine's own
namespace and cannot collide with the demo lab's 10.99.0.1/30.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from uikit import PREFIX, Unit

from appliance.lab import topology
from appliance.lab.topology import LabSpec

CHROMIUM = "/usr/bin/chromium"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "browser: drives chromium against the lab (root, network namespaces)"
    )


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabSpec]:
    if os.geteuid() != 0:
        pytest.skip("browser tests need root: they build the lab in network namespaces")
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing (apt-get install chromium)")
    spec = LabSpec(prefix=PREFIX, plcs=2, mgmt=False, root=tmp_path_factory.mktemp("brlab"))
    topology.up(spec)
    try:
        yield spec
    finally:
        topology.down(spec)


@pytest.fixture(scope="module")
def unit(lab: LabSpec, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Unit]:
    u = Unit(lab, tmp_path_factory.mktemp("brunit"))
    u.start()
    try:
        yield u
    finally:
        u.stop()
        topology.ns_run(lab.ns_app, ["nft", "delete", "table", "inet", "appliance"], check=False)
        u.store.close()


@pytest.fixture(scope="module")
def chromium_in_it(lab: LabSpec, tmp_path_factory: pytest.TempPathFactory) -> str:
    """An executable that starts chromium inside the lab's IT host namespace."""
    wrapper = tmp_path_factory.mktemp("chromium") / "chromium-in-it"
    wrapper.write_text(f'#!/bin/sh\nexec ip netns exec {lab.ns_it} {CHROMIUM} "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return str(wrapper)


@pytest.fixture(scope="module")
def browser(chromium_in_it: str) -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium_in_it, args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="module")
def context(browser, unit: Unit) -> Iterator[object]:
    ctx = browser.new_context(
        ignore_https_errors=True,
        base_url=unit.url,
        viewport={"width": 1366, "height": 860},
        locale="en-GB",
        timezone_id="UTC",
    )
    ctx.set_default_timeout(15_000)
    try:
        yield ctx
    finally:
        ctx.close()


@pytest.fixture(scope="module")
def page(context) -> Iterator[object]:
    """One tab for the whole story (setup, login, changes): tests run in file order and
    each also brings the tab to the state it needs, so any one runs alone too."""
    pg = context.new_page()
    problems: list[str] = []
    pg.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    pg.on(
        "console",
        lambda m: (
            problems.append(f"console: {m.text}")
            if m.type == "error" and "Content Security Policy" in m.text
            else None
        ),
    )
    pg.problems = problems  # type: ignore[attr-defined]
    yield pg
    pg.close()
