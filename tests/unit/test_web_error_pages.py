"""The unit's own error pages (issue 17, item 10) with Flask's test client: an unknown page
address gets the appliance's HTML page (its stylesheet, no script, the path it was asked
for, escaped), never the framework's; under /api the JSON error naming the field; and the
login page sends someone already signed in on to where it leads."""

from __future__ import annotations

from flask import Flask

from .webkit import Web

FRAMEWORK = "The requested URL was not found on the server"


def test_an_unknown_page_gets_the_units_own_404(ready: Web) -> None:
    for client in (ready.client(), ready.login("viewer")):  # signed in or not
        r = client.get("/no-such-page")
        assert r.status_code == 404
        assert r.mimetype == "text/html"
        html = r.get_data(as_text=True)
        assert FRAMEWORK not in html
        assert "<h1>" in html and "Page not found" in html
        assert 'id="not-found"' in html and "/no-such-page" in html
        assert "/assets/app.css" in html
        assert "<script" not in html  # no page module to load (it would be another 404)
        assert r.headers["Content-Security-Policy"].startswith("default-src 'self'")


def test_the_404_page_escapes_the_path(ready: Web) -> None:
    html = ready.client().get("/x<script>alert(1)</script>").get_data(as_text=True)
    assert "<script>alert" not in html
    assert "&lt;script&gt;" in html


def test_an_unknown_api_address_answers_json_naming_no_field(ready: Web) -> None:
    r = ready.login("viewer").get("/api/no-such-thing")
    assert r.status_code == 404 and r.is_json
    assert set(r.json) >= {"error", "field"} and r.json["error"]


def test_other_page_errors_get_the_units_page_too(ready: Web) -> None:
    viewer = ready.login("viewer")
    r = viewer.get("/users")  # admin only
    assert r.status_code == 403 and "Not allowed" in r.get_data(as_text=True)
    r = viewer.post("/login")  # GET only
    assert r.status_code == 405 and "POST" in r.get_data(as_text=True)
    assert "GET" in r.headers["Allow"]  # the framework's header kept
    assert FRAMEWORK not in r.get_data(as_text=True)


def test_an_unexpected_failure_on_a_page_is_the_units_500(web: Web) -> None:
    app: Flask = web.app

    @app.get("/boom")
    def boom() -> str:
        raise RuntimeError("the database went away")

    r = web.client().get("/boom")
    assert r.status_code == 500
    html = r.get_data(as_text=True)
    assert "Something went wrong" in html and "the database went away" not in html


def test_the_login_page_sends_a_signed_in_person_on(ready: Web) -> None:
    client = ready.login("viewer")
    r = client.get("/login?next=/alarms")
    assert r.status_code == 302 and r.headers["Location"].endswith("/alarms")
    r = client.get("/login?next=https://evil.example/")
    assert r.status_code == 302 and r.headers["Location"] == "/"
    # asked to end the session, the page renders (its script ends it)
    assert client.get("/login?logout=1").status_code == 200
    assert ready.client().get("/login?next=/alarms").status_code == 200  # not signed in
