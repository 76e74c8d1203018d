"""The UI's pure JavaScript (layout of the overview picture, chart ticks, errors mapped to
form fields, formatting) run in chromium against the static files, without the lab."""

from __future__ import annotations

import functools
import itertools
import re
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from appliance.web import ui

pytestmark = pytest.mark.browser

STATIC = Path(ui.__file__).resolve().parent / "static"


class Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def base() -> Iterator[str]:
    handler = functools.partial(Quiet, directory=str(STATIC))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def js(base: str) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        page = browser.new_page()
        page.goto(f"{base}/js/")  # a directory listing: an HTML page of that origin
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))

        def run(script: str, arg: Any = None) -> Any:
            return page.evaluate(script, arg)

        yield run
        browser.close()
        assert errors == []


def status(conduits: list[dict[str, Any]], devices: int = 0) -> dict[str, Any]:
    return {
        "unit": {"name": "u"},
        "health": {"state": "ok"},
        "links": [
            {"name": "it0", "role": "it", "up": True, "addresses": ["10.10.0.1/24"]},
            {"name": "ot0", "role": "ot", "up": False, "addresses": []},
        ],
        "conduits": conduits,
        "drops": {"drop_it_ot": {"packets": 3, "bytes": 180}, "drop_in_it": {"packets": 1}},
        "devices": [
            {"name": f"d{i}", "protocol": "modbus-tcp", "state": "ok"} for i in range(devices)
        ],
    }


def conduit(name: str, frm: str, to: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "from": [frm],
        "to": [to],
        "services": ["modbus"],
        "packets": 0,
        "bytes": 0,
        "active": True,
        **extra,
    }


def test_every_conduit_gets_its_own_lane_and_nodes_do_not_overlap(js: Any) -> None:
    st = status(
        [
            conduit("a", "10.10.0.2/32", "192.168.50.10/32"),
            conduit("b", "10.10.0.2/32", "192.168.50.11/32"),
            conduit("c", "10.10.0.3/32", "192.168.50.10/32"),
            conduit("d", "10.10.1.0/24", "192.168.50.0/24", active=False),
        ],
        devices=3,
    )
    g = js("async (st) => (await import('/js/picture.js')).layout(st)", st)
    ys = [lane["y"] for lane in g["lanes"]]
    assert len(ys) == 4 and ys == sorted(ys) and len(set(ys)) == 4
    assert [n["label"] for n in g["itNodes"]] == ["10.10.0.2", "10.10.0.3", "10.10.1.0/24"]
    assert [n["label"] for n in g["otNodes"]] == [
        "192.168.50.10",
        "192.168.50.11",
        "192.168.50.0/24",
    ]
    for nodes in (g["itNodes"], g["otNodes"]):
        tops = [n["y"] for n in nodes]
        assert all(b - a >= 26 for a, b in itertools.pairwise(tops)), tops
    dev = [d["y"] for d in g["devices"]]
    assert min(dev) > max(n["y"] for n in g["otNodes"]) + 26  # devices below the hosts
    assert g["appBottom"] > max(dev) and g["height"] > g["appBottom"]
    assert [lk["name"] for lk in g["itLinks"]] == ["it0"]


def test_the_picture_shows_counters_drops_and_inactive_lanes(js: Any) -> None:
    prev = status([conduit("a", "10.10.0.2", "192.168.50.10", packets=5)])
    now = status(
        [
            conduit("a", "10.10.0.2", "192.168.50.10", packets=9, bytes=5400),
            conduit("off", "10.10.0.9", "192.168.50.12", active=False),
        ]
    )
    out = js(
        """async ([st, prev]) => {
            const svg = (await import('/js/picture.js')).draw(st, prev);
            document.body.append(svg);
            const lane = (n) =>
              svg.querySelector(`[data-conduit="${n}"] path.lane`).getAttribute('class');
            return {
              counter: svg.querySelector('[data-counter="a"]').textContent,
              a: lane('a'), off: lane('off'),
              drops: svg.querySelector('[data-drops]').textContent,
              text: svg.textContent,
            };
        }""",
        [now, prev],
    )
    assert out["counter"] == "9 pkts · 5.4 kB"
    assert "flowing" in out["a"] and "active" in out["a"]  # packets rose since last poll
    assert "inactive" in out["off"] and "flowing" not in out["off"]
    assert out["drops"] == "dropped  IT→OT 3 · OT→IT 0 pkts"
    assert "1 other" in out["text"] and "DOWN" in out["text"]


