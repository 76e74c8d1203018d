"""The after-login target check shared by the unit's web UI and the fleet receiver."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from appliance.redirects import safe_next
from appliance.web import ui

# Each of these, given to a browser as a link or a Location on https://site/, leaves the
# site (or could, behind a proxy that decodes the path) -- see appliance/redirects.py.
HOSTILE = (
    "/\t/evil.example",
    "/\n/evil.example",
    "/\r/evil.example",
    "/\r\n/evil.example",
    "\t//evil.example",
    " //evil.example",
    "\x00//evil.example",
    "/\x00",
    "\x1f/\\evil.example",
    "/\\evil.example",
    "\\\\evil.example",
    "\\/evil.example",
    "//evil.example",
    "///evil.example",
    "//evil.example/x",
    "https://evil.example/",
    "https:evil.example",
    "http:/evil.example",
    "javascript:alert(1)",
    "evil.example",
    "/%2F/evil.example",
    "/%2f/evil.example",
    "/%5Cevil.example",
    "/%09/evil.example",
    "/ /evil.example",
    "/\u3000/evil.example",
    "/\u200b/evil.example",
    "/\u202e/evil.example",
    "/\u2028/evil.example",
    "/\x85/evil.example",
    "/" + "a" * 5000,
    "",
    None,
)

LOCAL = (
    "/",
    "/devices",
    "/devices?x=1",
    "/units/press-3",
    "/units/press-3?limit=50#events",
    "/tags/a%2Fb",
    "/?next=//evil.example",
)


def browser_leaves(base_host: str, target: str) -> bool:
    """Whether a browser following `target` from https://base_host/ would go elsewhere.

    A model of the WHATWG URL parser's steps that matter here: strip leading and trailing
    C0 controls and spaces, remove tab/CR/LF, read a backslash as a slash, then a scheme
    or a leading `//` means another origin.
    """
    text = target.strip("".join(chr(c) for c in range(0x21)))
    text = re.sub("[\t\r\n]", "", text).replace("\\", "/")
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", text):
        return True
    return text.startswith("//")


@pytest.mark.parametrize("target", HOSTILE, ids=lambda t: repr(t)[:30])
def test_hostile_targets_go_home(target: str | None) -> None:
    assert safe_next(target) == "/"
    assert ui.safe_next(target) == "/"


@pytest.mark.parametrize("target", LOCAL)
def test_local_targets_are_kept(target: str) -> None:
    assert safe_next(target) == target


def test_non_ascii_is_percent_encoded() -> None:
    assert safe_next("/tags/temp\u00b0C") == "/tags/temp%C2%B0C"


def test_the_unit_ui_uses_the_shared_check() -> None:
    assert ui.safe_next is safe_next


@given(st.text(max_size=40))
def test_no_text_leads_a_browser_off_site(text: str) -> None:
    for target in (text, "/" + text):
        out = safe_next(target)
        assert not browser_leaves("site", out), (target, out)
        assert out.isascii() and out.isprintable()


def test_the_model_sees_the_reported_hole() -> None:
    """The model is not vacuous: the raw text of the reported attack leaves the site."""
    assert browser_leaves("site", "/\t/evil.example")
    assert browser_leaves("site", "/\\evil.example")
    assert not browser_leaves("site", "/devices")


def test_the_unit_login_page_only_carries_a_local_target(tmp_path: Path) -> None:
    from appliance.paths import Paths
    from appliance.web.app import create_app

    app = create_app(Paths(tmp_path / "data", tmp_path / "run"), testing=True)
    try:
        client = app.test_client()
        for target in ("/\t/evil.example", "/\n/evil.example", "/\\evil.example"):
            html = client.get("/login", query_string={"next": target}).get_data(as_text=True)
            assert 'data-next="/"' in html, target
        html = client.get("/login", query_string={"next": "/devices"}).get_data(as_text=True)
        assert 'data-next="/devices"' in html
    finally:
        app.extensions["appliance"].store.close()
