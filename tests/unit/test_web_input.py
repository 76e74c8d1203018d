"""Hostile input to the web API: deep JSON, NaN/Infinity, numbers out of range (issue 18).
Each must be a 4xx naming the field (`body` when the text is not JSON we accept)."""

from __future__ import annotations

from typing import Any

import pytest

from appliance.web.schemas import MAX_EPOCH

from .webkit import Web, error_of

DEEP = b"[" * 100_000 + b"]" * 100_000
JSON = {"Content-Type": "application/json"}


def _post(c: Any, path: str, data: bytes, headers: dict[str, str] | None = None) -> Any:
    return c.post(path, data=data, headers={**JSON, **(headers or {})})


def test_deeply_nested_login_body_is_400_before_login(ready: Web) -> None:
    r = _post(ready.client(), "/api/session", DEEP)
    assert r.status_code == 400 and r.is_json
    assert r.json["field"] == "body" and "nests deeper" in error_of(r)
    r = _post(ready.client(), "/api/session", b'{"username": "admin", "password": ' + DEEP + b"}")
    assert r.status_code == 400 and r.json["field"] == "body"


def test_deeply_nested_raw_body_is_400(ready: Web) -> None:
    a = ready.login("admin")
    r = _post(a, "/api/conduits", DEEP, ready.h(a))
    assert r.status_code == 400 and r.json["field"] == "body"


@pytest.mark.parametrize(
    ("text", "field"),
    [
        # a value JSON has no number for is named where it is (NaN became "never expires")
        (b"NaN", "expires_at"),
        (b"Infinity", "expires_at"),
        (b"-Infinity", "expires_at"),
        (b"1e999", "expires_at"),
        # text that is not JSON at all: the body
        (b"\xff\xfe", "body"),
        (b"{", "body"),
        (b'{"a": 1', "body"),
    ],
    ids=str,
)
def test_bad_json_text_is_400_naming_the_field(ready: Web, text: bytes, field: str) -> None:
    v = ready.login("viewer")
    r = _post(v, "/api/tokens", b'{"name": "t", "expires_at": ' + text + b"}", ready.h(v))
    assert r.status_code == 400 and r.json["field"] == field, r.json
    assert "Traceback" not in r.get_data(as_text=True)


@pytest.mark.parametrize(
    ("body", "kind"),
    [
        (b"[]", "an array"),
        (b"null", "null"),
        (b'"x"', "a string"),
        (b"7", "a number"),
        (b"true", "a boolean"),
    ],
)
def test_a_body_that_is_no_json_object_is_400_naming_the_body(
    ready: Web, body: bytes, kind: str
) -> None:
    v = ready.login("viewer")
    r = _post(v, "/api/tokens", body, ready.h(v))
    assert r.status_code == 400 and r.json["field"] == "body", r.json
    assert r.json["error"] == f"the body must be a JSON object, not {kind}", r.json


@pytest.mark.parametrize("value", [1e300, -1.0, float(MAX_EPOCH) + 1, 10**30])
def test_token_expiry_out_of_range_is_422(ready: Web, value: float) -> None:
    v = ready.login("viewer")
    r = v.post("/api/tokens", json={"name": "t", "expires_at": value}, headers=ready.h(v))
    assert r.status_code == 422 and r.json["field"] == "expires_at", r.json


def test_token_expiry_in_range_still_works(ready: Web) -> None:
    v = ready.login("viewer")
    at = ready.clock() + 86400
    r = v.post("/api/tokens", json={"name": "t", "expires_at": at}, headers=ready.h(v))
    assert r.status_code == 201 and r.json["expires_at"] == at


@pytest.mark.parametrize(
    "query,field",
    [
        ("from=1e300", "from"),
        ("to=1e300", "to"),
        ("from=-1e300", "from"),
        ("from=nan", "from"),
        ("to=inf", "to"),
        ("from=-Infinity", "from"),
        ("limit=99999999999999999999999", "limit"),
    ],
)
def test_history_range_out_of_range_is_422(ready: Web, query: str, field: str) -> None:
    r = ready.login("viewer").get(f"/api/tags/t1/history?{query}")
    assert r.status_code == 422 and r.json["field"] == field, r.json


@pytest.mark.parametrize(
    "value", [10**30, -(10**30), "x" * 5000], ids=["huge", "-huge", "long-string"]
)
def test_tag_write_value_out_of_range_is_422(ready: Web, value: Any) -> None:
    a = ready.login("admin")
    r = a.post("/api/tags/t1/write", json={"value": value}, headers=ready.h(a))
    assert r.status_code == 422 and r.json["field"] == "value", r.json


@pytest.mark.parametrize("value", ["nan", "inf", "1e400", "-inf"])
def test_query_floats_refuse_nan_and_infinity(ready: Web, value: str) -> None:
    r = ready.login("viewer").get(f"/api/tags/t1/history?to={value}")
    assert r.status_code == 422 and r.json["field"] == "to"


