"""The field role's write path without devices: what a write to a disabled device answers."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from appliance.config.field import Device
from appliance.errors import Conflict, status_of
from appliance.field.role import FieldRole
from appliance.paths import Paths
from appliance.state.live import LiveState


class AuditLog:
    """The one Store method a write uses."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def audit(self, actor: str, action: str, **fields: Any) -> None:
        self.rows.append({"actor": actor, "action": action, **fields})


def test_a_write_to_a_disabled_device_is_a_conflict_and_audited(tmp_path: Path) -> None:
    paths = Paths(tmp_path / "data", tmp_path / "run")
    store = AuditLog()
    role = FieldRole(paths, store, LiveState(paths.run_dir))  # type: ignore[arg-type]
    dev = Device.model_validate(
        {
            "name": "plc1",
            "protocol": "modbus-tcp",
            "address": "192.168.50.10:502",
            "enabled": False,
            "tags": [{"name": "sp", "table": "holding", "address": 0, "writable": True}],
        }
    )
    role._rebuild_tags([dev])
    role._start_runner(dev)  # disabled: no task, no connection
    assert role.device_status()["plc1"]["state"] == "disabled"
    with pytest.raises(Conflict, match="plc1 is disabled") as exc:
        asyncio.run(role.write("plc1.sp", 5, "alice"))
    assert exc.value.field == "tag"
    assert status_of(exc.value) == 409  # the request does not fit the state, not a 500
    assert store.rows == [
        {
            "actor": "alice",
            "action": "tag.write",
            "target": "plc1.sp",
            "result": "failed",
            "detail": '{"value": 5}: tag: plc1 is disabled',
            "source": "api",
        }
    ]
