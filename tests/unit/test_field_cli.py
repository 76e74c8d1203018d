"""`appliance tags`, `tags history`, `alarms`, `alarms ack` and `sql` with a tmp data dir."""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from appliance.config.field import Device
from appliance.errors import ApplianceError, BadRequest, NotFound, PermissionDenied
from appliance.field.alarms import AlarmEngine
from appliance.field.cli import alarms, parse_time, sql, tags
from appliance.field.history import HistoryWriter
from appliance.state.control import ControlServer, socket_path
from appliance.state.db import Store
from appliance.state.live import LiveState

from . import factory

NOW = time.time()


@pytest.fixture
def dirs(store: Store, tmp_path: Path) -> dict[str, str]:
    return {"APPLIANCE_DATA_DIR": str(store.data_dir), "APPLIANCE_RUN_DIR": str(tmp_path / "run")}


def run(cmd: Any, args: list[str], env: dict[str, str]) -> Result:
    return CliRunner().invoke(cmd, args, env=env, catch_exceptions=True)


def field_doc(alarms_active: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    now = time.time()
    return {
        "role": "field",
        "started_at": NOW - 100,
        "devices": {},
        "tags": {
            "plc1.counter": {
                "value": 42,
                "quality": "good",
                "source_time": None,
                "poll_time": now - 0.5,
                "unit": "",
                "device": "plc1",
                "writable": False,
                "description": "",
            },
            "plc1.temp": {
                "value": 21.234567891,
                "quality": "uncertain",
                "source_time": NOW - 1,
                "poll_time": now - 90,
                "unit": "degC",
                "device": "plc1",
                "writable": True,
                "description": "oven",
            },
            "plc2.flag": {
                "value": None,
                "quality": "bad",
                "source_time": None,
                "poll_time": None,
                "unit": "",
                "device": "plc2",
                "writable": False,
                "description": "",
            },
        },
        "alarms": {"active": alarms_active or [], "counts": {"critical": 0, "warning": 0}},
        "comm_loss": [],
        "history": {"queued": 0, "written": 0, "last_flush": None},
    }


def test_tags_shows_live_values(dirs: dict[str, str]) -> None:
    LiveState(Path(dirs["APPLIANCE_RUN_DIR"])).write("field", field_doc())
    r = run(tags, [], dirs)
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert lines[0].split() == ["TAG", "VALUE", "UNIT", "QUALITY", "AGE"]
    name, value, quality, age, unit = lines[1].split()
    assert (name, value, quality, unit) == ("plc1.counter", "42", "good", "s")
    assert 0.5 <= float(age) < 30
    assert lines[2].split() == ["plc1.temp", "21.2346", "degC", "uncertain", "2", "min"]
    assert lines[3].split() == ["plc2.flag", "-", "bad", "-"]
    assert "warning" not in r.output


def test_tags_json(dirs: dict[str, str]) -> None:
    LiveState(Path(dirs["APPLIANCE_RUN_DIR"])).write("field", field_doc())
    r = run(tags, ["--json"], dirs)
    assert r.exit_code == 0, r.output
    data = json.loads(r.output)
    assert [t["name"] for t in data] == ["plc1.counter", "plc1.temp", "plc2.flag"]
    temp = data[1]
    assert (temp["value"], temp["unit"], temp["writable"], temp["stale"]) == (
        21.234567891,
        "degC",
        True,
        False,
    )
    assert 89 < temp["age"] < 200


def test_tags_says_when_the_values_are_stale(dirs: dict[str, str]) -> None:
    run_dir = Path(dirs["APPLIANCE_RUN_DIR"])
    run_dir.mkdir(parents=True)
    doc = field_doc() | {"pid": 2**22 + 12345, "updated_at": NOW - 600}
    (run_dir / "field.json").write_text(json.dumps(doc))
    r = CliRunner().invoke(tags, ["--json"], env=dirs)
    assert all(t["stale"] for t in json.loads(r.stdout))
    r = CliRunner().invoke(tags, [], env=dirs)
    assert "the field role is not running" in r.stderr


def test_tags_without_a_field_role(dirs: dict[str, str]) -> None:
    r = run(tags, [], dirs)
    assert isinstance(r.exception, NotFound)
    assert "is the field role running" in str(r.exception)


@pytest.fixture
def history(store: Store) -> Iterator[None]:
    w = HistoryWriter(store)
    for i in range(60):
        w.add("plc1.counter", NOW - 600 + i * 10, i, "good")
    w.add("plc1.flag", NOW - 60, True, "good")
    w.flush()
    yield


def test_tags_history_table_csv_json(dirs: dict[str, str], history: None) -> None:
    r = run(tags, ["history", "plc1.counter", "--from", str(NOW - 300)], dirs)
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert lines[0].split() == ["TIME", "VALUE", "QUALITY"]
    assert [ln.split()[1] for ln in lines[1:]] == [str(i) for i in range(30, 60)]
    assert all(ln.split()[2] == "good" for ln in lines[1:])
    r = run(tags, ["history", "plc1.counter"], dirs)  # the last hour by default
    assert len(r.output.splitlines()) == 61
    r = run(tags, ["history", "plc1.counter", "--from", "-1h", "--csv", "--limit", "3"], dirs)
    assert r.exit_code == 0, r.output
    rows = list(csv.reader(io.StringIO(r.output)))
    assert rows[0] == ["time", "t", "tag", "value", "quality"]
    assert [row[3] for row in rows[1:]] == ["0", "1", "2"]
    assert rows[1][0].endswith("Z") and float(rows[1][1]) == pytest.approx(NOW - 600, abs=0.001)
    r = run(tags, ["history", "plc1.flag", "--json"], dirs)
    assert json.loads(r.output) == [
        {"t": pytest.approx(NOW - 60, abs=0.001), "value": True, "quality": "good"}
    ]


def test_tags_history_range_in_iso(dirs: dict[str, str], history: None) -> None:
    start = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(NOW - 605))
    end = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(NOW - 575))
    r = run(tags, ["history", "plc1.counter", "--from", start, "--to", end, "--json"], dirs)
    assert [s["value"] for s in json.loads(r.output)] == [0, 1, 2]


