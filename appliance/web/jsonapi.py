"""JSON answers of the web API: error bodies, an error's status, 201 and 204.

Both the route plumbing (`api.py`) and authentication (`auth.py`) answer with these,
so neither imports the other for them. An error's HTTP status is the one table in
appliance/errors.py (`status_of`).
"""

from __future__ import annotations

from typing import Any

from flask import Response, current_app, jsonify
from werkzeug.exceptions import HTTPException

from appliance import errors, jsontext
from appliance.errors import ApplianceError, ConfigInvalid


def status_of(e: ApplianceError) -> int:
    """The HTTP status of `e`: its `http_status` (see appliance/errors.py)."""
    return errors.status_of(e)


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


def created(data: Any) -> tuple[Response, int]:
    return jsonify(data), 201


def no_content() -> Response:
    return current_app.response_class(status=204)