@pytest.mark.parametrize(
    ("text", "field"),
    [
        (DEEP, "body"),
        (b'{"unit": ' + DEEP + b"}", "body"),
        (b"NaN", "body"),
        (b'{"unit": {"name": Infinity}}', "unit.name"),  # a value to blame is named
        (b"\xff\xfe{}", "body"),
    ],
    ids=["deep", "deep-in-a-section", "nan", "infinity", "not-utf8"],
)
def test_draft_put_bad_json_is_400_naming_the_field(ready: Web, text: bytes, field: str) -> None:
    """The outside review: a deeply nested draft answered 500 (RecursionError): the view
    parsed with `json.loads` instead of the API's bounded parser."""
    a = ready.login("admin")
    r = a.put("/api/config/draft", data=text, headers={**JSON, **ready.h(a)})
    assert r.status_code == 400 and r.is_json, r.get_data(as_text=True)[:200]
    assert r.json["field"] == field, r.json
    assert a.get("/api/config/draft").status_code == 404  # nothing half-saved


# -- a JSON body's values have JSON's types; text is one line ---------------------------------


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/api/tokens", {"name": "t", "expires_at": True}, "expires_at"),  # was: 1.0, "past"
        ("/api/tokens", {"name": "t", "expires_at": "4102444800"}, "expires_at"),
        ("/api/config/commit", {"confirm_within": "60"}, "confirm_within"),
        ("/api/config/commit", {"confirm_within": True}, "confirm_within"),
        ("/api/config/rollback", {"revision": "1"}, "revision"),
        ("/api/config/rollback", {"revision": 1.0}, "revision"),
        ("/api/sql", {"query": "SELECT 1", "max_rows": "5"}, "max_rows"),  # was: 5 rows
        ("/api/identify", {"seconds": "5"}, "seconds"),
        ("/api/users/viewer", {"disabled": "false"}, "disabled"),  # was: enabled the user
        ("/api/users/viewer", {"disabled": 0}, "disabled"),
    ],
)
def test_a_string_or_boolean_where_json_says_otherwise_is_422(
    ready: Web, path: str, body: dict[str, Any], field: str
) -> None:
    a = ready.login("admin")
    send = a.patch if path.startswith("/api/users/") else a.post
    r = send(path, json=body, headers=ready.h(a))
    assert r.status_code == 422 and r.json["field"] == field, r.json


def test_json_numbers_still_work_where_a_float_is_asked(ready: Web) -> None:
    a = ready.login("admin")
    at = int(ready.clock()) + 86400  # an integer is a fine float
    r = a.post("/api/tokens", json={"name": "t", "expires_at": at}, headers=ready.h(a))
    assert r.status_code == 201, r.json
    r = a.patch("/api/users/viewer", json={"disabled": True}, headers=ready.h(a))
    assert r.status_code == 200 and r.json["disabled"] is True


@pytest.mark.parametrize("text", ["\x1b[31mred", "two\r\nlines", "nul\x00", "\u202eevil"], ids=repr)
def test_a_token_name_with_control_characters_is_422(ready: Web, text: str) -> None:
    # the name goes into the audit log: `appliance audit list` printed the CR LF as a
    # second, forged row
    a = ready.login("admin")
    r = a.post("/api/tokens", json={"name": text}, headers=ready.h(a))
    assert r.status_code == 422 and r.json["field"] == "name", r.json
    assert "character" in error_of(r)


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/config/commit", {"comment": "ok\nadmin [web] user.create: ok"}),
        ("/api/alarms/1/ack", {"comment": "\x1b[2J"}),
    ],
)
def test_a_comment_with_control_characters_is_422(
    ready: Web, path: str, body: dict[str, Any]
) -> None:
    a = ready.login("admin")
    r = a.post(path, json=body, headers=ready.h(a))
    assert r.status_code == 422 and r.json["field"] == "comment", r.json


def test_a_long_comment_of_one_line_is_still_fine(ready: Web) -> None:
    a = ready.login("admin")
    r = a.post("/api/tokens", json={"name": "für die Linie 3 ✓"}, headers=ready.h(a))
    assert r.status_code == 201, r.json
    r = a.post("/api/config/commit", json={"comment": "x" * 500}, headers=ready.h(a))
    assert r.status_code != 422, r.json  # 404: no draft; the comment passed


@pytest.mark.parametrize("comment", ["a\r\nb", "x\u202ey", "c" * 501], ids=["crlf", "bidi", "long"])
def test_the_draft_comment_in_the_query_is_one_line(ready: Web, comment: str) -> None:
    """PUT /api/config/draft?comment=... reached the audit log unchecked (a CR LF made a
    second, forged row in `appliance audit list`)."""
    a = ready.login("admin")
    r = a.put(
        "/api/config/draft",
        query_string={"comment": comment},
        data=b"version: 1\ninterfaces: [{name: it0, role: it}]\n",
        headers={"Content-Type": "text/yaml", **ready.h(a)},
    )
    assert r.status_code == 422 and r.json["field"] == "comment", r.json
    assert a.get("/api/config/draft").status_code == 404  # nothing stored