def test_tags_history_errors(dirs: dict[str, str], history: None) -> None:
    r = run(tags, ["history", "plc1.countr"], dirs)
    assert isinstance(r.exception, NotFound)
    assert "did you mean 'plc1.counter'" in str(r.exception)
    r = run(tags, ["history", "plc1.counter", "--from", "yesterday"], dirs)
    assert isinstance(r.exception, ApplianceError)
    assert str(r.exception).startswith("--from: 'yesterday' is not a time")
    r = run(tags, ["history", "plc1.counter", "--from", "now", "--to", "-1h"], dirs)
    assert str(r.exception).startswith("--to: the end of the range is before its start")
    r = run(tags, ["history", "plc1.counter", "--csv", "--json"], dirs)
    assert "choose one" in str(r.exception)
    assert isinstance(r.exception, BadRequest)  # bad input: exit 2


def test_parse_time() -> None:
    now = 1_000_000.0
    assert parse_time("now", now, "x") == now
    assert parse_time("-1h", now, "x") == now - 3600
    assert parse_time("30m", now, "x") == now - 1800
    assert parse_time("-2d", now, "x") == now - 2 * 86400
    assert parse_time("-1.5min", now, "x") == now - 90
    assert parse_time("1700000000", now, "x") == 1_700_000_000
    assert parse_time("2026-01-01T00:00:00Z", now, "x") == 1_767_225_600
    assert parse_time("2026-01-01T01:00:00+01:00", now, "x") == 1_767_225_600
    assert parse_time("2026-01-01", now, "x") == 1_767_225_600  # UTC when no zone
    with pytest.raises(ApplianceError) as exc:
        parse_time("-1 fortnight", now, "--to")
    assert exc.value.field == "--to"


@pytest.mark.parametrize(
    "text",
    [
        "1e300",
        "nan",
        "inf",
        "-inf",
        "1e400",
        "-1",
        "99999999999999",
        "-99999999999999d",
        "0001-01-01",
    ],
)
def test_parse_time_refuses_what_is_no_time_naming_the_option(text: str) -> None:
    with pytest.raises(
        BadRequest, match=r"^--from: must be a time in the years 1970-9999 \(got "
    ) as e:
        parse_time(text, 1_000_000.0, "--from")
    assert e.value.field == "--from"


@pytest.mark.parametrize(
    ("args", "blamed"),
    [
        (["--from", "1e300"], "--from: must be a time"),  # it blamed `to`
        (["--from", "nan"], "--from: must be a time"),
        (["--to", "1e400"], "--to: must be a time"),
        (["--from", "now", "--to", "-1h"], "--to: the end of the range is before its start"),
        (["--from", "fortnight"], "--from: 'fortnight' is not a time"),
    ],
)
def test_tags_history_blames_the_option_given(
    dirs: dict[str, str], history: None, args: list[str], blamed: str
) -> None:
    r = run(tags, ["history", "plc1.counter", *args], dirs)
    assert r.exit_code != 0
    assert isinstance(r.exception, BadRequest), r.exception  # exit 2, one line
    assert str(r.exception).startswith(blamed), str(r.exception)


