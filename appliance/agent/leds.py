"""LED patterns as data, a table an installer can read, and a driver stepping them on a clock.

Two LEDs: ``status`` says the health state; ``link`` says whether the IT and
OT links are up (solid) or not (off), and joins in for identify. A pattern is
a loop of (on, seconds) steps. The driver does not sleep: the agent's loop
calls `tick(now)` and may sleep until `next_change(now)`; tests pass a clock.

Back-ends set one LED on or off: `GpioBackend` (gpiozero, imported lazily,
so only a unit with GPIO needs it) and `SysfsBackend` (``/sys/class/leds``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from appliance.agent.health import BOOTING, DEGRADED, FAULT, IDENTIFY, OK, PENDING, Health

STATUS, LINK = "status", "link"
LEDS: tuple[str, ...] = (STATUS, LINK)


@dataclass(frozen=True)
class Pattern:
    """A loop of (on, seconds) steps; one step means a solid LED."""

    name: str
    steps: tuple[tuple[bool, float], ...]

    def __post_init__(self) -> None:
        if not self.steps or any(s <= 0 for _, s in self.steps):
            raise ValueError(f"pattern {self.name}: steps must be non-empty and positive")

    @property
    def period(self) -> float:
        return sum(s for _, s in self.steps)

    @property
    def solid(self) -> bool:
        return len({on for on, _ in self.steps}) == 1

    def at(self, t: float) -> tuple[bool, float]:
        """(on, seconds until the next step) at `t` seconds into the pattern."""
        if self.solid:
            return self.steps[0][0], float("inf")
        t %= self.period
        for on, seconds in self.steps:
            if t < seconds:
                return on, seconds - t
            t -= seconds
        return self.steps[0][0], self.steps[0][1]  # float rounding at the very end


SOLID_ON = Pattern("solid on", ((True, 1.0),))
OFF = Pattern("off", ((False, 1.0),))
SLOW_PULSE = Pattern("slow pulse, 0.5 Hz (1 s on, 1 s off)", ((True, 1.0), (False, 1.0)))
SLOW_BLINK = Pattern("slow blink, 1 Hz", ((True, 0.5), (False, 0.5)))
RAPID_BLINK = Pattern("rapid blink, 2 Hz", ((True, 0.25), (False, 0.25)))
FAST_BLINK = Pattern("fast blink, 4 Hz", ((True, 0.125), (False, 0.125)))
DOUBLE_BLINK = Pattern(
    "double blink every 2 s", ((True, 0.2), (False, 0.2), (True, 0.2), (False, 1.4))
)

# state -> LED -> (pattern, what it tells the installer)
PATTERNS: dict[str, dict[str, tuple[Pattern, str]]] = {
    IDENTIFY: {
        STATUS: (FAST_BLINK, "this is the unit you asked to identify itself"),
        LINK: (FAST_BLINK, "(blinks with status while identifying)"),
    },
    BOOTING: {
        STATUS: (SLOW_PULSE, "starting up: wait"),
        LINK: (OFF, "links not judged yet"),
    },
    FAULT: {
        STATUS: (RAPID_BLINK, "fault: traffic may be blocked; see the reasons in the web UI"),
        LINK: (SOLID_ON, "IT and OT links up (off: a link is down, check the cables)"),
    },
    PENDING: {
        STATUS: (DOUBLE_BLINK, "a configuration change waits for confirmation"),
        LINK: (SOLID_ON, "IT and OT links up"),
    },
    DEGRADED: {
        STATUS: (SLOW_BLINK, "working, but something needs attention (see the web UI)"),
        LINK: (SOLID_ON, "IT and OT links up"),
    },
    OK: {
        STATUS: (SOLID_ON, "all well"),
        LINK: (SOLID_ON, "IT and OT links up"),
    },
}
# A down IT/OT link turns the link LED off in every state but identify and booting.
LINK_DOWN = (OFF, "an IT or OT link is absent or down: check the cables")
LINK_DOWN_CODES = frozenset({"it-link-down", "ot-link-down", "it-link-missing", "ot-link-missing"})


# The push button's factory reset: LEDs an installer cannot mistake for a health state.
RESET_WARNING: dict[str, tuple[Pattern, str]] = {
    STATUS: (
        Pattern("alternating with link, 5 Hz", ((True, 0.1), (False, 0.1))),
        "button held: factory reset at 10 s; let go now to cancel",
    ),
    LINK: (
        Pattern("alternating with status, 5 Hz", ((False, 0.1), (True, 0.1))),
        "(alternates with status)",
    ),
}
FLICKER = Pattern("flicker, 10 Hz", ((True, 0.05), (False, 0.05)))
RESETTING: dict[str, tuple[Pattern, str]] = {
    STATUS: (FLICKER, "factory reset under way: do not power off"),
    LINK: (FLICKER, "(flickers with status)"),
}


def special(patterns: Mapping[str, tuple[Pattern, str]]) -> dict[str, Pattern]:
    """The patterns of RESET_WARNING or RESETTING, for `LedDriver.show`."""
    return {led: pattern for led, (pattern, _) in patterns.items()}


def patterns_for(health: Health) -> dict[str, Pattern]:
    """The pattern each LED shows for this health."""
    out = {led: pattern for led, (pattern, _) in PATTERNS[health.state].items()}
    if health.state not in (IDENTIFY, BOOTING) and any(
        r.code in LINK_DOWN_CODES for r in health.reasons
    ):
        out[LINK] = LINK_DOWN[0]
    return out


def render_table() -> str:
    """The LED table for installers (markdown), in order of precedence."""
    lines = ["| state | LED | pattern | meaning |", "|---|---|---|---|"]
    for state, leds in PATTERNS.items():
        for led, (pattern, meaning) in leds.items():
            lines.append(f"| {state} | {led} | {pattern.name} | {meaning} |")
    pattern, meaning = LINK_DOWN
    lines.append(f"| fault, pending-confirm, degraded | {LINK} | {pattern.name} | {meaning} |")
    for what, leds in (("reset warning", RESET_WARNING), ("resetting", RESETTING)):
        for led, (pattern, meaning) in leds.items():
            lines.append(f"| {what} | {led} | {pattern.name} | {meaning} |")
    return "\n".join(lines) + "\n"


# -- driver and back-ends ------------------------------------------------------


class Backend(Protocol):
    def set(self, led_name: str, on: bool) -> None: ...


class LedDriver:
    """Shows patterns on a back-end, stepping them from an injected clock.

    `show(...)` changes what is shown; a pattern that does not change keeps
    its phase. `tick(now)` sets every LED whose value changed (all of them on
    the first tick after `show`) and returns the values it set.
    """

    def __init__(self, backend: Backend, leds: Iterable[str] = LEDS) -> None:
        self.backend = backend
        self.leds = tuple(leds)
        self._shown: dict[str, tuple[Pattern, float]] = {}
        self._last: dict[str, bool] = {}

    def show(self, patterns: Mapping[str, Pattern], now: float) -> None:
        for led in self.leds:
            pattern = patterns.get(led, OFF)
            current = self._shown.get(led)
            if current is None or current[0] != pattern:
                self._shown[led] = (pattern, now)

    def show_health(self, health: Health, now: float) -> None:
        self.show(patterns_for(health), now)

    def values(self, now: float) -> dict[str, bool]:
        return {led: p.at(now - start)[0] for led, (p, start) in self._shown.items()}

    def tick(self, now: float) -> dict[str, bool]:
        changed = {}
        for led, on in self.values(now).items():
            if self._last.get(led) != on:
                self.backend.set(led, on)
                self._last[led] = on
                changed[led] = on
        return changed

    def next_change(self, now: float) -> float:
        """When the next LED steps (inf if all are solid): the loop may sleep until then."""
        return now + min(
            (p.at(now - start)[1] for p, start in self._shown.values()), default=float("inf")
        )


class GpioBackend:
    """LEDs on GPIO pins through gpiozero (`pins`: LED name -> pin, e.g. ``{"status": 17}``)."""

    def __init__(self, pins: Mapping[str, int | str], active_high: bool = True) -> None:
        from gpiozero import LED  # lazily: only a unit with GPIO needs gpiozero

        self._leds: dict[str, Any] = {
            name: LED(pin, active_high=active_high, initial_value=False)
            for name, pin in pins.items()
        }

    def set(self, led_name: str, on: bool) -> None:
        led = self._leds[led_name]
        if on:
            led.on()
        else:
            led.off()

    def close(self) -> None:
        for led in self._leds.values():
            led.close()


class SysfsBackend:
    """LEDs under a ``/sys/class/leds``-like root (`names`: LED name -> directory name).

    Takes the LED from any kernel trigger (writes ``none``) and turns it on
    at its ``max_brightness`` (1 where the file is missing).
    """

    def __init__(self, root: Path, names: Mapping[str, str]) -> None:
        self.root = Path(root)
        self._dirs = {name: self.root / d for name, d in names.items()}
        self._on: dict[str, str] = {}
        for name, d in self._dirs.items():
            trigger = d / "trigger"
            if trigger.exists():
                trigger.write_text("none")
            on = "1"
            with contextlib.suppress(FileNotFoundError, ValueError):
                on = str(int((d / "max_brightness").read_text().strip()))
            self._on[name] = on

    def set(self, led_name: str, on: bool) -> None:
        (self._dirs[led_name] / "brightness").write_text(self._on[led_name] if on else "0")
