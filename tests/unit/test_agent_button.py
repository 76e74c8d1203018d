"""The push button on gpiozero's mock pins with a fake clock: short press, hold, cancel, bounce."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from testkit import Clock

from appliance.agent.button import (
    CANCEL,
    IDENTIFY,
    RESET,
    RESET_AFTER_S,
    SHORT_PRESS_MAX_S,
    WARN_AFTER_S,
    WARNING,
    ButtonLogic,
    GpioButton,
)

PIN = 22


@pytest.fixture
def rig() -> Iterator[tuple[GpioButton, Any, Clock]]:
    from gpiozero import Device
    from gpiozero.pins.mock import MockFactory

    old = Device.pin_factory
    Device.pin_factory = MockFactory()
    clock = Clock(1000.0)
    button = GpioButton(PIN, pull_up=True, bounce_time=None, clock=clock)
    pin = Device.pin_factory.pin(PIN)
    try:
        yield button, pin, clock
    finally:
        button.close()
        Device.pin_factory.close()
        Device.pin_factory = old


def hold(button: GpioButton, clock: Clock, seconds: float, step: float = 0.25) -> list[str]:
    """Advance the clock in loop ticks, collecting the actions."""
    out: list[str] = []
    end = clock.t + seconds
    while clock.t < end - 1e-9:
        clock.t = round(clock.t + step, 6)
        out += button.actions(clock.t)
    return out


def test_short_press_identifies(rig: tuple[GpioButton, Any, Clock]) -> None:
    button, pin, clock = rig
    pin.drive_low()  # pull-up: pressed pulls the pin low
    assert hold(button, clock, 0.5) == []
    pin.drive_high()
    assert button.actions(clock.t) == [IDENTIFY]
    assert button.actions(clock.t) == []  # once


def test_hold_warns_then_resets(rig: tuple[GpioButton, Any, Clock]) -> None:
    button, pin, clock = rig
    pin.drive_low()
    t0 = clock.t
    seen: list[tuple[float, str]] = []
    warning_at = None
    while clock.t - t0 < 12:
        clock.t = round(clock.t + 0.25, 6)
        for a in button.actions(clock.t):
            seen.append((round(clock.t - t0, 2), a))
        if button.warning and warning_at is None:
            warning_at = round(clock.t - t0, 2)
    assert seen == [(WARN_AFTER_S, WARNING), (RESET_AFTER_S, RESET)]
    assert warning_at == WARN_AFTER_S
    assert not button.warning  # resetting, no longer warning
    pin.drive_high()
    assert button.actions(clock.t) == []  # letting go after the reset does nothing more


def test_letting_go_during_the_warning_cancels(rig: tuple[GpioButton, Any, Clock]) -> None:
    button, pin, clock = rig
    pin.drive_low()
    assert hold(button, clock, 6.0) == [WARNING]
    assert button.warning
    pin.drive_high()
    assert button.actions(clock.t) == [CANCEL]
    assert not button.warning
    assert hold(button, clock, 20.0) == []


def test_press_lengths_without_ticks() -> None:
    logic = ButtonLogic()
    logic.pressed(0.0)
    assert logic.released(SHORT_PRESS_MAX_S - 0.01) == IDENTIFY
    logic.pressed(10.0)
    assert logic.released(10.0 + SHORT_PRESS_MAX_S) is None  # too long for identify
    assert logic.released(20.0) is None  # a release without a press


def test_bounce_is_not_a_press() -> None:
    logic = ButtonLogic()
    logic.pressed(0.0)
    assert logic.released(0.005) is None


def test_reset_can_be_disabled(rig: tuple[GpioButton, Any, Clock]) -> None:
    from gpiozero import Device

    _, _, clock = rig
    other = GpioButton(23, factory_reset=False, bounce_time=None, clock=clock)
    try:
        Device.pin_factory.pin(23).drive_low()
        assert hold(other, clock, 15.0) == []
        Device.pin_factory.pin(23).drive_high()
        assert other.actions(clock.t) == []
    finally:
        other.close()


def test_pull_down_button_is_pressed_high() -> None:
    from gpiozero import Device
    from gpiozero.pins.mock import MockFactory

    old = Device.pin_factory
    Device.pin_factory = MockFactory()
    clock = Clock(1000.0)
    b = GpioButton(5, pull_up=False, bounce_time=None, clock=clock)
    try:
        pin = Device.pin_factory.pin(5)
        pin.drive_high()
        clock.t += 1
        pin.drive_low()
        assert b.actions(clock.t) == [IDENTIFY]
    finally:
        b.close()
        Device.pin_factory.close()
        Device.pin_factory = old
