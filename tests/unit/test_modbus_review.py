"""The conduit review: expired, expiring, disabled, unused, wider than their traffic, an
owner nobody can reach; and `appliance conduits review`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from appliance.config.load import validate_data
from appliance.modbusproxy.assets import Asset, Inventory
from appliance.modbusproxy.cli import conduits
from appliance.modbusproxy.review import review
from appliance.modbusproxy.store import StoreRecords
from appliance.state import revisions as revs
from appliance.state.db import Store

from . import factory

NOW = 1767225600.0  # 2026-01-01 00:00 UTC
DAY = 86400.0


def conduit(name: str, **fields: Any) -> dict[str, Any]:
    c = {
        "name": name,
        "owner": "ot-team <ot@plant.example>",
        "reason": "test",
        "from": ["10.10.0.2"],
        "to": ["192.168.50.10"],
        "services": ["modbus"],
    }
    return {**c, **fields}


def config(*cs: dict[str, Any]) -> Any:
    doc = factory.base()
    doc["conduits"] = list(cs)
    return validate_data(doc, now=None).config


def kinds(findings: list[Any]) -> list[tuple[str, str]]:
    return [(f.conduit, f.kind) for f in findings]


def test_a_tidy_conduit_has_no_finding() -> None:
    inv = Inventory()
    inv.saw("192.168.50.10", "a", "10.10.0.2", {1 << 8 | 3}, NOW - DAY)
    cfg = config(conduit("a", modbus="read-only"))
    assert review(cfg, NOW, unused_days=30, assets=inv.items.values()) == []


def test_expiry_and_disabled() -> None:
    cfg = config(
        conduit("gone", expires="2025-12-30T00:00:00Z"),
        conduit("soon", expires="2026-01-04T12:00:00Z", to=["192.168.50.11"]),
        conduit("later", expires="2026-02-01T00:00:00Z", to=["192.168.50.12"]),
        conduit("off", enabled=False, to=["192.168.50.13"]),
    )
    found = review(cfg, NOW, unused_days=30)
    assert kinds(found) == [("gone", "expired"), ("soon", "expiring"), ("off", "disabled")]
    assert found[0].message == (
        "expired 2025-12-30 00:00 UTC (2 days ago): it passes nothing; remove it or renew it"
    )
    assert found[1].message == "expires 2026-01-04 12:00 UTC (in 4 days)"


def test_unused_from_the_proxy_and_from_the_net_roles_counters() -> None:
    inv = Inventory()
    inv.saw("192.168.50.10", "modbus-old", "10.10.0.2", {1 << 8 | 3}, NOW - 40 * DAY)
    cfg = config(
        conduit("modbus-old", modbus="read-only"),
        conduit("plain", services=["tcp/8080"], to=["192.168.50.11"]),
        conduit("busy", services=["tcp/8081"], to=["192.168.50.12"]),
    )
    net = {
        "started_at": NOW - 31 * DAY,
        "conduits": {"plain": {"packets": 0}, "busy": {"packets": 12}},
    }
    found = review(cfg, NOW, unused_days=30, assets=inv.items.values(), net=net)
    assert kinds(found) == [("modbus-old", "unused"), ("plain", "unused")]
    assert found[0].message == "no Modbus request since 2025-11-22 00:00 UTC (40 days)"
    assert found[1].message == "no packet since the net role started 2025-12-01 00:00 UTC (31 days)"
    # a net role started lately: zero packets say nothing yet
    net["started_at"] = NOW - DAY
    assert kinds(review(cfg, NOW, unused_days=30, assets=inv.items.values(), net=net)) == [
        ("modbus-old", "unused")
    ]


def test_wider_than_its_traffic() -> None:
    inv = Inventory()
    inv.saw("192.168.50.10", "wide", "10.10.0.2", {1 << 8 | 3}, NOW)
    inv.saw("192.168.50.10", "wide", "10.10.0.7", {1 << 8 | 3}, NOW)
    cfg = config(
        conduit("wide", modbus="read-only", **{"from": ["10.10.0.0/24"]}, to=["192.168.50.8/30"])
    )
    found = review(cfg, NOW, unused_days=30, assets=inv.items.values())
    assert [f.message for f in found] == [
        "from 10.10.0.0/24 (256 addresses) was used by 2 hosts (10.10.0.2, 10.10.0.7): "
        "narrow it to them",
        "to 192.168.50.8/30 (4 addresses) was used by 1 host (192.168.50.10): narrow it to it",
    ]


def test_an_owner_nobody_can_reach() -> None:
    cfg = config(
        conduit("a", owner="ot-team"),
        conduit("b", owner="J. Doe, +49 30 1234567", to=["192.168.50.11"]),
    )
    found = review(cfg, NOW, unused_days=30)
    assert kinds(found) == [("a", "owner")]
    assert (
        found[0].message
        == "owner 'ot-team' names no e-mail address or telephone number to ask about it"
    )


def test_the_command(store: Store, tmp_path: Path) -> None:
    env = {"APPLIANCE_DATA_DIR": str(store.data_dir), "APPLIANCE_RUN_DIR": str(tmp_path / "run")}
    r = CliRunner().invoke(conduits, ["review"], env=env)
    assert r.exit_code != 0 and "no configuration yet" in str(r.exception)
    doc = factory.base()
    doc["conduits"] = [conduit("wide", modbus="read-only", **{"from": ["10.10.0.0/24"]})]
    draft = revs.import_text(store, json.dumps(doc), author="test", now=NOW)
    revs.commit(store, author="test", now=NOW, ref=draft.revision.id)
    StoreRecords(store).save_assets(
        [Asset("192.168.50.10", NOW, NOW, {1}, {3}, {"wide"}, uses={"wide": {"10.10.0.2": 1e12}})]
    )
    r = CliRunner().invoke(conduits, ["review"], env=env)
    assert r.exit_code == 0, r.output
    assert r.output.splitlines()[:2] == [
        f"revision {draft.revision.id}: 1 findings in 1 conduits",
        "CONDUIT  FINDING  WHY",
    ]
    assert "from 10.10.0.0/24 (256 addresses) was used by 1 host (10.10.0.2)" in r.output
    r = CliRunner().invoke(conduits, ["review", "--json"], env=env)
    assert [f["kind"] for f in json.loads(r.output)["findings"]] == ["wider"]
    r = CliRunner().invoke(conduits, ["review", "--unused-days", "nan"], env=env)
    want = "--unused-days: must be a finite number of days, 0-3650"
    assert r.exit_code != 0 and want in str(r.exception)
