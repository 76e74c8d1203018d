"""The fleet receiver's web application (Flask): the heartbeat API and the operator pages.

Units authenticate with `Authorization: Bearer <token>` (the receiver stores
only the token's SHA-256). Operators log in with the password set by
`appliance fleet set-password` (argon2), or nobody logs in with `--open` (a
lab). A login is a row in the receiver's sessions table (store.OperatorSession)
whose random id the signed cookie carries: logging out, a new password or the
12 h expiry ends it on the server, whatever copy of the cookie survives. After
login the user goes back only to a local page (appliance.redirects.safe_next).
Every JSON body, the heartbeats' and the operator API's, is read by
validate.parse_json (bounded depth, no NaN/Infinity) and checked for values no
database column holds. Operator pages post forms carrying a CSRF token; the JSON twins under
/api/v1/units take the same token in an `X-CSRF-Token` header and only JSON
bodies; so does `DELETE /api/v1/session` (logout) once there is a session to end.
Errors map to HTTP statuses in one place, the table in appliance/errors.py (`_status`).
"""

from __future__ import annotations

import hmac
import logging
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from functools import wraps
from pathlib import Path
from typing import Any

import peewee as pw
from flask import (
    Flask,
    Response,
    flash,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from werkzeug.exceptions import HTTPException

from appliance import __version__
from appliance.errors import (
    ApplianceError,
    BadRequest,
    Conflict,
    PermissionDenied,
    TooManyAttempts,
    Unauthorized,
    UnsupportedMediaType,
    status_of,
)
from appliance.fleet import store, view
from appliance.fleet.validate import (
    AGENT_SCHEMA_PATH,
    HeartbeatValidator,
    UnitQuery,
    bearer_token,
    check_interval,
    check_keep_days,
    check_keep_heartbeats,
    check_limit,
    check_placement,
    idempotency_key,
    load_agent_schema,
    parse_json,
    unit_query,
    value_errors,
)
from appliance.redirects import safe_next

log = logging.getLogger("appliance.fleet")

MAX_BODY = 4 * 1024 * 1024  # a heartbeat carries at most 500 events: far below this
LOGIN_WINDOW_S = 300
LOGIN_MAX_FAILURES = 10
PRUNE_EVERY_S = 3600  # pruning runs about once an hour, in one worker process at a time
PRUNE_AGAIN_S = 10  # ...and again soon while a backlog is left
PRUNE_BUDGET_S = 0.25  # the heartbeat that runs it waits at most about this long
PRUNE_CHECK_S = 60  # how often a worker asks the database whether pruning is due
KEEP_HEARTBEATS = 1000  # per unit: 16 h at the default 60 s interval
SESSION_HOURS = 12


# The role each operator route needs (viewer < operator < admin: store.ROLES). Every
# endpoint of the URL map is here or in PUBLIC_ENDPOINTS, else create_app refuses to
# build the receiver; tests/fleet/test_fleet_roles.py walks the map with each role.
ENDPOINT_ROLES: dict[str, str] = {
    "index": "viewer",
    "unit_page": "viewer",
    "api_units": "viewer",
    "api_unit": "viewer",
    "api_stats": "viewer",
    "api_facets": "viewer",
    "unit_identify": "operator",
    "unit_interval": "operator",
    "unit_placement": "operator",
    "api_identify": "operator",
    "api_interval": "operator",
    "api_placement": "operator",
    "api_operators": "admin",
    "api_operator_set": "admin",
    "api_operator_delete": "admin",
}
# units authenticate by token; logging in and out; probes; the stylesheet
PUBLIC_ENDPOINTS = frozenset(
    {
        "heartbeat",
        "ping",
        "login",
        "logout",
        "session_get",
        "session_post",
        "session_delete",
        "static",
    }
)


@dataclass(frozen=True)
class _OpenOperator:
    name: str = "open"
    role: str = "admin"


OPEN_OPERATOR: Any = _OpenOperator()


def _status(e: ApplianceError) -> int:
    """An error's HTTP status: the one table in appliance/errors.py."""
    return status_of(e)


def create_app(
    db_url: str | None = None,
    *,
    open_access: bool = False,
    secure_cookies: bool = True,
    keep_days: float | None = 90,
    keep_heartbeats: int | None = KEEP_HEARTBEATS,
    heartbeat_schema: Path | None = AGENT_SCHEMA_PATH,
    clock: Callable[[], float] = time.time,
) -> Flask:
    """The receiver for the database at `db_url` (see appliance.fleet.store for URLs).

    `open_access` lets anyone operate (a lab); `secure_cookies` marks the session
    cookie Secure (off only when serving plain HTTP); `keep_days` is how long
    heartbeats and events are kept (None: forever), `keep_heartbeats` how many of each
    unit's newest heartbeats (None: no limit); `heartbeat_schema` is the agent's JSON
    Schema (None or a missing file: the receiver's minimal checks only).
    """
    keep_days = check_keep_days(keep_days)
    keep_heartbeats = check_keep_heartbeats(keep_heartbeats)
    store.open_db(db_url)
    db = store.fleet_db  # the proxy: whatever database open_db bound last in this process
    agent_schema = load_agent_schema(heartbeat_schema) if heartbeat_schema else None
    validator = HeartbeatValidator(agent_schema)
    with db.connection_context():
        secret = store.secret_key()
    store.release_connections()

    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=secret,
        MAX_CONTENT_LENGTH=MAX_BODY,
        SESSION_COOKIE_NAME="fleet_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SECURE=secure_cookies,
        SESSION_COOKIE_SAMESITE="Strict",
        PERMANENT_SESSION_LIFETIME=timedelta(hours=SESSION_HOURS),
        TEMPLATES_AUTO_RELOAD=False,
        FLEET_OPEN=open_access,
        FLEET_DB=store.redact_url(store.normalize_url(db_url)),
        FLEET_SCHEMA="agent" if agent_schema else "minimal",
    )
    prune_state = {"check_at": 0.0}

    # -- per request: the database connection, security headers -------------------

    @app.before_request
    def _connect() -> None:
        db.connect(reuse_if_open=True)

    @app.teardown_request
    def _close(_exc: BaseException | None) -> None:
        if not db.is_closed():
            db.close()

    @app.after_request
    def _headers(resp: Response) -> Response:
        resp.headers["Content-Security-Policy"] = (
            "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
            "frame-ancestors 'none'; base-uri 'none'"
        )
        resp.headers["X-Content-Type-Options"] = "nosniff"
        resp.headers["X-Frame-Options"] = "DENY"
        resp.headers["Referrer-Policy"] = "no-referrer"
        if not request.path.startswith("/static/"):
            resp.headers["Cache-Control"] = "no-store"
        return resp

    # -- errors: JSON under /api, a page elsewhere ---------------------------------------

    def _is_api() -> bool:
        return request.path.startswith("/api/")

    @app.errorhandler(ApplianceError)
    def _appliance_error(e: ApplianceError) -> Any:
        status = _status(e)
        if _is_api():
            body = e.as_dict() if isinstance(e, BadRequest) else {"error": str(e), "field": e.field}
            resp = jsonify(body)
            resp.status_code = status
            if status == 401:
                resp.headers["WWW-Authenticate"] = 'Bearer realm="fleet"'
            return resp
        return render_template("error.html", status=status, message=str(e)), status

    @app.errorhandler(HTTPException)
    def _http_error(e: HTTPException) -> Any:
        status = e.code or 500
        message = {
            404: "no such page",
            405: "method not allowed here",
            413: f"request body too large (limit {MAX_BODY // 1024 // 1024} MiB)",
        }.get(status, e.description or e.name)
        if _is_api():
            resp = jsonify({"error": message, "field": "body" if status == 413 else None})
            resp.status_code = status
            return resp
        return render_template("error.html", status=status, message=message), status

    @app.errorhandler(pw.DatabaseError)
    def _db_error(e: pw.DatabaseError) -> Any:
        log.error("database error on %s %s: %s", request.method, request.path, e)
        message = "the fleet database is not available; try again"
        if _is_api():
            resp = jsonify({"error": message, "field": None})
            resp.status_code = 503
            return resp
        return render_template("error.html", status=503, message=message), 503

    # -- the unit side --------------------------------------------------------------------

    @app.post("/api/v1/heartbeat")
    def heartbeat() -> Any:
        try:
            token = bearer_token(request.headers.get("Authorization"))
        except BadRequest as e:
            raise Unauthorized(e.message, field="Authorization")
        unit = store.unit_by_token(token)
        if unit is None:
            log.warning("heartbeat with an unknown token from %s", request.remote_addr)
            raise Unauthorized("unknown unit token", field="Authorization")
        if request.mimetype != "application/json":  # text/plain or none: not a heartbeat
            raise UnsupportedMediaType("must be application/json", "Content-Type")
        raw = request.get_data(cache=False)
        try:
            hb = validator.parse(raw)
            key = idempotency_key(request.headers.get("Idempotency-Key"), hb, raw)
        except BadRequest as e:
            # str(e) is the first finding, its path and value cut short (validate.py)
            log.warning("heartbeat of %s refused: %s", unit.name, e)
            raise
        now = clock()
        receipt = store.record(unit, hb, key, now)
        if now >= prune_state["check_at"]:
            prune_state["check_at"] = now + PRUNE_CHECK_S
            _maintain(now)
        return jsonify(receipt.as_dict())

    def _maintain(now: float) -> None:
        """Retention, in bounded batches, by the one worker that claims it (store.prune)."""
        if not store.claim_job("prune", now, PRUNE_EVERY_S):
            return
        before = now - keep_days * 86400 if keep_days else None
        pruned = store.prune(before, keep_heartbeats, budget_s=PRUNE_BUDGET_S)
        if pruned.heartbeats or pruned.events:
            log.info("pruned %d heartbeats, %d events", pruned.heartbeats, pruned.events)
        if not pruned.done:
            store.reschedule_job("prune", now + PRUNE_AGAIN_S)
            prune_state["check_at"] = now + PRUNE_AGAIN_S
        store.prune_sessions(now)
        store.prune_login_failures(now)

    @app.get("/api/v1/ping")
    def ping() -> Any:
        return jsonify({"ok": True, "version": __version__})

    # -- operator access ------------------------------------------------------------------

    def _operator() -> store.Operator | None:
        """The operator the cookie's live server-side session names, with their role as it
        is now (logout, expiry, a new password or a removed account end it there; the
        signed cookie alone proves nothing). --open: everyone is an admin."""
        if open_access:
            return OPEN_OPERATOR
        if "fleet_operator" not in g:
            g.fleet_operator = store.session_operator(session.get("sid"), clock())
        return g.fleet_operator  # type: ignore[no-any-return]

    def _logged_in() -> bool:
        return _operator() is not None

    def _logout() -> None:
        store.end_session(session.get("sid"))
        session.clear()
        g.fleet_operator = None

    @app.before_request
    def _authorize() -> Any:
        """Every route's role from ENDPOINT_ROLES (checked against the URL map below):
        public ones pass, the others need a session whose operator has the role."""
        needed = ENDPOINT_ROLES.get(request.endpoint or "")
        if needed is None:  # public, or no such route (404 follows)
            return None
        op = _operator()
        if op is None:
            if _is_api():
                raise Unauthorized("log in first (POST /api/v1/session)", field="session")
            return redirect(url_for("login", next=request.path))
        if store.role_rank(op.role) < store.role_rank(needed):
            raise PermissionDenied(
                f"this needs the {needed} role ({op.name} is {op.role})", field="role"
            )
        return None

    def _csrf() -> str:
        token = session.get("csrf")
        if not token:
            token = secrets.token_urlsafe(32)
            session["csrf"] = token
        return token

    def _check_csrf(given: str | None) -> None:
        expected = session.get("csrf")
        if not expected or not given or not hmac.compare_digest(expected, given):
            raise PermissionDenied("missing or stale CSRF token: reload the page", field="csrf")

    def _actor() -> str:
        op = _operator()
        who = "open" if open_access or op is None else op.name
        return f"{who}@{request.remote_addr or '?'}"

    app.jinja_env.globals.update(csrf_token=_csrf)

    @app.context_processor
    def _globals() -> dict[str, Any]:
        return {
            "view": view,
            "now": clock(),
            "open_access": open_access,
            "logged_in": _logged_in(),
            "operator": _operator(),
            "version": __version__,
        }

    def operator_page(fn: Callable[..., Any]) -> Callable[..., Any]:
        @wraps(fn)
        def wrapper(*args: Any, **kw: Any) -> Any:
            if not _logged_in():
                return redirect(url_for("login", next=request.path))
            if request.method == "POST":
                _check_csrf(request.form.get("csrf_token"))
            return fn(*args, **kw)

        return wrapper

    def operator_api(fn: Callable[..., Any]) -> Callable[..., Any]:
        @wraps(fn)
        def wrapper(*args: Any, **kw: Any) -> Any:
            if not _logged_in():
                raise Unauthorized("log in first (POST /api/v1/session)", field="session")
            if request.method == "POST":
                if not request.is_json:
                    raise BadRequest("must be application/json", "Content-Type")
                if not open_access:
                    _check_csrf(request.headers.get("X-CSRF-Token"))
            return fn(*args, **kw)

        return wrapper

    def _login(password: str, name: str) -> None:
        address = request.remote_addr or "?"
        now = clock()
        # counted before the hash (store.login_attempt): a burst is no way round the limit
        attempt = store.login_attempt(address, now, now - LOGIN_WINDOW_S, LOGIN_MAX_FAILURES)
        if attempt is None:
            raise TooManyAttempts(
                f"too many failed logins from {address}; wait {LOGIN_WINDOW_S // 60} minutes",
                field="password",
            )
        if not store.has_operators():
            store.forget_login_failure(attempt)
            raise Unauthorized(
                "no operator password is set: run `appliance fleet set-password` on the receiver",
                field="password",
            )
        op = store.verify_password(password, name)
        if op is None:
            log.warning("failed operator login from %s", address)
            raise Unauthorized("wrong operator name or password", field="password")
        store.clear_login_failures(address)
        store.end_session(session.get("sid"))
        session.clear()
        session.permanent = True
        session["sid"] = store.open_session(now, SESSION_HOURS * 3600, address, op.name)
        session["csrf"] = secrets.token_urlsafe(32)
        g.fleet_operator = op

    @app.route("/login", methods=["GET", "POST"])
    def login() -> Any:
        nxt = safe_next(request.values.get("next"))
        if open_access or _logged_in():
            return redirect(nxt)
        error = None
        status = 200
        if request.method == "POST":
            try:
                _check_csrf(request.form.get("csrf_token"))
                _login(request.form.get("password", ""), _login_name(request.form.get("name")))
                return redirect(nxt)
            except ApplianceError as e:
                error = e.message
                status = _status(e)
        return (
            render_template(
                "login.html",
                error=error,
                next=nxt,
                no_password=not store.has_operators(),
                name=request.form.get("name"),
            ),
            status,
        )

    @app.post("/logout")
    def logout() -> Any:
        _check_csrf(request.form.get("csrf_token"))
        _logout()
        return redirect(url_for("login"))

    def _login_name(name: Any) -> str:
        """The operator logging in ("admin" when not given: the one account of before)."""
        if name is None or name == "":
            return store.DEFAULT_OPERATOR
        if not isinstance(name, str):
            raise BadRequest("must be a string", "name")
        return name.strip()

    def _whoami() -> dict[str, Any]:
        op = _operator()
        return {"name": op.name, "role": op.role} if op else {}

    @app.get("/api/v1/session")
    def session_get() -> Any:
        return jsonify(
            {
                "authenticated": _logged_in(),
                "open": open_access,
                "csrf": _csrf(),
                "operator": _whoami() or None,
            }
        )

    @app.post("/api/v1/session")
    def session_post() -> Any:
        data = _json_body()
        password = data.get("password")
        if not isinstance(password, str):
            raise BadRequest("must be a string", "password")
        _login(password, _login_name(data.get("name")))
        return jsonify({"authenticated": True, "csrf": session["csrf"], "operator": _whoami()})

    @app.delete("/api/v1/session")
    def session_delete() -> Any:
        # like POST /logout: a page elsewhere must not end the operator's session
        if session.get("sid"):
            _check_csrf(request.headers.get("X-CSRF-Token"))
        _logout()
        return jsonify({"authenticated": False})

    def _json_body() -> dict[str, Any]:
        """The request's JSON object, read as heartbeats are (bounded depth, no NaN,
        numbers and strings a database can hold), or BadRequest naming the field."""
        if not request.is_json:
            raise BadRequest("must be application/json", "Content-Type")
        data = parse_json(request.get_data(cache=True))
        if not isinstance(data, dict):
            raise BadRequest("must be a JSON object", "body")
        errors = value_errors(data)
        if errors:
            raise BadRequest(errors[0]["message"], errors[0]["path"], errors)
        return data

    # -- operator pages -------------------------------------------------------------------

    @app.get("/")
    @operator_page
    def index() -> Any:
        try:
            query = unit_query(request.args)
        except BadRequest as e:
            query, error = UnitQuery(), e
        else:
            error = None
        found = store.find_units(query)
        args = {k: v for k, v in request.args.items() if k != "page" and v}
        return (
            render_template(
                "units.html",
                found=found,
                units=found.units,
                facets=store.facets(),
                query=query,
                filtered=bool(args),
                args=args,
                error=error,
            ),
            400 if error else 200,
        )

    def _unit_page(name: str, errors: dict[str, str] | None = None, status: int = 200) -> Any:
        unit = store.get_unit(name)
        limit = check_limit(request.args.get("limit"))
        beats = store.heartbeats(unit, limit)
        latest = beats[0].as_dict(with_body=True) if beats else None
        return (
            render_template(
                "unit.html",
                unit=unit,
                reasons=unit.as_dict()["health"]["reasons"],
                heartbeats=[b.as_dict() for b in beats],
                timeline=[b.as_dict() for b in reversed(beats)],
                latest=latest,
                report=view.report_summary(latest["body"] if latest else None),
                groups=store.groups_of([unit.id]).get(unit.id, []),
                events=[e.as_dict() for e in store.events(unit, 200)],
                errors=errors or {},
                form=request.form if errors else {},
                limit=limit,
            ),
            status,
        )

    @app.get("/units/<name>")
    @operator_page
    def unit_page(name: str) -> Any:
        return _unit_page(name)

    @app.post("/units/<name>/identify")
    @operator_page
    def unit_identify(name: str) -> Any:
        store.request_identify(name, _actor(), clock())
        flash("identify requested: the unit blinks after its next heartbeat", "ok")
        return redirect(url_for("unit_page", name=name))

    @app.post("/units/<name>/placement")
    @operator_page
    def unit_placement(name: str) -> Any:
        store.get_unit(name)
        groups = [g for g in re.split(r"[\s,]+", request.form.get("groups", "")) if g]
        try:
            site, groups = check_placement({"site": request.form.get("site", ""), "groups": groups})
        except BadRequest as e:
            field = "groups" if (e.field or "").startswith("groups") else "site"
            return _unit_page(name, errors={field: e.message}, status=400)
        store.set_placement(name, site, groups)
        flash("site and groups saved", "ok")
        return redirect(url_for("unit_page", name=name))

    @app.post("/units/<name>/interval")
    @operator_page
    def unit_interval(name: str) -> Any:
        store.get_unit(name)
        try:
            seconds = check_interval(request.form.get("interval"))
        except BadRequest as e:
            return _unit_page(name, errors={"interval": e.message}, status=400)
        store.request_interval(name, seconds, _actor(), clock())
        if seconds is None:
            flash("interval request withdrawn: the unit keeps its configured interval", "ok")
        else:
            flash(
                f"interval {view.seconds_text(seconds)} requested: the unit takes it with "
                "its next heartbeat",
                "ok",
            )
        return redirect(url_for("unit_page", name=name))

    # -- JSON twins ----------------------------------------------------------------------

    @app.get("/api/v1/units")
    @operator_api
    def api_units() -> Any:
        """A page of the units (a JSON list, as before paging); X-Total-Count and a Link
        header (rel="next", "prev") say where the rest is."""
        query = unit_query(request.args)
        found = store.find_units(query)
        now = clock()
        resp = jsonify([_unit_json(u, now, found.groups.get(u.id, [])) for u in found.units])
        resp.headers["X-Total-Count"] = str(found.total)
        resp.headers["X-Page"] = str(query.page)
        resp.headers["X-Pages"] = str(found.pages)
        links = []
        for rel, page in (("prev", query.page - 1), ("next", query.page + 1)):
            if 1 <= page <= found.pages:
                args = {**request.args.to_dict(), "page": str(page)}
                links.append(f'<{url_for("api_units", **args)}>; rel="{rel}"')
        if links:
            resp.headers["Link"] = ", ".join(links)
        return resp

    @app.get("/api/v1/facets")
    @operator_api
    def api_facets() -> Any:
        return jsonify(store.facets())

    @app.post("/api/v1/units/<name>/placement")
    @operator_api
    def api_placement(name: str) -> Any:
        store.get_unit(name)
        site, groups = check_placement(_json_body())
        unit = store.set_placement(name, site, groups)
        return jsonify(_unit_json(unit, clock()))

    @app.get("/api/v1/stats")
    @operator_api
    def api_stats() -> Any:
        return jsonify(
            {
                **store.stats(),
                "retention": {"keep_days": keep_days, "keep_heartbeats": keep_heartbeats},
            }
        )

    @app.get("/api/v1/units/<name>")
    @operator_api
    def api_unit(name: str) -> Any:
        unit = store.get_unit(name)
        limit = check_limit(request.args.get("limit"))
        return jsonify(
            {
                **_unit_json(unit, clock()),
                "history": [b.as_dict() for b in store.heartbeats(unit, limit)],
                "events": [e.as_dict() for e in store.events(unit, limit)],
            }
        )

    @app.post("/api/v1/units/<name>/identify")
    @operator_api
    def api_identify(name: str) -> Any:
        unit = store.request_identify(name, _actor(), clock())
        return jsonify(_unit_json(unit, clock()))

    @app.post("/api/v1/units/<name>/interval")
    @operator_api
    def api_interval(name: str) -> Any:
        data = _json_body()
        if "interval" not in data:
            raise BadRequest("is required (seconds, or null to withdraw)", "interval")
        seconds = check_interval(data["interval"])
        unit = store.request_interval(name, seconds, _actor(), clock())
        return jsonify(_unit_json(unit, clock()))

    @app.get("/api/v1/operators")
    @operator_api
    def api_operators() -> Any:
        return jsonify([o.as_dict() for o in store.operators()])

    @app.post("/api/v1/operators")
    @operator_api
    def api_operator_set() -> Any:
        """Make an operator or change one: {"name", "role"?, "password"?} (a new one needs
        both); a new password ends that operator's sessions."""
        data = _json_body()
        unknown = sorted(set(data) - {"name", "role", "password"})
        if unknown:
            raise BadRequest("unknown field (name, role, password)", unknown[0])
        name = store.check_operator_name(data.get("name"))
        role = store.check_role(data["role"]) if "role" in data else None
        password = data.get("password")
        if password is not None and not isinstance(password, str):
            raise BadRequest("must be a string", "password")
        exists = store.password_hash(name) is not None
        if not exists and (password is None or role is None):
            raise BadRequest("a new operator needs a role and a password", "password")
        if password is not None:
            op = store.set_password(password, name, role)
        elif role is not None:
            op = store.set_role(name, role)
        else:
            raise BadRequest("give a role, a password or both", "role")
        log.info("operator %s: %s by %s", name, "changed" if exists else "made", _actor())
        return jsonify(op.as_dict())

    @app.delete("/api/v1/operators/<name>")
    @operator_api
    def api_operator_delete(name: str) -> Any:
        if not open_access:
            _check_csrf(request.headers.get("X-CSRF-Token"))
        me = _operator()
        if me is not None and me.name == name:
            raise Conflict("you cannot remove yourself", field="name")
        store.remove_operator(name)
        return jsonify({"removed": name})

    # every route has its role, or the receiver does not start (fail closed)
    missing = sorted(
        {r.endpoint for r in app.url_map.iter_rules()} - set(ENDPOINT_ROLES) - PUBLIC_ENDPOINTS
    )
    if missing:
        raise ApplianceError(f"routes without a role in ENDPOINT_ROLES: {', '.join(missing)}")

    def _unit_json(unit: store.Unit, now: float, groups: list[str] | None = None) -> dict[str, Any]:
        out = unit.as_dict(groups)
        out["overdue"] = view.overdue(now, unit.last_seen, unit.interval_request, unit.last_gap)
        return out

    return app
