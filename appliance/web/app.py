"""The web app factory: one blueprint per area, security headers, JSON errors under /api.

`create_app(paths, testing=False, now=time.time)` opens the unit's Store in this
process and registers the API blueprints, then the UI's pages
(`appliance.web.ui.bp`). Every response carries a strict Content-Security-Policy
(no inline script or style), HSTS, nosniff, no referrer and DENY framing; API
answers are never cached. Errors under /api and /metrics are JSON
(`{"error", "field"}`), never HTML and never a traceback.

A request that changes something (any method but GET, HEAD, OPTIONS) from another
site's page is refused (403, an `auth.denied` audit row) before any view runs, whatever
it carries: the browser says so in `Sec-Fetch-Site` (cross-site, same-site) or in an
`Origin` that is not this unit's own `https://<Host>` (`null` included). Scripts send
neither and are not affected. This stands beside the CSRF token, not instead of it.
A doubled slash in a path is not merged into a redirect (werkzeug's would name the
host the request's Host header gave): such a path is simply not found.
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Callable
from typing import Any

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException, InternalServerError
from werkzeug.routing import IntegerConverter

from appliance.errors import ApplianceError
from appliance.field import store as field_store
from appliance.modbusproxy import store as modbus_store
from appliance.paths import Paths
from appliance.state.db import Store
from appliance.web import accounts
from appliance.web.context import LiveCache, WebContext
from appliance.web.jsonapi import error_response, http_error_response
from appliance.web.schemas import MAX_ID

log = logging.getLogger(__name__)

# The tables the web role reads and writes besides the core: accounts, field data.
MODELS = (*accounts.MODELS, *field_store.MODELS, *modbus_store.MODELS)

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; frame-ancestors 'none'; form-action 'self'; "
    "base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Strict-Transport-Security": "max-age=31536000",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), usb=(), serial=()",
}
MAX_BODY = 4 * 1024 * 1024

BLUEPRINTS = (
    "appliance.web.views.session:bp",
    "appliance.web.views.system:bp",  # status
    "appliance.web.views.config:bp",
    "appliance.web.views.conduits:bp",
    "appliance.web.views.field:bp",
    "appliance.web.views.field:alarms_bp",
    "appliance.web.views.events:bp",
    "appliance.web.views.events:audit_bp",
    "appliance.web.views.field:sql_bp",
    "appliance.web.views.users:bp",
    "appliance.web.views.system:system_bp",
    "appliance.web.views.ports:bp",
    "appliance.web.views.modbus:bp",
    "appliance.web.metrics:bp",
    "appliance.web.openapi:bp",
)


class BoundedInt(IntegerConverter):
    """`<int:...>` in our routes: ids are SQLite integers, so larger numbers match no route
    (404) instead of overflowing the database driver."""

    def __init__(self, map: Any, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("max", MAX_ID)
        super().__init__(map, *args, **kwargs)


def _load(spec: str) -> Any:
    module, attr = spec.split(":")
    return getattr(importlib.import_module(module), attr)


def is_api(path: str) -> bool:
    return path.startswith("/api/") or path == "/api" or path == "/metrics"


SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def cross_site() -> str | None:
    """Why this request comes from another site's page (see the module docstring), None
    when it does not say so."""
    site = request.headers.get("Sec-Fetch-Site", "").strip().lower()
    if site in ("cross-site", "same-site"):
        return f"the request comes from another origin (Sec-Fetch-Site: {site})"
    origin = request.headers.get("Origin")
    if origin is not None and origin.strip().lower() != f"https://{request.host}".lower():
        return f"the request comes from another origin ({origin[:100]!r})"
    return None


def create_app(
    paths: Paths,
    *,
    testing: bool = False,
    now: Callable[[], float] = time.time,
    store: Store | None = None,
) -> Flask:
    app = Flask("appliance.web", static_folder=None)
    app.config.update(
        TESTING=testing,
        MAX_CONTENT_LENGTH=MAX_BODY,
        JSON_SORT_KEYS=False,
        PROPAGATE_EXCEPTIONS=False,
        TRAP_HTTP_EXCEPTIONS=False,
    )
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.url_map.converters["int"] = BoundedInt
    app.url_map.merge_slashes = False  # see the module docstring: no Host in a Location
    if store is None:
        store = Store(paths.data_dir, MODELS)
    else:  # the caller's Store: it gains the tables the app reads
        store.ensure(MODELS)
    app.extensions["appliance"] = WebContext(
        paths=paths, store=store, live=LiveCache(paths.run_dir), clock=now, testing=testing
    )
    for spec in BLUEPRINTS:
        app.register_blueprint(_load(spec))
    app.register_blueprint(_load("appliance.web.ui:bp"))  # the pages, after the API

    from appliance.web.auth import csrf_token, current_user

    app.jinja_env.globals["csrf_token"] = csrf_token

    @app.context_processor
    def _user() -> dict[str, Any]:
        return {"current_user": current_user()}

    from appliance.web.ratelimit import ApiRateLimit, retry_after

    limit = ApiRateLimit()

    @app.before_request
    def _rate_limit() -> Any:
        if request.path.startswith("/assets/"):
            return None
        at = now()
        address = request.remote_addr or "unknown"
        header = request.headers.get("Authorization", "")
        bearer = header[7:].strip() if header[:7].lower() == "bearer " else None
        wait = limit.check(address, bearer, at)
        if wait == 0.0:
            return None
        resp = jsonify(limit.refused(address, request.path, wait, at))
        resp.status_code = 429
        resp.headers["Retry-After"] = retry_after(wait)
        return resp

    @app.before_request
    def _audit_gate() -> Any:
        """IEC 62443-4-2 CR 2.10: while the agent finds the audit log cannot be written,
        changes are refused (503) rather than made unaudited; reads, log-ins and log-outs
        go on (a person must be able to see why)."""
        if request.method in SAFE_METHODS or not is_api(request.path):
            return None
        if request.path in ("/api/session", "/api/setup"):
            return None
        c = app.extensions["appliance"]
        doc = c.live.read("agent") or {}
        audit = doc.get("audit") if isinstance(doc, dict) else None
        if not isinstance(audit, dict) or audit.get("ok") is not False:
            return None
        if not c.live.alive("agent", c.now()):  # a stale document decides nothing
            return None
        reason = str(audit.get("reason") or "unknown")[:200]
        resp = jsonify(
            {
                "error": f"changes are refused while the audit log cannot be written ({reason})",
                "field": None,
            }
        )
        resp.status_code = 503
        return resp

    @app.before_request
    def _same_origin() -> Any:
        if request.method in SAFE_METHODS:
            return None
        why = cross_site()
        if why is None:
            return None
        from appliance.web.auth import audit

        audit("auth.denied", target=f"{request.method} {request.path}", result="denied", detail=why)
        resp = jsonify({"error": why, "field": None})
        resp.status_code = 403
        return resp

    @app.after_request
    def _headers(resp: Response) -> Response:
        for k, v in SECURITY_HEADERS.items():
            resp.headers.setdefault(k, v)
        if not request.path.startswith("/assets/"):
            resp.headers["Cache-Control"] = "no-store"
            resp.headers["Pragma"] = "no-cache"
        return resp

    # Pages get the unit's own HTML error page (appliance.web.ui.error_page), never the
    # framework's; the API its JSON error.
    from appliance.web.ui import error_page

    @app.errorhandler(ApplianceError)
    def _appliance_error(e: ApplianceError) -> Any:
        resp, status = error_response(e)
        if is_api(request.path):
            return resp, status
        return error_page(status, str(e))

    @app.errorhandler(HTTPException)
    def _http_error(e: HTTPException) -> Any:
        if is_api(request.path):
            return http_error_response(e)
        if e.code is None or e.code < 400:  # e.g. a routing redirect: werkzeug's own answer
            return e
        body, status = error_page(e.code)
        resp = Response(body, status=status, mimetype="text/html")
        for k, v in e.get_headers():  # e.g. Allow on a 405
            if k.lower() not in ("content-type", "content-length"):
                resp.headers[k] = v
        return resp

    @app.errorhandler(Exception)
    def _internal(e: Exception) -> Any:  # the one place an unexpected error becomes JSON
        log.exception("%s %s failed", request.method, request.path)
        if is_api(request.path):
            return jsonify(
                {"error": "internal error (the unit's log has the details)", "field": None}
            ), 500
        try:
            return error_page(500)
        except Exception:  # the page itself failed (templates, config DB): plain text
            log.exception("the error page failed too")
            return Response(str(InternalServerError.description), 500, mimetype="text/plain")

    return app
