"""The OpenAPI 3.1 document at /api/openapi.json, generated from the route registry.

Every route registered with `api.endpoint` is described with its role (in the
description and as `x-role`), its parameters, its body (the pydantic model that
validates it, as JSON Schema under components/schemas), its answer and its errors.
"""

from __future__ import annotations

import re
from typing import Any, get_args

from flask import Blueprint, jsonify
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from appliance import __version__
from appliance.web.api import ROUTES, RouteDoc, endpoint
from appliance.web.auth import COOKIE, CSRF_HEADER
from appliance.web.schemas import MAX_ID, Error

bp = Blueprint("openapi", __name__, url_prefix="/api")

REF = "#/components/schemas/{model}"
STATUS_TEXT = {
    200: "OK",
    201: "Created",
    204: "No content",
    400: "Bad request (the message says what)",
    401: "Not authenticated (no or ended session, unknown token)",
    403: "Not allowed: role too low, CSRF token missing, or setup required",
    404: "Not found",
    409: "Conflict with the current state",
    413: "Body too large",
    415: "Unsupported body type",
    422: "Invalid: `field` and `errors` name the bad fields",
    429: "Too many requests (web.rate_limit) or failed attempts: wait `Retry-After` seconds",
    500: "Internal error",
    502: "A device did not answer or refused (the message says which)",
    503: "A role this needs is not running",
    504: "The role did not answer in time",
}
_CONVERTER = re.compile(r"<(?:(\w+):)?(\w+)>")


def openapi_path(rule: str) -> tuple[str, list[tuple[str, str]]]:
    """Flask rule → OpenAPI path and its (name, converter) parameters."""
    params = [(name, conv or "string") for conv, name in _CONVERTER.findall(rule)]
    return _CONVERTER.sub(lambda m: "{" + m.group(2) + "}", rule), params


def _models(routes: list[RouteDoc]) -> list[type[BaseModel]]:
    seen: dict[str, type[BaseModel]] = {"Error": Error}
    for r in routes:
        for m in (r.body, r.query, r.response, *r.extra_schemas):
            if isinstance(m, type) and issubclass(m, BaseModel):
                seen[m.__name__] = m
    return list(seen.values())


def _schema_ref(m: type[BaseModel] | dict[str, Any] | None) -> dict[str, Any] | None:
    if m is None:
        return None
    if isinstance(m, dict):
        return m
    return {"$ref": REF.format(model=m.__name__)}


def _query_params(model: type[BaseModel], schemas: dict[str, Any]) -> list[dict[str, Any]]:
    schema = schemas[model.__name__]
    required = set(schema.get("required", []))
    out = []
    for name, prop in schema.get("properties", {}).items():
        out.append(
            {
                "name": name,
                "in": "query",
                "required": name in required,
                "schema": {k: v for k, v in prop.items() if k != "title"},
                **({"description": prop["description"]} if "description" in prop else {}),
            }
        )
    return out


def _error_codes(r: RouteDoc) -> list[int]:
    codes = set(r.errors)
    if r.role is not None:
        codes |= {401, 403}
    if r.method not in ("GET", "HEAD"):
        codes |= {403}  # CSRF
    if r.body is not None or r.method in ("PUT", "POST", "PATCH"):
        codes |= {400, 413, 415, 422}
    if r.query is not None:
        codes |= {400, 422}  # 422: a parameter is invalid; 400: they disagree (end before start)
    if "<" in r.path:
        codes |= {404}
    codes |= {429}  # the rate limit (appliance.web.ratelimit) answers before any view
    return sorted(codes | {500})


def _answers_csv(r: RouteDoc) -> bool:
    """Whether the route's query has a `format` that can be csv (it answers text/csv then)."""
    field = r.query.model_fields.get("format") if r.query is not None else None
    return field is not None and "csv" in get_args(field.annotation)


def build() -> dict[str, Any]:
    routes = list(ROUTES)
    models = _models(routes)
    _, top = models_json_schema([(m, "validation") for m in models], ref_template=REF)
    schemas: dict[str, Any] = dict(top.get("$defs", {}))
    paths: dict[str, dict[str, Any]] = {}
    for r in routes:
        path, params = openapi_path(r.path)
        op: dict[str, Any] = {
            "operationId": f"{r.method.lower()}_{r.path.strip('/').replace('/', '_')}".replace(
                "<", ""
            )
            .replace(">", "")
            .replace(":", "_")
            .replace("-", "_")
            .replace(".", "_"),
            "summary": r.summary,
            "description": (
                (r.description + "\n\n" if r.description else "")
                + (f"Role: **{r.role}** or higher." if r.role else "Role: none (public).")
            ),
            "tags": [r.tag],
            "x-role": r.role or "public",
        }
        parameters = [
            {
                "name": name,
                "in": "path",
                "required": True,
                "schema": {"type": "integer", "minimum": 1, "maximum": MAX_ID}
                if conv == "int"
                else {"type": "string", "minLength": 1, "pattern": "^[^/]+$"},
            }
            for name, conv in params
        ]
        if r.query is not None:
            parameters += _query_params(r.query, schemas)
        if r.method not in ("GET", "HEAD") and r.role is not None:
            parameters.append(
                {
                    "name": CSRF_HEADER,
                    "in": "header",
                    "required": False,
                    "description": "the session's CSRF token (not needed with a token)",
                    "schema": {"type": "string"},
                }
            )
        if parameters:
            op["parameters"] = parameters
        if r.body is not None:
            content = {t: {"schema": _schema_ref(r.body)} for t in r.body_types}
            if "text/yaml" in content:
                content["text/yaml"] = {"schema": {"type": "string"}}
            op["requestBody"] = {"required": True, "content": content}
        elif r.method in ("PUT", "POST", "PATCH") and r.path.endswith("<section>"):
            op["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": {}}},
                "description": "the section's value",
            }
        ok: dict[str, Any] = {"description": STATUS_TEXT.get(r.status, "OK")}
        if r.status != 204 and r.response is not None:
            ok["content"] = {r.content: {"schema": _schema_ref(r.response)}}
            if _answers_csv(r):
                ok["content"]["text/csv"] = {"schema": {"type": "string"}}
        responses: dict[str, Any] = {str(r.status): ok}
        for code in _error_codes(r):
            responses[str(code)] = {
                "description": STATUS_TEXT.get(code, "Error"),
                "content": {"application/json": {"schema": {"$ref": REF.format(model="Error")}}},
            }
        op["responses"] = responses
        if r.role is not None:
            op["security"] = [{"bearerAuth": []}, {"cookieAuth": []}]
        elif r.path == "/metrics":
            op["security"] = [{"bearerAuth": []}, {"cookieAuth": []}, {}]
        else:
            op["security"] = [{}]
        paths.setdefault(path, {})[r.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "IT/OT demarcation appliance API",
            "version": __version__,
            "description": (
                "The REST API the local web UI uses. Authenticate with a session cookie "
                f"(POST /api/session; send `{CSRF_HEADER}` on every non-GET) or an API token "
                "(`Authorization: Bearer <token>`). Roles: viewer < operator < admin."
            ),
        },
        "servers": [{"url": "/"}],
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": dict(sorted(schemas.items())),
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer"},
                "cookieAuth": {"type": "apiKey", "in": "cookie", "name": COOKIE},
            },
        },
    }


_cache: dict[str, Any] = {}


@endpoint(
    bp, "/openapi.json", "GET", role=None, summary="This document", response={"type": "object"}
)
def openapi() -> Any:
    if "doc" not in _cache:
        _cache["doc"] = build()
    return jsonify(_cache["doc"])
