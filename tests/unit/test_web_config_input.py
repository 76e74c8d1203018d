"""The API's side of issue 18's configuration-input review: 422 naming the field, no 500."""

from __future__ import annotations

from pathlib import Path

from .test_web_api import admin, base_doc
from .webkit import Web

DEMO = (Path(__file__).resolve().parents[2] / "examples" / "demo.yaml").read_text()


def test_a_yaml_upload_with_a_5001_digit_integer_is_422(ready: Web) -> None:
    c, h = admin(ready)
    text = DEMO.replace("version: 1\n", "version: 1" + "0" * 5000 + "\n", 1)
    r = c.put("/api/config/draft", data=text, headers={**h, "Content-Type": "text/yaml"})
    assert r.status_code == 422, r.data[:300]
    assert "number too long" in r.json["errors"][0]["message"]
    assert r.json["errors"][0]["line"] == DEMO.splitlines().index("version: 1") + 1


def test_a_yaml_upload_with_a_raw_nul_is_422_on_one_line(ready: Web) -> None:
    c, h = admin(ready)
    text = DEMO.replace("Lab bench", "Lab\0bench")
    r = c.put("/api/config/draft", data=text, headers={**h, "Content-Type": "text/yaml"})
    assert r.status_code == 422, r.data[:300]
    err = r.json["errors"][0]
    assert "\n" not in err["message"] and "U+0000" in err["message"]
    assert err["line"] == DEMO.splitlines().index("  site: Lab bench") + 1


def test_a_nul_in_json_free_text_is_422_naming_the_field(ready: Web) -> None:
    c, h = admin(ready)
    doc = base_doc()
    doc["unit"]["site"] = "a\u0000b"
    r = c.put("/api/config/draft", json=doc, headers=h)
    assert r.status_code == 422, r.data[:300]
    assert r.json["field"] == "unit.site"


def test_version_true_in_json_is_422(ready: Web) -> None:
    c, h = admin(ready)
    doc = base_doc()
    doc["version"] = True
    r = c.put("/api/config/draft", json=doc, headers=h)
    assert r.status_code == 422, r.data[:300]
    assert r.json["field"] == "version"
