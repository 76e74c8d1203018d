"""Shared test data: a fixed clock and a valid base configuration to vary."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from appliance.config.field import Device
    from appliance.config.model import Config

NOW = datetime(2026, 1, 1, tzinfo=UTC)

BASE: dict[str, Any] = {
    "version": 1,
    "unit": {"name": "test-unit"},
    "interfaces": [
        {"name": "it0", "role": "it", "mac": "02:a0:00:00:01:01", "addresses": ["10.10.0.1/24"]},
        {"name": "ot0", "role": "ot", "mac": "02:a0:00:00:02:01", "addresses": ["192.168.50.1/24"]},
    ],
    "conduits": [
        {
            "name": "scada-modbus",
            "owner": "ot-team",
            "reason": "SCADA polls PLC 1",
            "from": ["10.10.0.2"],
            "to": ["192.168.50.10"],
            "services": ["modbus"],
        }
    ],
}


def base() -> dict[str, Any]:
    """A fresh copy of BASE (IT 10.10.0.0/24, OT 192.168.50.0/24, one Modbus conduit)."""
    return copy.deepcopy(BASE)


def oven_plc(**tag: Any) -> Device:
    """plc1 (Modbus TCP, 192.168.50.10) with one tag, temp: holding 10, float32, degC;
    `tag` adds or replaces the tag's fields (alarms, description, ...)."""
    from appliance.config.field import Device, Tag

    fields = {"name": "temp", "table": "holding", "address": 10, "type": "float32", "unit": "degC"}
    return Device(
        name="plc1",
        protocol="modbus-tcp",
        address="192.168.50.10",
        tags=[Tag(**{**fields, **tag})],
    )


def web_config(**web: Any) -> Config:
    """The base configuration with a management interface (10.99.0.2/30, fd00:99::2/64)
    and these `web` settings, validated."""
    from appliance.config.load import validate_data

    doc = base()
    doc["interfaces"].append(
        {"name": "mgmt0", "role": "mgmt", "addresses": ["10.99.0.2/30", "fd00:99::2/64"]}
    )
    doc["web"] = web
    return validate_data(doc).config


def conduit(name: str, **fields: Any) -> dict[str, Any]:
    """A conduit like the base one, renamed, with fields replaced (`from_` for `from`)."""
    out = copy.deepcopy(BASE["conduits"][0])
    out["name"] = name
    if "from_" in fields:
        fields["from"] = fields.pop("from_")
    out.update(fields)
    return out