def test_a_conduit_nobody_answers_is_shown_as_not_answering_not_as_flowing(js: Any) -> None:
    """Its SYNs count packets; the net role's conntrack reading says nobody answered."""
    prev = status([conduit("dead", "10.10.0.2", "192.168.50.99", packets=3)])
    now = status(
        [
            conduit("dead", "10.10.0.2", "192.168.50.99", packets=6, answering=False),
            conduit("ok", "10.10.0.2", "192.168.50.10", packets=6, answering=True),
        ]
    )
    out = js(
        """async ([st, prev]) => {
            const pic = await import('/js/picture.js');
            const svg = pic.draw(st, prev);
            const list = pic.drawList(st, prev);
            const lane = (n) =>
              svg.querySelector(`[data-conduit="${n}"] path.lane`).getAttribute('class');
            const item = (n) => list.querySelector(`[data-conduit="${n}"]`).textContent;
            return { dead: lane('dead'), ok: lane('ok'), text: svg.textContent,
                     deadItem: item('dead'), okItem: item('ok') };
        }""",
        [now, prev],
    )
    assert "silent" in out["dead"] and "flowing" not in out["dead"]
    assert "silent" not in out["ok"] and "active" in out["ok"]
    assert "not answering" in out["text"]
    assert "not answering" in out["deadItem"] and "not answering" not in out["okItem"]


def test_errors_land_on_the_field_their_path_names(js: Any) -> None:
    got = js(
        """async () => {
            const lib = await import('/js/lib.js');
            const form = lib.h('form', null,
              lib.h('div', {class: 'form-error'}),
              lib.h('input', {name: 'from', 'data-path': 'from'}),
              lib.h('input', {name: 'to', 'data-path': 'to'}),
              lib.h('input', {name: 'port', 'data-path': 'port_forwards[1].port'}),
              lib.h('input', {name: 'port0', 'data-path': 'port_forwards[0].port'}));
            document.body.append(form);
            const err = new lib.ApiError(422, {error: 'bad', errors: [
              {path: 'conduits[3].to[0]', message: 'not an address'},
              {path: 'nat.port_forwards[1].port', message: 'port must be 1-65535'},
              {path: 'unit.name', message: 'elsewhere'}]});
            const placed = lib.showErrors(form, err);
            const inv = [...form.querySelectorAll('[aria-invalid=true]')].map((e) => e.name);
            return {placed, inv, box: form.querySelector('.form-error').textContent,
                    msgs: [...form.querySelectorAll('.field-error')].map((e) => e.textContent)};
        }"""
    )
    assert got["placed"] == 2
    assert got["inv"] == ["to", "port"]
    assert got["msgs"] == ["not an address", "port must be 1-65535"]
    assert got["box"] == "unit.name: elsewhere"


def test_chart_ticks_cover_the_values_with_round_steps(js: Any) -> None:
    cases = [[14.2, 25.9], [0, 1], [-1000, 1000], [1234, 1234], [0.001, 0.0042]]
    got = js(
        """async (cases) => {
            const c = await import('/js/chart.js');
            return cases.map(([lo, hi]) => c.niceTicks(lo, hi));
        }""",
        cases,
    )
    for (lo, hi), ticks in zip(cases, got, strict=True):
        assert ticks[0] <= lo and ticks[-1] >= hi, (lo, hi, ticks)
        steps = {round(b - a, 12) for a, b in itertools.pairwise(ticks)}
        assert len(steps) == 1, ticks
        assert 2 <= len(ticks) <= 12, ticks


def test_formatting(js: Any) -> None:
    got = js(
        """async () => {
            const l = await import('/js/lib.js');
            return [l.fmtBytes(999), l.fmtBytes(5400), l.fmtCount(12345), l.fmtDuration(3725),
                    l.fmtValue(21.123456789), l.hostOf('10.0.0.1/32'), l.hostOf('10.0.0.0/24'),
                    l.parseList(' a, b\\n c  '),
                    l.csvOf(['x', 'y'], [['a,b', 'say "hi"']])];
        }"""
    )
    assert got == [
        "999 B",
        "5.4 kB",
        "12.3k",
        "1 h 2 min",
        "21.1235",
        "10.0.0.1",
        "10.0.0.0/24",
        ["a", "b", "c"],
        'x,y\r\n"a,b","say ""hi"""\r\n',
    ]


def test_the_header_health_follows_the_revision_not_the_agents_lag(js: Any) -> None:
    run = "async ([hl, rev]) => (await import('/js/lib.js')).headerHealth(hl, rev)"
    pend = {"code": "pending-confirm", "severity": "warning", "message": "waits, 80 s left"}
    alarm = {"code": "comm-loss", "severity": "warning", "message": "no communication with plc9"}
    info = {"code": "booting", "severity": "info", "message": "started"}
    confirmed = {"id": 7, "state": "confirmed"}
    pending = {"id": 8, "state": "pending"}
    # confirmed a moment ago, the agent has not caught up: no PENDING-CONFIRM any more
    out = js(run, [{"state": "pending-confirm", "reasons": [pend, alarm]}, confirmed])
    assert out == {"state": "degraded", "reasons": [alarm]}
    out = js(run, [{"state": "pending-confirm", "reasons": [pend, info]}, confirmed])
    assert out == {"state": "ok", "reasons": [info]}
    assert js(run, [{"state": "pending-confirm", "reasons": [pend]}, None])["state"] == "ok"
    # committed on trial a moment ago: it says so before the agent does
    out = js(run, [{"state": "degraded", "reasons": [alarm]}, pending])
    assert out["state"] == "pending-confirm" and out["reasons"][1:] == [alarm]
    assert "revision 8" in out["reasons"][0]["message"]
    assert js(run, [{"state": "ok", "reasons": []}, pending])["state"] == "pending-confirm"
    # what outranks a trial, and agreeing answers, stay as they are
    for state in ("fault", "booting", "identify"):
        hl = {"state": state, "reasons": [alarm]}
        assert js(run, [hl, pending]) == hl
    hl = {"state": "pending-confirm", "reasons": [pend]}
    assert js(run, [hl, pending]) == hl
    assert js(run, [{"state": "ok", "reasons": []}, confirmed]) == {"state": "ok", "reasons": []}


