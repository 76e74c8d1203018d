"""The Modbus API: inventory, learned restriction, conduit review, over the real stores."""

from __future__ import annotations

import yaml

from appliance.config.modbus import ModbusRestriction
from appliance.modbusproxy.assets import Asset
from appliance.modbusproxy.learn import Observed
from appliance.modbusproxy.store import StoreRecords

from .webkit import Web, error_of

T = 1_800_000_000.0


def records(web: Web) -> StoreRecords:
    return StoreRecords(web.app.extensions["appliance"].store)


def test_inventory(ready: Web) -> None:
    c = ready.login("viewer")
    assert c.get("/api/modbus/inventory").json == {"items": []}
    asset = Asset("192.168.50.10", T, T + 5, {1}, {3}, {"scada"}, ["10.10.0.2"])
    asset.identity[1] = {"vendor": "Acme", "product_code": "P9", "revision": "1.0", "at": T}
    records(ready).save_assets([asset])
    [item] = c.get("/api/modbus/inventory").json["items"]
    assert item["address"] == "192.168.50.10" and item["identity"]["1"]["vendor"] == "Acme"


def test_learned(ready: Web) -> None:
    c = ready.login("viewer")
    r = c.get("/api/modbus/learned/scada")
    assert r.status_code == 404 and "nothing learned for conduit 'scada'" in error_of(r)
    o = Observed("scada", "10.10.0.2", "192.168.50.10", 1, 3, T, T, 4, 0, {"holding": [[0, 9]]})
    records(ready).save_learned([o], [])
    r = c.get("/api/modbus/learned/scada")
    assert r.status_code == 200, r.json
    assert r.json["modbus"]["function_codes"] == [3]
    pasted = yaml.safe_load(r.json["yaml"])["modbus"]
    assert ModbusRestriction.model_validate(pasted).mode == "test"
    r = c.get("/api/modbus/learned/scada?gap=-1")
    assert r.status_code == 422 and r.json["field"] == "gap"


def test_review(ready: Web) -> None:
    c = ready.login("viewer")
    assert c.get("/api/conduits/review").json == {"revision": None, "findings": []}
    r = c.get("/api/conduits/review?unused_days=nan")
    assert r.status_code == 422 and r.json["field"] == "unused_days"


def test_the_inventory_page(ready: Web) -> None:
    c = ready.login("viewer")
    r = c.get("/inventory")
    assert r.status_code == 200
    text = r.get_data(as_text=True)
    assert 'id="devices-table"' in text and 'id="review-table"' in text
    assert "/assets/js/pages/inventory.js" in text
