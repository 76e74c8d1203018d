"""The bridge lab's spec (`appliance lab up --bridge`): its IT host and the extras it lacks."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from appliance.errors import LabError
from appliance.lab import demo
from appliance.lab.topology import BRIDGE_IT_HOST, IT_HOST, LabSpec, _host


def test_the_bridge_lab_puts_the_it_host_in_the_plcs_subnet() -> None:
    assert LabSpec().it_host == IT_HOST
    spec = LabSpec(bridge=True)
    assert spec.it_host == BRIDGE_IT_HOST == "192.168.50.2"
    assert spec.it_host.rsplit(".", 1)[0] == spec.plc_addresses[0].rsplit(".", 1)[0]


def test_full_bridge_lab_leaves_out_fleet_and_syslog() -> None:
    spec = LabSpec.full(bridge=True)
    assert spec.extras == ["slow_plc", "rtu", "opcua"]
    assert LabSpec.full().extras == ["slow_plc", "rtu", "opcua", "fleet", "syslog"]


@pytest.mark.parametrize("extra", ["fleet", "syslog"])
def test_a_bridge_lab_refuses_the_extras_it_cannot_have(extra: str) -> None:
    with pytest.raises(LabError, match="bridge lab has no fleet or syslog"):
        LabSpec(bridge=True, **{extra: True})


def test_bridge_must_be_a_boolean() -> None:
    with pytest.raises(LabError, match="lab bridge 'yes': true or false"):
        LabSpec(bridge="yes")  # type: ignore[arg-type]


def test_hosts_route_via_the_appliance_only_when_routed() -> None:
    assert _host("lan0", ["10.10.0.2/24"], "10.10.0.1")[-1].startswith("route add default")
    assert not any(line.startswith("route") for line in _host("lan0", ["192.168.50.2/24"], None))


def test_lab_up_bridge_commits_the_bridge_example(monkeypatch) -> None:
    from appliance.cli import cli

    seen = {}
    monkeypatch.setattr(demo, "up", lambda lab_dir, **kw: seen.update(kw))
    assert CliRunner().invoke(cli, ["lab", "up", "--bridge"]).exit_code == 0
    assert seen["bridge"] is True and seen["config_file"] == "examples/bridge.yaml"
    assert CliRunner().invoke(cli, ["lab", "up"]).exit_code == 0
    assert seen["bridge"] is False and seen["config_file"] == "examples/demo.yaml"
    assert CliRunner().invoke(cli, ["lab", "up", "--bridge", "--config", ""]).exit_code == 0
    assert seen["config_file"] is None