def test_a_conduit_name_is_suggested_from_owner_destination_and_service(js: Any) -> None:
    run = "async ([c, d, t]) => (await import('/js/lib.js')).suggestConduitName(c, d, t)"
    devices = [
        {"name": "plc1", "address": "192.168.50.10:502"},
        {"name": "hmi", "address": "opc.tcp://u:p@192.168.50.20:4840/x"},
    ]
    c = {"owner": "maintenance@plant.example", "to": ["192.168.50.10"], "services": ["tcp/8080"]}
    assert js(run, [c, devices, []]) == "maintenance-plc1-tcp8080"
    assert js(run, [c, devices, ["maintenance-plc1-tcp8080"]]) == "maintenance-plc1-tcp8080-2"
    other = {"owner": "OT Engineering", "to": ["192.168.50.99/32"], "services": ["modbus"]}
    assert js(run, [other, devices, []]) == "ot-192-168-50-99-modbus"
    hmi = {"owner": "", "to": ["192.168.50.20"], "services": []}
    assert js(run, [hmi, devices, []]) == "hmi"
    assert js(run, [{"owner": "", "to": [], "services": []}, devices, []]) == ""
    long = {"owner": "x" * 80, "to": ["fd00:1234:5678:9abc::1"], "services": ["udp/1000-1010"]}
    name = js(run, [long, [], []])
    assert len(name) <= 48 and re.fullmatch(r"[a-z0-9][a-z0-9_-]*", name), name


def test_required_fields_are_marked_and_checked_before_sending(js: Any) -> None:
    got = js(
        """async () => {
            const lib = await import('/js/lib.js');
            const form = lib.h('form', null,
              lib.h('label', null, 'Owner ', lib.h('span', {class: 'hint'}, 'who'),
                    lib.h('input', {name: 'owner', required: true})),
              lib.h('label', null, 'Reason', lib.h('input', {name: 'reason', required: true})),
              lib.h('label', null, 'Note', lib.h('input', {name: 'note'})));
            document.body.append(form);
            lib.markRequired(form);
            lib.markRequired(form); // once only
            const marks = form.querySelectorAll('abbr.req').length;
            const firstLabel = form.querySelector('label').textContent;
            form.elements.reason.value = '  ';
            const missing = lib.checkRequired(form);
            const inv = [...form.querySelectorAll('[aria-invalid=true]')].map((e) => e.name);
            const msg = form.querySelector('.field-error').textContent;
            form.elements.owner.value = 'ot-team';
            form.elements.reason.value = 'polls';
            const after = lib.checkRequired(form);
            form.remove();
            return {marks, firstLabel, missing, inv, msg, after,
                    left: form.querySelectorAll('.field-error').length};
        }"""
    )
    assert got["marks"] == 2
    assert got["firstLabel"].startswith("Owner *")
    assert got["missing"] == 2 and got["inv"] == ["owner", "reason"]
    assert got["msg"] == "required: fill this in"
    assert got["after"] == 0 and got["left"] == 0


def test_process_alarms_do_not_make_the_unit_degraded(js: Any) -> None:
    run = "async ([hl, rev]) => (await import('/js/lib.js')).headerHealth(hl, rev)"
    alarms = {"code": "alarms", "severity": "warning", "message": "1 active alarm(s): 1 warning"}
    comm = {"code": "comm-loss", "severity": "warning", "message": "no communication with plc9"}
    disk = {"code": "disk-full", "severity": "fault", "message": "1 % disk free"}
    confirmed = {"id": 7, "state": "confirmed"}
    # an agent that still counts process alarms: the unit is ok all the same
    assert js(run, [{"state": "degraded", "reasons": [alarms]}, confirmed]) == {
        "state": "ok",
        "reasons": [],
    }
    # the unit's own findings stay, and keep their state
    out = js(run, [{"state": "degraded", "reasons": [comm, alarms]}, confirmed])
    assert out == {"state": "degraded", "reasons": [comm]}
    out = js(run, [{"state": "fault", "reasons": [disk, alarms]}, confirmed])
    assert out == {"state": "fault", "reasons": [disk]}
    summary = js(
        """async (active) => (await import('/js/lib.js')).alarmSummary({active})""",
        [
            {"severity": "critical", "acked": False},
            {"severity": "warning", "acked": True},
            {"severity": "warning", "acked": False},
        ],
    )
    assert summary == {"active": 3, "critical": 1, "warning": 2, "unacked": 2}