def _devices() -> list[Device]:
    return [factory.oven_plc(alarms={"high": 30, "high_high": 40})]


def test_alarms_active_from_the_live_document_and_all_from_the_table(
    store: Store, dirs: dict[str, str]
) -> None:
    e = AlarmEngine(store)
    e.configure(_devices(), t=NOW)
    e.update("plc1.temp", 45, "good", NOW)
    e.update("plc1.temp", 35, "good", NOW + 1)  # high_high clears
    LiveState(Path(dirs["APPLIANCE_RUN_DIR"])).write("field", field_doc(e.active()))
    r = run(alarms, [], dirs)
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert lines[0].split()[:5] == ["ID", "SEVERITY", "STATE", "ACK", "RAISED"]
    assert len(lines) == 2 and lines[1].split()[1:4] == ["warning", "active", "no"]
    assert "plc1.temp high: 45 degC ≥ 30 degC" in lines[1]
    r = run(alarms, ["--all", "--json"], dirs)
    got = json.loads(r.output)
    assert [(a["kind"], a["state"]) for a in got] == [("high", "active"), ("high_high", "cleared")]


def test_alarms_when_there_are_none(dirs: dict[str, str]) -> None:
    assert run(alarms, [], dirs).output == "no active alarms\n"
    assert run(alarms, ["--all"], dirs).output == "no alarms\n"


def test_alarms_ack_goes_through_the_field_role(store: Store, dirs: dict[str, str]) -> None:
    e = AlarmEngine(store)
    e.configure(_devices(), t=NOW)
    [alarm] = e.update("plc1.temp", 35, "good", NOW)
    calls: list[dict[str, Any]] = []

    def ack_alarm(id: int, actor: str) -> dict[str, Any]:
        calls.append({"id": id, "actor": actor})
        return e.ack(id, actor)

    server = ControlServer(
        socket_path(Path(dirs["APPLIANCE_RUN_DIR"]), "field"), {"ack_alarm": ack_alarm}
    )
    server.start()
    try:
        r = run(alarms, ["ack", str(alarm["id"])], dirs)
        assert r.exit_code == 0, r.output
        assert f"alarm {alarm['id']} acknowledged by cli:" in r.output
        assert calls[0]["id"] == alarm["id"] and calls[0]["actor"].startswith("cli:")
        assert e.active()[0]["acked"] is True
        r = run(alarms, ["ack", "999"], dirs)
        assert isinstance(r.exception, NotFound) and "no alarm 999" in str(r.exception)
    finally:
        server.stop()


def test_alarms_ack_without_the_field_role(dirs: dict[str, str]) -> None:
    r = run(alarms, ["ack", "1"], dirs)
    assert isinstance(r.exception, NotFound)
    assert "field role is not running" in str(r.exception)


def test_sql_outputs(dirs: dict[str, str], history: None) -> None:
    q = "SELECT tag, value, quality FROM samples WHERE tag = 'plc1.flag'"
    r = run(sql, [q], dirs)
    assert r.exit_code == 0, r.output
    assert r.output.splitlines() == ["tag        value  quality", "plc1.flag  1      good"]
    r = run(sql, [q, "--csv"], dirs)
    assert r.output == "tag,value,quality\nplc1.flag,1,good\n"
    r = run(sql, [q, "--json"], dirs)
    data = json.loads(r.output)
    assert data["columns"] == ["tag", "value", "quality"] and data["rows"] == [
        ["plc1.flag", 1, "good"]
    ]
    r = CliRunner().invoke(sql, ["SELECT value FROM samples", "--max-rows", "5"], env=dirs)
    assert len(r.stdout.splitlines()) == 6 and "stopped at 5 rows" in r.stderr
    r = CliRunner().invoke(sql, ["-"], env=dirs, input="SELECT count(*) AS n FROM samples\n")
    assert r.stdout.splitlines() == ["n", "61"]


def test_sql_refuses_writes(dirs: dict[str, str], history: None) -> None:
    r = run(sql, ["DELETE FROM sample"], dirs)
    assert isinstance(r.exception, PermissionDenied)
    r = run(sql, ["SELECT count(*) FROM samples"], dirs)
    assert r.output.splitlines()[1] == "61"


def test_sql_timeout_nan_names_the_option(dirs: dict[str, str], history: None) -> None:
    r = run(sql, ["SELECT 1", "--timeout", "nan"], dirs)
    assert isinstance(r.exception, BadRequest), r.exception
    assert str(r.exception) == "--timeout: must be 0.01-300 seconds (got nan)"
