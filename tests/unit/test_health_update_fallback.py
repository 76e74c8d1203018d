"""A fallback from a failed update is a health reason (degraded), from the report's file."""

from __future__ import annotations

import json
from pathlib import Path

from appliance.agent.health import DEGRADED, HealthInputs, health
from appliance.agent.role import update_fallback
from appliance.paths import Paths

NET_OK = {"applied": {"revision": None, "fail_closed": True}, "forwarding": True, "links": []}
NOW = 2e9


def inputs(**kw: object) -> HealthInputs:
    return HealthInputs(net=NET_OK, uptime_s=300, roles_alive={"net": True}, **kw)  # type: ignore[arg-type]


def test_a_fallback_degrades_health_with_the_reports_message() -> None:
    msg = "the update in slot b did not get healthy in its tries (3 boots): fell back to slot a"
    h = health(inputs(update_fallback=msg), NOW)
    assert h.state == DEGRADED
    reason = {"code": "update-fallback", "severity": "warning", "message": msg}
    assert reason in [r.as_dict() for r in h.reasons]
    assert "update-fallback" not in [r.code for r in health(inputs(), NOW).reasons]


def test_the_agent_reads_the_reports_file(tmp_path: Path) -> None:
    paths = Paths(tmp_path, tmp_path / "run")
    assert update_fallback(paths) is None
    (tmp_path / "update").mkdir()
    (tmp_path / "update" / "fallback.json").write_text(json.dumps({"message": "fell back"}))
    assert update_fallback(paths) == "fell back"
    (tmp_path / "update" / "fallback.json").write_text("{not json")
    assert update_fallback(paths) is None
