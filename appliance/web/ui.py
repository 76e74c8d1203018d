"""The web UI's HTML pages: thin templates whose JavaScript reads and changes everything
through the REST API under /api (the same API scripts use), so the UI can do nothing the
API does not allow. Static files are served from /assets by this blueprint.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from flask import Blueprint, abort, redirect, render_template, request
from werkzeug.wrappers import Response

from appliance import __version__
from appliance.redirects import safe_next
from appliance.web.auth import current_user, require

log = logging.getLogger(__name__)

bp = Blueprint(
    "ui",
    __name__,
    template_folder="templates",
    static_folder="static",
    static_url_path="/assets",
)


@dataclass(frozen=True)
class Page:
    path: str
    page: str  # template name and JS module name (templates/<page>.html, js/pages/<page>.js)
    title: str
    role: str  # the least role that may open it (the API decides again for every call)
    nav: str | None  # nav group, None: not in the nav


PAGES: tuple[Page, ...] = (
    Page("/", "overview", "Overview", "viewer", "Status"),
    Page("/alarms", "alarms", "Alarms", "viewer", "Status"),
    Page("/events", "events", "Events", "viewer", "Status"),
    Page("/conduits", "conduits", "Conduits", "viewer", "Network"),
    Page("/nat", "nat", "NAT", "viewer", "Network"),
    Page("/interfaces", "interfaces", "Interfaces", "viewer", "Network"),
    Page("/inventory", "inventory", "Modbus inventory", "viewer", "Network"),
    Page("/devices", "devices", "Devices and tags", "viewer", "Field data"),
    Page("/devices/setup", "device_setup", "Device setup", "viewer", "Field data"),
    Page("/sql", "sql", "SQL console", "viewer", "Field data"),
    Page("/config", "config", "Configuration", "viewer", "Configuration"),
    Page("/revisions", "revisions", "Revisions", "viewer", "Configuration"),
    Page("/settings", "settings", "Unit settings", "viewer", "Configuration"),
    Page("/users", "users", "Users", "admin", "Administration"),
    Page("/tokens", "tokens", "API tokens", "viewer", "Administration"),
    Page("/audit", "audit", "Audit log", "operator", "Administration"),
    Page("/system", "system", "System", "viewer", "Administration"),
)

NAV_GROUPS = ("Status", "Network", "Field data", "Configuration", "Administration")


def nav() -> list[tuple[str, list[tuple[str, str, str]]]]:
    """[(group, [(href, label, role)])] in display order."""
    return [
        (group, [(p.path, p.title, p.role) for p in PAGES if p.nav == group])
        for group in NAV_GROUPS
    ]


def unit_context() -> dict[str, Any]:
    """The unit's name and login banner from the desired revision ('' when there is none)."""
    try:
        from appliance.web.context import ctx

        _rev, cfg = ctx().desired()
    except Exception:  # a page must render even when the config DB cannot be read
        log.exception("cannot read the desired revision for the page frame")
        return {"unit_name": "", "banner": ""}
    if cfg is None:
        return {"unit_name": "", "banner": ""}
    return {"unit_name": cfg.unit.name, "banner": cfg.web.banner}


def render(page: str, title: str, **extra: Any) -> str:
    return render_template(
        f"{page}.html",
        page=page,
        title=title,
        nav=nav(),
        version=__version__,
        **unit_context(),
        **extra,
    )


ERRORS: dict[int, tuple[str, str]] = {
    400: ("Bad request", "The unit could not read this request."),
    403: ("Not allowed", "Your account's role may not open this page."),
    404: ("Page not found", "There is no page at {path} on this unit."),
    405: ("Not allowed here", "This address does not take a {method} request."),
    413: ("Too large", "The request is larger than the unit accepts."),
    500: ("Something went wrong", "The unit could not show this page; its log has the details."),
}


def error_page(status: int, message: str | None = None) -> tuple[str, int]:
    """The unit's own HTML page for an error on a page address (the API answers JSON)."""
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    title, default = ERRORS.get(status, (phrase, f"The unit answered {status} ({phrase})."))
    text = message or default.format(path=request.path, method=request.method)
    box_id = "not-found" if status == 404 else "error-box"
    page = render("error", title, status=status, message=text, path=request.path, box_id=box_id)
    return page, status


def _view(p: Page) -> Callable[..., str]:
    def view() -> str:
        return render(p.page, p.title)

    view.__name__ = p.page
    view.__doc__ = f"The {p.title} page."
    return view


for _p in PAGES:
    bp.add_url_rule(_p.path, _p.page, require(_p.role, page=True)(_view(_p)))


@bp.get("/tags/<name>")
@require("viewer", page=True)
def tag(name: str) -> str:
    """One tag: live value, history chart, CSV download, write (admin)."""
    if len(name) > 200:
        abort(404)
    return render("tag", name, tag_name=name)


@bp.get("/login")
def login() -> str | Response:
    """Sign in (no session needed); the banner is the unit's configured login banner.
    Someone signed in already goes where the login would have led (Back after a login
    lands here too), unless the page is asked to end the session (?logout=1)."""
    target = safe_next(request.args.get("next"))
    if current_user() is not None and not request.args.get("logout"):
        return redirect(target)
    return render("login", "Sign in", next=target)


@bp.get("/setup")
def setup() -> str:
    """First boot: the one-time setup code and the first admin account."""
    return render("setup", "First-time setup")


@bp.get("/logout")
def logout() -> Response:
    """The page that ends a session with the API (the nav's button does the same)."""
    return redirect("/login?logout=1")
