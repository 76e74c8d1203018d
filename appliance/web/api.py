"""The REST API's plumbing: one decorator declares a route, its role, body and answers.

`endpoint(bp, rule, method, role=..., body=Model, query=Model, response=Model)`
registers the view with Flask, wraps it in `auth.require(role)`, validates the
JSON body and the query string with the pydantic models (422 naming the field),
and records the route in `ROUTES`, from which `openapi.py` writes the document:
the models that validate are the models the OpenAPI document shows.

Errors map to HTTP statuses in one place, the table in appliance/errors.py; the JSON
answers (`error_body`, `error_response`, `created`, `no_content`) are in `jsonapi.py`.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from flask import Blueprint, request
from pydantic import BaseModel, ValidationError

from appliance import jsontext
from appliance.config import plain
from appliance.config.load import format_path
from appliance.errors import ApplianceError, BadRequest, ConfigInvalid, Unavailable
from appliance.web.auth import public, require
from appliance.web.jsonapi import (
    created,
    error_body,
    error_response,
    http_error_response,
    no_content,
    status_of,
)

log = logging.getLogger(__name__)

# importers of this module's former contents (the errors are in appliance/errors.py,
# the JSON answers in jsonapi.py)
__all__ = [
    "ROUTES",
    "BadRequest",
    "RouteDoc",
    "Unavailable",
    "created",
    "endpoint",
    "error_body",
    "error_response",
    "http_error_response",
    "json_body",
    "no_content",
    "query_args",
    "raw_json",
    "status_of",
    "validation_errors",
]


def validation_errors(
    e: ValidationError, prefix: str = "", model: type[BaseModel] | None = None
) -> ApplianceError:
    """A pydantic error as ConfigInvalid (422 with every path), paths under `prefix`, each
    message a plain sentence (appliance/config/plain.py, as the configuration's are)."""
    out = []
    for err in e.errors():
        path = format_path(tuple(err["loc"]))
        if prefix:
            path = f"{prefix}.{path}" if path and not path.startswith("[") else prefix + path
        out.append((path, plain.sentence(err, model), None))
    return ConfigInvalid(out or [("", "is not valid", None)])


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
        # a value to blame (a NaN, a number out of range, a key twice) is named by its path
        where = format_path(tuple(e.path)) if e.path else ""
        raise BadRequest(text, field=where or "body") from None


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
    if not isinstance(data, dict):
        raise BadRequest(
            f"the body must be a JSON object, not {_json_kind(data)}", field="body"
        ) from None
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise validation_errors(e, model=model) from None


def _json_kind(data: Any) -> str:
    if data is None:
        return "null"
    return {list: "an array", str: "a string", bool: "a boolean"}.get(type(data), "a number")


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
        raise validation_errors(e, model=model) from None


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
