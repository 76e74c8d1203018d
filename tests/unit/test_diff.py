"""What changes between two configurations: the summary lines and the unified diff."""

from __future__ import annotations

from typing import Any

from appliance.config.diff import summary, unified
from appliance.config.load import validate_data
from appliance.config.model import Config

from .factory import base, conduit


def cfg(data: dict[str, Any]) -> Config:
    return validate_data(data).config


def test_identical_configurations_have_no_summary_and_no_diff() -> None:
    a, b = cfg(base()), cfg(base())
    assert summary(a, b) == []
    assert unified(a, b, "a", "b") == []


def test_every_other_section_that_changed_has_a_line() -> None:
    # `appliance config diff` said "the same configuration" when only devices, the fleet,
    # webhooks or the web settings changed
    old, new = base(), base()
    new["fleet"] = {"url": "https://fleet.example/hb", "token": "t"}
    new["web"] = {"listen_it": True}
    new["history"] = {"retention_days": 7}
    assert summary(cfg(old), cfg(new)) == ["~ fleet", "~ history", "~ web"]


def test_added_and_removed_conduit() -> None:
    old = base()
    new = base()
    new["conduits"].append(conduit("historian", to=["192.168.50.11"], services=["opcua"]))
    assert summary(cfg(old), cfg(new)) == ["+ conduit historian"]
    assert summary(cfg(new), cfg(old)) == ["- conduit historian"]


def test_changed_conduit_lists_the_fields_sorted() -> None:
    new = base()
    new["conduits"][0]["services"] = ["modbus", "s7"]
    new["conduits"][0]["reason"] = "also S7"
    new["conduits"][0]["expires"] = "2027-01-01T00:00:00Z"
    assert summary(cfg(base()), cfg(new)) == ["~ conduit scada-modbus: expires, reason, services"]


def test_renamed_conduit_is_a_removal_and_an_addition() -> None:
    new = base()
    new["conduits"][0]["name"] = "scada"
    assert summary(cfg(base()), cfg(new)) == ["+ conduit scada", "- conduit scada-modbus"]


def test_interfaces() -> None:
    new = base()
    new["interfaces"][0]["mtu"] = 1500
    new["interfaces"][1]["description"] = "cell 1"
    new["interfaces"].append({"name": "mgmt0", "role": "mgmt", "addresses": ["10.99.0.2/30"]})
    assert summary(cfg(base()), cfg(new)) == [
        "~ interface it0: mtu",
        "+ interface mgmt0",
        "~ interface ot0: description",
    ]


def test_nat_and_unit() -> None:
    new = base()
    new["nat"] = {
        "masquerade": True,
        "one_to_one": [{"it_address": "10.10.0.50", "ot_address": "192.168.50.10"}],
    }
    new["unit"]["site"] = "Hall 2"
    new["unit"]["description"] = "cell 1"
    assert summary(cfg(base()), cfg(new)) == [
        "~ nat.masquerade",
        "~ nat.one_to_one",
        "~ unit: description, site",
    ]


def test_summary_is_sorted_by_subject_not_by_sign() -> None:
    old = base()
    old["conduits"].append(conduit("b-old", to=["192.168.50.12"]))
    new = base()
    new["conduits"].append(conduit("a-new", to=["192.168.50.11"]))
    new["conduits"].append(conduit("c-new", to=["192.168.50.13"]))
    assert summary(cfg(old), cfg(new)) == ["+ conduit a-new", "- conduit b-old", "+ conduit c-new"]


def test_reordering_conduits_changes_nothing_in_the_summary() -> None:
    a = base()
    a["conduits"].append(conduit("second", to=["192.168.50.11"]))
    b = base()
    b["conduits"].insert(0, conduit("second", to=["192.168.50.11"]))
    assert summary(cfg(a), cfg(b)) == []


def test_unified_diff_labels_and_lines() -> None:
    new = base()
    new["conduits"][0]["services"] = ["tcp/503"]
    lines = unified(cfg(base()), cfg(new), "revision 1 (running)", "revision 2 (draft)")
    assert lines[0] == "--- revision 1 (running)"
    assert lines[1] == "+++ revision 2 (draft)"
    assert lines[2].startswith("@@ ")
    assert "-  - modbus" in lines
    assert "+  - tcp/503" in lines
    assert sum(1 for line in lines if line[:1] in "+-" and line[:3] not in ("---", "+++")) == 2
    assert not any(line.endswith("\n") for line in lines)


def test_a_redacted_diff_is_a_diff_of_redacted_documents() -> None:
    """Short values, values YAML folds over two lines, URL credentials: none in the text."""
    long_token = "correct horse battery staple " * 3 + "tr0ub4dor end"
    old, new = base(), base()
    for n, doc in enumerate((old, new)):
        doc["fleet"] = {"url": "https://fleet.example/hb", "token": f"s3cr3t{n}"}
        doc["webhooks"] = [
            {"url": "https://hooks.example/a", "token": f"{long_token} {n}"},
            {"url": f"https://hookuser:hookpass9{n}@hooks.example/b?key=k3y{n}&page={n}"},
        ]
    new["unit"]["site"] = "hall 3"
    plain = "\n".join(unified(cfg(old), cfg(new), "a", "b"))
    assert "s3cr3t1" in plain and "tr0ub4dor" in plain  # the admin's diff is whole
    text = "\n".join(unified(cfg(old), cfg(new), "a", "b", redacted=True))
    for secret in ("s3cr3t", "tr0ub4dor", "correct horse", "hookuser", "hookpass9", "k3y0", "k3y1"):
        assert secret not in text, secret
    assert "+  site: hall 3" in text
    assert "+  token: '[redacted, changed]'" in text
    assert "-- https://[redacted]@hooks.example/b?key=[redacted]&page=0" in text.replace(
        "url: ", ""
    )
