"""LED patterns: the exact on/off sequence per state, on gpiozero's mock pins and on sysfs."""

from __future__ import annotations

import math
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from appliance.agent.health import PRECEDENCE, Health, Reason, State
from appliance.agent.leds import (
    LEDS,
    OFF,
    PATTERNS,
    RESET_WARNING,
    RESETTING,
    SOLID_ON,
    GpioBackend,
    LedDriver,
    Pattern,
    SysfsBackend,
    patterns_for,
    render_table,
    special,
)

START = 1000.0  # a small clock value: step boundaries stay exact in floats
GRID = 0.025  # every step length is a multiple of this
WINDOW = 2.4  # long enough to see each pattern loop

Timeline = list[tuple[float, bool]]  # (seconds after show, LED on) at each change


def alternate(step: float, until: float) -> Timeline:
    n = math.ceil(until / step)
    return [(round(k * step, 3), k % 2 == 0) for k in range(n)]


# Written out by hand from the installer's table, not derived from PATTERNS.
EXPECTED: dict[str, dict[str, Timeline]] = {
    "ok": {"status": [(0.0, True)], "link": [(0.0, True)]},
    "degraded": {"status": alternate(0.5, WINDOW), "link": [(0.0, True)]},
    "fault": {"status": alternate(0.25, WINDOW), "link": [(0.0, True)]},
    "pending-confirm": {
        "status": [(0.0, True), (0.2, False), (0.4, True), (0.6, False), (2.0, True), (2.2, False)],
        "link": [(0.0, True)],
    },
    "booting": {"status": [(0.0, True), (1.0, False), (2.0, True)], "link": [(0.0, False)]},
    "identify": {"status": alternate(0.125, WINDOW), "link": alternate(0.125, WINDOW)},
}


def run(
    driver: LedDriver, read: Callable[[], dict[str, bool]], health: Health
) -> dict[str, Timeline]:
    """Show `health`, tick half-way between grid points, and record what the LEDs did."""
    driver.show_health(health, START)
    seen: dict[str, Timeline] = {led: [] for led in LEDS}
    last: dict[str, bool] = {}
    for k in range(round(WINDOW / GRID)):
        driver.tick(START + (k + 0.5) * GRID)
        for led, on in read().items():
            if last.get(led) != on:
                seen[led].append((round(k * GRID, 3), on))
                last[led] = on
    return seen


# -- back-ends under test ---------------------------------------------------------

PINS = {"status": 17, "link": 27}


def sysfs_root(tmp_path: Path, max_brightness: str | None = "1") -> Path:
    for d in ("unit:green:status", "unit:amber:link"):
        (tmp_path / d).mkdir()
        (tmp_path / d / "brightness").write_text("0")
        (tmp_path / d / "trigger").write_text("[heartbeat] none")
        if max_brightness is not None:
            (tmp_path / d / "max_brightness").write_text(max_brightness + "\n")
    return tmp_path


SYSFS_NAMES = {"status": "unit:green:status", "link": "unit:amber:link"}


@pytest.fixture(params=["gpio", "sysfs"])
def rig(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[LedDriver, Callable[[], dict[str, bool]]]]:
    if request.param == "gpio":
        factory: Any = request.getfixturevalue("mock_pins")
        backend = GpioBackend(PINS)

        def read() -> dict[str, bool]:
            return {led: bool(factory.pin(pin).state) for led, pin in PINS.items()}

        yield LedDriver(backend), read
        backend.close()
    else:
        root = sysfs_root(tmp_path)

        def read() -> dict[str, bool]:
            return {
                led: (root / d / "brightness").read_text() != "0" for led, d in SYSFS_NAMES.items()
            }

        yield LedDriver(SysfsBackend(root, SYSFS_NAMES)), read


@pytest.mark.parametrize("state", PRECEDENCE)
def test_sequence_per_state(
    rig: tuple[LedDriver, Callable[[], dict[str, bool]]], state: State
) -> None:
    driver, read = rig
    assert run(driver, read, Health(state, ())) == EXPECTED[state]


def test_every_state_has_a_pattern_for_every_led() -> None:
    assert set(PATTERNS) == set(PRECEDENCE) == set(EXPECTED)
    for leds in PATTERNS.values():
        assert set(leds) == set(LEDS)


def test_identify_and_pending_are_unlike_any_other_status_pattern() -> None:
    status = [PATTERNS[s]["status"][0] for s in PRECEDENCE]
    assert len(set(status)) == len(status)


# -- link LED follows the links ------------------------------------------------------

LINK_DOWN = Reason("ot-link-down", "fault", "OT link eth1 is absent")


@pytest.mark.parametrize(
    ("state", "link"),
    [
        ("fault", OFF),
        ("degraded", OFF),
        ("pending-confirm", OFF),
        ("ok", OFF),
        ("identify", PATTERNS["identify"]["link"][0]),
        ("booting", OFF),
    ],
)
def test_link_led_off_when_a_link_is_down(state: State, link: Pattern) -> None:
    assert patterns_for(Health(state, (LINK_DOWN,)))["link"] == link


def test_link_led_comes_back_when_the_link_does(
    rig: tuple[LedDriver, Callable[[], dict[str, bool]]],
) -> None:
    driver, read = rig
    driver.show_health(Health("fault", (LINK_DOWN,)), START)
    driver.tick(START)
    assert read()["link"] is False
    driver.show_health(Health("ok", ()), START + 1)
    driver.tick(START + 1)
    assert read() == {"status": True, "link": True}


