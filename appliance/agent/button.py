"""The push button: a short press starts identify; holding it 10 s resets the unit to factory state.

`ButtonLogic` is the pure state machine, driven by press/release edges and a
clock the caller passes in:

- released after less than `SHORT_PRESS_MAX_S` (and more than `BOUNCE_S`): ``identify``
- held `WARN_AFTER_S`: ``warning`` (the LEDs alternate: let go now to cancel)
- released during the warning: ``cancel`` (nothing happens)
- held `RESET_AFTER_S`: ``reset`` (the agent shows RESETTING and wipes the unit)

`GpioButton` wires a gpiozero ``Button`` (imported lazily: only a unit with
GPIO needs gpiozero) to the logic; the agent's loop calls `actions(now)`
every tick to collect what happened.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

IDENTIFY, WARNING, CANCEL, RESET = "identify", "warning", "cancel", "reset"
BOUNCE_S = 0.02  # shorter "presses" are contact bounce
SHORT_PRESS_MAX_S = 3.0
WARN_AFTER_S = 3.0
RESET_AFTER_S = 10.0


class ButtonLogic:
    """Press/release edges and ticks in, actions out (each at most once per press)."""

    def __init__(self, factory_reset: bool = True) -> None:
        self.factory_reset = factory_reset
        self._pressed_at: float | None = None
        self._warned = False
        self._reset = False
        self._lock = threading.Lock()

    @property
    def warning(self) -> bool:
        """Whether the LEDs should show the reset warning now."""
        return self._pressed_at is not None and self._warned and not self._reset

    def pressed(self, now: float) -> None:
        with self._lock:
            if self._pressed_at is None:
                self._pressed_at = now
                self._warned = self._reset = False

    def released(self, now: float) -> str | None:
        with self._lock:
            if self._pressed_at is None:
                return None
            held = now - self._pressed_at
            warned, reset = self._warned, self._reset
            self._pressed_at = None
            self._warned = self._reset = False
        if reset:
            return None
        if warned:
            return CANCEL
        if BOUNCE_S <= held < SHORT_PRESS_MAX_S:
            return IDENTIFY
        return None

    def tick(self, now: float) -> str | None:
        with self._lock:
            if self._pressed_at is None or self._reset or not self.factory_reset:
                return None
            held = now - self._pressed_at
            if held >= RESET_AFTER_S:
                self._reset = True
                return RESET
            if held >= WARN_AFTER_S and not self._warned:
                self._warned = True
                return WARNING
        return None


class GpioButton:
    """A gpiozero Button feeding a ButtonLogic; `actions(now)` drains what happened."""

    def __init__(
        self,
        pin: int | str,
        *,
        pull_up: bool = True,
        factory_reset: bool = True,
        bounce_time: float | None = 0.05,
        clock: Callable[[], float] = time.time,
    ) -> None:
        from gpiozero import Button  # lazily: only a unit with GPIO needs gpiozero

        self.logic = ButtonLogic(factory_reset)
        self._clock = clock
        self._queue: list[str] = []
        self._lock = threading.Lock()
        self._button: Any = Button(pin, pull_up=pull_up, bounce_time=bounce_time)
        self._button.when_pressed = self._on_press
        self._button.when_released = self._on_release

    def _on_press(self) -> None:
        self.logic.pressed(self._clock())

    def _on_release(self) -> None:
        action = self.logic.released(self._clock())
        if action:
            with self._lock:
                self._queue.append(action)

    def actions(self, now: float) -> list[str]:
        with self._lock:
            out, self._queue = self._queue, []
        action = self.logic.tick(now)
        if action:
            out.append(action)
        return out

    @property
    def warning(self) -> bool:
        return self.logic.warning

    def close(self) -> None:
        self._button.close()
