"""The page routes and static files with Flask's test client (fast, no browser, no lab):
every page renders for its role with the CSRF meta tag, loads only its own module, and
nothing in the templates or scripts needs 'unsafe-inline' under the strict CSP."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from appliance.web import ui

from .webkit import ROLES, Web

WEB = Path(ui.__file__).resolve().parent


def test_every_page_redirects_to_setup_before_an_admin_exists(web: Web) -> None:
    client = web.client()
    for page in ui.PAGES:
        r = client.get(page.path)
        assert r.status_code == 302 and r.headers["Location"].endswith("/setup"), page.path
    assert client.get("/setup").status_code == 200
    assert client.get("/login").status_code == 200


def test_pages_need_a_session_and_keep_where_you_wanted_to_go(ready: Web) -> None:
    r = ready.client().get("/devices")
    assert r.status_code == 302
    assert r.headers["Location"].endswith("/login?next=/devices")


@pytest.mark.parametrize("role", ROLES)
def test_pages_render_for_the_roles_allowed(ready: Web, role: str) -> None:
    client = ready.login(role)  # the user named after its role
    rank = {"viewer": 1, "operator": 2, "admin": 3}
    for page in ui.PAGES:
        r = client.get(page.path)
        if rank[role] < rank[page.role]:
            assert r.status_code == 403, (role, page.path)
            continue
        assert r.status_code == 200, (role, page.path)
        html = r.get_data(as_text=True)
        csrf = re.search(r'<meta name="csrf-token" content="([^"]*)">', html)
        assert csrf and csrf.group(1), page.path  # a signed-in page carries the token
        assert f"/assets/js/pages/{page.page}.js" in html
        assert f"<h1>{page.title}</h1>" in html
    r = client.get("/tags/plc1.counter")
    assert r.status_code == 200 and 'data-tag="plc1.counter"' in r.get_data(as_text=True)


def test_tag_names_are_escaped_in_the_page(ready: Web) -> None:
    client = ready.login("viewer")
    html = client.get('/tags/x"><img src=x onerror=alert(1)>').get_data(as_text=True)
    assert "<img src=x" not in html
    assert "&lt;img src=x" in html


def test_login_page_only_goes_back_to_local_pages() -> None:
    assert ui.safe_next("/devices?x=1") == "/devices?x=1"
    bad_targets = ("https://evil.example/", "//evil.example/x", "/\\evil.example", "javascript:x")
    for bad in (*bad_targets, "", None):
        assert ui.safe_next(bad) == "/"


def test_every_referenced_asset_exists_and_is_served(web: Web) -> None:
    client = web.client()
    pages = {p.page for p in ui.PAGES} | {"tag", "login", "setup"}
    for page in pages:
        assert (WEB / "templates" / f"{page}.html").is_file(), page
        assert (WEB / "static" / "js" / "pages" / f"{page}.js").is_file(), page
    js = list((WEB / "static" / "js").rglob("*.js"))
    for path in js:
        for imported in re.findall(r'from "(\.[^"]+)"|import "(\.[^"]+)"', path.read_text()):
            target = (path.parent / (imported[0] or imported[1])).resolve()
            assert target.is_file(), f"{path.name} imports missing {target}"
    for rel in ("app.css", "icon.svg", "js/lib.js", "js/pages/overview.js"):
        r = client.get(f"/assets/{rel}")
        assert r.status_code == 200, rel


def test_nothing_needs_unsafe_inline() -> None:
    """CSP is script-src 'self'; style-src 'self': no inline script, no style or
    event-handler attributes, no javascript: URLs, no innerHTML in the scripts."""
    for path in (WEB / "templates").glob("*.html"):
        text = path.read_text()
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", text), path.name
        assert not re.search(r"<style\b", text), path.name
        assert not re.search(r"\sstyle\s*=", text), path.name
        assert not re.search(r"\son[a-z]+\s*=", text), path.name
        assert "javascript:" not in text, path.name
    for path in (WEB / "static" / "js").rglob("*.js"):
        text = path.read_text()
        assert "innerHTML" not in text and "outerHTML" not in text, path.name
        assert "insertAdjacentHTML" not in text and "document.write" not in text, path.name
        assert not re.search(r"setAttribute\(\s*['\"]style['\"]", text), path.name
        assert "eval(" not in text and "new Function" not in text, path.name


def test_nothing_is_loaded_from_elsewhere() -> None:
    for path in [*(WEB / "templates").glob("*.html"), *(WEB / "static").rglob("*.*")]:
        if path.suffix not in (".html", ".js", ".css"):
            continue
        text = path.read_text()
        for url in re.findall(r"""(?:src|href)\s*=\s*["'](https?:)?//""", text):
            pytest.fail(f"{path.name} loads something from another site ({url})")
        assert "@import url(http" not in text and "fonts.googleapis" not in text, path.name
