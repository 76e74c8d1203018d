"""The REST API's plumbing: one decorator declares a route, its role, body and answers.

`endpoint(bp, rule, method, role=..., body=Model, query=Model, response=Model)`
registers the view with Flask, wraps it in `auth.require(role)`, validates the
JSON body and the query string with the pydantic models (422 naming the field),
and records the route in `ROUTES`, from which `openapi.py` writes the document:
the models that validate are the models the OpenAPI document shows.

Errors map to HTTP statuses in one place, `status_of`.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request
from pydantic import BaseModel, ValidationError
from werkzeug.exceptions import HTTPException

from appliance import jsontext
from appliance.config.load import format_path
from appliance.errors import ApplianceError, ConfigInvalid

log = logging.getLogger(__name__)


class Unavailable(ApplianceError):
    """Another role this request needs is not running (503)."""

    code = "unavailable"
    exit_code = 10


class BadRequest(ApplianceError):
    code = "bad-request"


STATUS_BY_CODE = {
    "config-invalid": 422,
    "invalid": 422,
    "not-found": 404,
    "conflict": 409,
    "permission-denied": 403,
    "timeout": 504,
    "apply-failed": 409,
    "throttled": 429,
    "unavailable": 503,
    "invalid-request": 400,
    "bad-request": 400,
}


def status_of(e: ApplianceError) -> int:
    return STATUS_BY_CODE.get(e.code, 400)


def error_body(message: str, field: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"error": message, "field": field, **extra}


def error_response(e: ApplianceError) -> tuple[Response, int]:
    # Messages and paths may quote input (a 100 kB key is a path, a validator's message
    # may repr a value): each is clipped, so a refusal never echoes what it refuses.
    clipped = jsontext.clipped
    status = status_of(e)
    if isinstance(e, ConfigInvalid):
        errors = [
            {"path": clipped(p), "message": clipped(m), "line": ln} for p, m, ln in e.errors[:100]
        ]
        first = clipped(e.errors[0][0]) if e.errors else None
        body = error_body(clipped(e.message), first or None, errors=errors)
    else:
        body = error_body(clipped(e.message), clipped(e.field) if e.field else e.field)
    resp = jsonify(body)
    retry = getattr(e, "retry_after", None)
    if retry is not None:
        resp.headers["Retry-After"] = str(max(1, int(retry + 0.999)))
    return resp, status


def http_error_response(e: HTTPException) -> tuple[Response, int]:
    code = e.code or 500
    message = (e.description or e.name or "error").split("\n")[0]
    resp = jsonify(error_body(message))
    if code == 405 and e.response is not None and e.response.headers.get("Allow"):
        resp.headers["Allow"] = e.response.headers["Allow"]
    elif code == 405:
        allow = getattr(e, "valid_methods", None)
        if allow:
            resp.headers["Allow"] = ", ".join(allow)
    return resp, code


def validation_errors(e: ValidationError, prefix: str = "") -> ApplianceError:
    """A pydantic error as ConfigInvalid (422 with every path), paths under `prefix`."""
    out = []
    for err in e.errors():
        path = format_path(tuple(err["loc"]))
        if prefix:
            path = f"{prefix}.{path}" if path and not path.startswith("[") else prefix + path
        msg = err["msg"]
        for p in ("Value error, ", "Assertion failed, "):
            msg = msg.removeprefix(p)
        if err["type"] == "missing":
            msg = "is required"
        elif err["type"] == "extra_forbidden":
            msg = "unknown key"
        out.append((path, msg, None))
    return ConfigInvalid(out or [("", "invalid", None)])


# -- the route registry -----------------------------------------------------------------


@dataclass(frozen=True)
class RouteDoc:
    path: str  # the Flask rule, e.g. /api/revisions/<int:rev_id>
    method: str
    role: str | None  # None: public
    summary: str
    description: str
    body: type[BaseModel] | None
    body_types: tuple[str, ...]
    query: type[BaseModel] | None
    response: type[BaseModel] | dict[str, Any] | None
    status: int
    content: str
    errors: tuple[int, ...]
    tag: str
    extra_schemas: tuple[type[BaseModel], ...] = field(default_factory=tuple)


ROUTES: list[RouteDoc] = []


def _parse(raw: bytes) -> Any:
    """Untrusted JSON text as data: `jsontext.loads` (bounded depth and size, no NaN or
    Infinity, which the json module accepts), BadRequest (400, field `body`) otherwise."""
    try:
        return jsontext.loads(raw)
    except jsontext.BadJson as e:
        why = str(e)  # "is not UTF-8", "nests deeper than ...", "NaN is not a JSON number"
        text = f"the body {why}" if why.startswith(("is ", "nests ")) else f"the body: {why}"
        raise BadRequest(text, field="body") from None


def raw_json() -> Any:
    """The JSON body as data (the view validates it in a wider context)."""
    if request.mimetype != "application/json":
        raise BadRequest("the body must be JSON (Content-Type: application/json)", field="body")
    return _parse(request.get_data(cache=True))


def json_body(model: type[BaseModel], *, allow_empty: bool = False) -> BaseModel:
    if request.mimetype != "application/json":
        if allow_empty and not request.get_data(cache=True):
            return model.model_validate({})
        raise BadRequest("the body must be JSON (Content-Type: application/json)", field="body")
    raw = request.get_data(cache=True)
    if not raw and allow_empty:
        return model.model_validate({})
    data = _parse(raw)
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise validation_errors(e) from None


def query_args(model: type[BaseModel]) -> BaseModel:
    data: dict[str, Any] = {}
    known = {f.alias or n for n, f in model.model_fields.items()}
    for key in request.args:
        if key not in known:
            raise ConfigInvalid([(key, "unknown query parameter", None)])
        data[key] = request.args.get(key)
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise validation_errors(e) from None


def endpoint(
    bp: Blueprint,
    rule: str,
    method: str,
    *,
    role: str | None,
    summary: str,
    body: type[BaseModel] | None = None,
    body_types: tuple[str, ...] = ("application/json",),
    body_optional: bool = False,
    body_raw: bool = False,
    query: type[BaseModel] | None = None,
    response: type[BaseModel] | dict[str, Any] | None = None,
    status: int = 200,
    content: str = "application/json",
    errors: tuple[int, ...] = (),
    extra_schemas: tuple[type[BaseModel], ...] = (),
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a view under `bp` (see the module docstring). The view gets `body=` and
    `query=` keyword arguments with validated models when declared (`body_raw`: the
    parsed JSON, which the view validates itself, e.g. as part of the whole document)."""
    from appliance.web.auth import public, require

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def view(**kw: Any) -> Any:
            if query is not None:
                kw["query"] = query_args(query)
            if body is not None and body_types == ("application/json",):
                kw["body"] = raw_json() if body_raw else json_body(body, allow_empty=body_optional)
            return fn(**kw)

        guarded = require(role)(view) if role else public(view)
        name = f"{fn.__name__}"
        bp.add_url_rule(rule, endpoint=name, view_func=guarded, methods=[method])
        full = (bp.url_prefix or "") + rule
        doc = (fn.__doc__ or "").strip()
        ROUTES.append(
            RouteDoc(
                path=full,
                method=method,
                role=role,
                summary=summary,
                description=doc,
                body=body,
                body_types=body_types,
                query=query,
                response=response,
                status=status,
                content=content,
                errors=errors,
                tag=bp.name,
                extra_schemas=extra_schemas,
            )
        )
        return fn

    return deco


def created(data: Any) -> tuple[Response, int]:
    return jsonify(data), 201


def no_content() -> Response:
    return current_app.response_class(status=204)
