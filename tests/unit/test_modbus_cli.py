"""`appliance conduits learned` and `appliance inventory` over the role's saved records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner, Result

from appliance.cli import LAZY_COMMANDS, main
from appliance.config.modbus import ModbusRestriction
from appliance.modbusproxy.assets import Asset
from appliance.modbusproxy.cli import conduits, inventory
from appliance.modbusproxy.learn import Observed
from appliance.modbusproxy.store import StoreRecords
from appliance.state.db import Store

T = 1_800_000_000.0  # 2027-01-15 08:00:00 UTC


@pytest.fixture
def env(store: Store, tmp_path: Path) -> dict[str, str]:
    return {"APPLIANCE_DATA_DIR": str(store.data_dir), "APPLIANCE_RUN_DIR": str(tmp_path / "run")}


def run(cmd, args: list[str], env: dict[str, str]) -> Result:
    return CliRunner().invoke(cmd, args, env=env, catch_exceptions=True)


def test_records_round_trip_and_replace(store: Store) -> None:
    records = StoreRecords(store)
    a = Observed("scada", "10.10.0.2", "192.168.50.10", 1, 3, T, T + 1, 2, 0, {"holding": [[0, 9]]})
    b = Observed("scada", "10.10.0.2", "192.168.50.10", 1, 6, T, T, 1, 0, {"holding": [[40, 40]]})
    records.save_learned([a, b], [])
    a.count, a.spans = 3, {"holding": [[0, 19]]}
    records.save_learned([a], [b.key])
    assert records.load_learned() == [a]
    asset = Asset("192.168.50.10", T, T + 5, {1}, {3, 43}, {"scada"}, ["10.10.0.2"])
    asset.identity[1] = {"vendor": "Acme", "product_code": "P9", "revision": "1.0", "at": T}
    records.save_assets([asset])
    records.save_assets([asset])
    assert records.load_assets() == [asset]


def test_learned_prints_the_restriction_to_paste(store: Store, env: dict[str, str]) -> None:
    StoreRecords(store).save_learned(
        [
            Observed(
                "scada",
                "10.10.0.2",
                "192.168.50.10",
                1,
                3,
                T,
                T + 60,
                40,
                0,
                {"holding": [[0, 9], [12, 14]]},
            ),
            Observed(
                "scada",
                "10.10.0.2",
                "192.168.50.10",
                1,
                4,
                T,
                T + 30,
                2,
                0,
                {"input": [[100, 101]]},
            ),
            Observed("other", "10.10.0.3", "192.168.50.11", 1, 6, T, T, 1, 0, {}),
        ],
        [],
    )
    r = run(conduits, ["learned", "scada"], env)
    assert r.exit_code == 0, r.output
    assert r.output == (
        "# conduit scada: learned from 42 requests of 1 client, 2027-01-15 08:00:00 UTC to "
        "2027-01-15 08:01:00 UTC\n"
        "#   10.10.0.2 → 192.168.50.10: functions 3, 4; units 1; 42 requests\n"
        "#   in mode test first: would-be refusals are reported; then mode: enforce\n"
        "modbus:\n"
        "  function_codes: [3, 4]\n"
        "  unit_ids: [1]\n"
        "  ranges:\n"
        "    input: [[100, 101]]\n"
        "    holding: [[0, 9], [12, 14]]\n"
        "  mode: test\n"
    )
    pasted = yaml.safe_load(r.output)["modbus"]
    assert ModbusRestriction.model_validate(pasted).mode == "test"
    r = run(conduits, ["learned", "scada", "--gap", "2"], env)
    assert "    holding: [[0, 14]]\n" in r.output
    r = run(conduits, ["learned", "scada", "--json"], env)
    doc = json.loads(r.output)
    assert doc["modbus"]["function_codes"] == [3, 4] and len(doc["observed"]) == 2


def test_learned_errors_are_one_line(
    store: Store, env: dict[str, str], monkeypatch, capsys
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    # the registration (appliance/cli.py's LAZY_COMMANDS, sent as a patch), as it will be
    monkeypatch.setitem(LAZY_COMMANDS, "conduits", "appliance.modbusproxy.cli:conduits")
    for argv, code, text in [
        (["conduits", "learned", "nope"], 3, "nothing learned for conduit 'nope': put its"),
        (["conduits", "learned", "x", "--gap", "-1"], 2, "--gap: must be a number of addresses"),
        (["conduits", "learned", "x", "--gap", "1e9"], 2, "--gap: must be a number of addresses"),
    ]:
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == code
        err = capsys.readouterr().err
        assert err.startswith(f"appliance: {text}") and err.count("\n") == 1, err


def test_inventory(store: Store, env: dict[str, str]) -> None:
    r = run(inventory, [], env)
    assert r.exit_code == 0 and r.output.startswith("no Modbus devices seen yet")
    asset = Asset("192.168.50.10", T, T + 5, {1, 2}, {3, 43}, {"scada"}, ["10.10.0.2"])
    asset.identity[1] = {"vendor": "Acme", "product_code": "P9", "revision": "1.0", "at": T}
    StoreRecords(store).save_assets([asset, Asset("192.168.50.9", T, T, {1}, {3}, {"b"})])
    r = run(inventory, [], env)
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert lines[0].split() == [
        "DEVICE", "UNITS", "FUNCTIONS", "IDENTIFICATION", "FIRST", "SEEN", "LAST", "SEEN",
        "CONDUITS",
    ]  # fmt: skip
    assert lines[1].startswith("192.168.50.9 ")  # in address order, not text order
    assert "unit 1: Acme P9 1.0" in lines[2] and "1, 2" in lines[2] and "3, 43" in lines[2]
    doc = json.loads(run(inventory, ["--json"], env).output)
    assert [d["address"] for d in doc] == ["192.168.50.9", "192.168.50.10"]
    assert doc[1]["identity"]["1"]["vendor"] == "Acme"