# -- the driver ------------------------------------------------------------------------


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, bool]] = []

    def set(self, led_name: str, on: bool) -> None:
        self.calls.append((led_name, on))


def test_tick_sets_only_what_changed() -> None:
    rec = Recorder()
    d = LedDriver(rec)
    d.show_health(Health("degraded", ()), START)
    assert d.tick(START) == {"status": True, "link": True}
    assert d.tick(START + 0.1) == {}
    assert d.tick(START + 0.5) == {"status": False}
    assert rec.calls == [("status", True), ("link", True), ("status", False)]


def test_showing_the_same_state_keeps_the_phase() -> None:
    d = LedDriver(Recorder())
    d.show_health(Health("degraded", ()), START)
    d.show_health(Health("degraded", (Reason("drift", "warning", "x"),)), START + 0.25)
    assert d.values(START + 0.5) == {"status": False, "link": True}
    d.show_health(Health("fault", ()), START + 0.5)  # a new pattern starts at its beginning
    assert d.values(START + 0.5) == {"status": True, "link": True}


def test_next_change_is_when_the_loop_may_sleep_until() -> None:
    d = LedDriver(Recorder())
    d.show_health(Health("ok", ()), START)
    assert d.next_change(START) == float("inf")
    d.show_health(Health("pending-confirm", ()), START)
    assert d.next_change(START + 0.1) == pytest.approx(START + 0.2)
    assert d.next_change(START + 0.7) == pytest.approx(START + 2.0)


def test_unknown_leds_are_off() -> None:
    d = LedDriver(Recorder(), leds=("status", "link", "spare"))
    d.show({"status": SOLID_ON}, START)
    assert d.values(START) == {"status": True, "link": False, "spare": False}


def test_pattern_steps_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        Pattern("bad", ((True, 0.0),))
    with pytest.raises(ValueError, match="non-empty"):
        Pattern("bad", ())


# -- back-end details ------------------------------------------------------------------


def test_sysfs_takes_the_led_from_its_trigger_and_uses_max_brightness(tmp_path: Path) -> None:
    root = sysfs_root(tmp_path, max_brightness="255")
    b = SysfsBackend(root, SYSFS_NAMES)
    assert (root / "unit:green:status" / "trigger").read_text() == "none"
    b.set("status", True)
    assert (root / "unit:green:status" / "brightness").read_text() == "255"
    b.set("status", False)
    assert (root / "unit:green:status" / "brightness").read_text() == "0"


def test_sysfs_without_max_brightness_writes_one(tmp_path: Path) -> None:
    root = sysfs_root(tmp_path, max_brightness=None)
    SysfsBackend(root, SYSFS_NAMES).set("link", True)
    assert (root / "unit:amber:link" / "brightness").read_text() == "1"


def test_gpio_active_low(mock_pins: Any) -> None:
    b = GpioBackend({"status": 5}, active_high=False)
    assert mock_pins.pin(5).state is True  # off = high
    b.set("status", True)
    assert mock_pins.pin(5).state is False
    b.close()


def test_gpiozero_is_imported_only_by_the_gpio_backend() -> None:
    code = "import sys, appliance.agent.leds; print('gpiozero' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# -- the installer's table -------------------------------------------------------------


def test_render_table() -> None:
    table = render_table()
    lines = table.splitlines()
    assert lines[0] == "| state | LED | pattern | meaning |"
    assert lines[1] == "|---|---|---|---|"
    assert len(lines) == 2 + len(PATTERNS) * len(LEDS) + 1 + 2 * len(LEDS)
    assert "| identify | status | fast blink, 4 Hz |" in table
    assert "| pending-confirm | status | double blink every 2 s |" in table
    assert "| booting | status | slow pulse, 0.5 Hz (1 s on, 1 s off) |" in table
    assert "| degraded | status | slow blink, 1 Hz |" in table
    assert "| ok | status | solid on | all well |" in table
    assert lines[-5].startswith("| fault, pending-confirm, degraded | link | off |")
    assert "| reset warning | status | alternating with link, 5 Hz |" in table
    assert lines[-1].startswith("| resetting | link | flicker, 10 Hz |")


# -- the button's factory reset ---------------------------------------------------------


def test_reset_warning_alternates_and_resetting_is_solid(
    rig: tuple[LedDriver, Callable[[], dict[str, bool]]],
) -> None:
    driver, read = rig
    driver.show(special(RESET_WARNING), START)
    seen = []
    for k in range(8):
        driver.tick(START + k * 0.1 + 0.05)
        seen.append((read()["status"], read()["link"]))
    assert seen == [(True, False), (False, True)] * 4
    driver.show(special(RESETTING), START + 1)
    flicker = []
    for k in range(4):
        driver.tick(START + 1 + k * 0.05 + 0.01)
        flicker.append(read())
    on, off = {"status": True, "link": True}, {"status": False, "link": False}
    assert flicker == [on, off, on, off]


def test_reset_patterns_look_like_no_health_state() -> None:
    health_pairs = {(PATTERNS[s]["status"][0], PATTERNS[s]["link"][0]) for s in PRECEDENCE}
    assert (RESET_WARNING["status"][0], RESET_WARNING["link"][0]) not in health_pairs
    assert (RESETTING["status"][0], RESETTING["link"][0]) not in health_pairs


def test_the_documented_table_is_the_code_s() -> None:
    doc = (Path(__file__).parents[2] / "docs" / "agent.md").read_text()
    assert render_table() in doc, "docs/agent.md: paste appliance.agent.leds.render_table()"
