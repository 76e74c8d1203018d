"""Which polled values are worth storing: deadbands and publish policies (pure, no I/O).

A tag's `publish` policy decides when a new value is stored in history:

- `every-poll`: every value (deadband ignored).
- `on-change` (default): when the value changed by more than the deadband since the
  last *stored* value (not the last polled one, so a slow drift is stored once it adds
  up); with `max_silence`, also when that many seconds passed since the last stored value.

Always stored, whatever the policy: the first value of a tag and any change of quality
(a value going bad, and coming back, is history). Deadbands apply to numbers only;
strings and bools are stored when they differ. With both an absolute and a percent
deadband, a change must exceed both (the absolute one is a floor under the percent one,
which shrinks to nothing near zero). NaN equals NaN here: a tag stuck at NaN is not
"changing" every poll.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from appliance.config.field import Device


@dataclass(frozen=True)
class Policy:
    every_poll: bool = False
    absolute: float = 0.0
    percent: float = 0.0
    max_silence: float | None = None


DEFAULT_POLICY = Policy()


@dataclass
class _Last:
    value: Any
    quality: str
    t: float


def policies(devices: Iterable[Device]) -> dict[str, Policy]:
    """The policy of every tag, by full name `<device>.<tag>`."""
    out: dict[str, Policy] = {}
    for dev in devices:
        for tag in dev.tags:
            db = tag.deadband
            out[f"{dev.name}.{tag.name}"] = Policy(
                every_poll=tag.publish == "every-poll",
                absolute=(db.absolute or 0.0) if db else 0.0,
                percent=(db.percent or 0.0) if db else 0.0,
                max_silence=tag.max_silence,
            )
    return out


def _number(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    return float(v)


def changed(policy: Policy, last: Any, value: Any) -> bool:
    """Whether `value` differs from the last stored `last` by more than the deadband."""
    a, b = _number(last), _number(value)
    if a is None or b is None:
        return type(last) is not type(value) or last != value
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) != math.isnan(b)
    if math.isinf(a) or math.isinf(b):
        return a != b
    threshold = max(policy.absolute, abs(a) * policy.percent / 100.0)
    diff = abs(b - a)
    return diff > threshold if threshold > 0 else diff != 0


def should_store(policy: Policy, last: _Last | None, value: Any, quality: str, t: float) -> bool:
    """The decision for one offered value (pure)."""
    if last is None or quality != last.quality or policy.every_poll:
        return True
    if policy.max_silence is not None and t - last.t >= policy.max_silence:
        return True
    return changed(policy, last.value, value)


class Publisher:
    """Remembers the last stored value of each tag and decides on each new one.

    Thread-safe: pollers of several devices may offer values at the same time.
    """

    def __init__(self, devices: Iterable[Device] = ()) -> None:
        self._lock = threading.Lock()
        self._policies: dict[str, Policy] = {}
        self._last: dict[str, _Last] = {}
        self.reconfigure(devices)

    def reconfigure(self, devices: Iterable[Device]) -> None:
        """New policies; tags that still exist keep their last stored value."""
        new = policies(devices)
        with self._lock:
            self._policies = new
            self._last = {k: v for k, v in self._last.items() if k in new}

    def policy(self, name: str) -> Policy:
        return self._policies.get(name, DEFAULT_POLICY)

    def offer(self, name: str, value: Any, quality: str, t: float) -> bool:
        """True if this value is to be stored (and it is then remembered as the last one)."""
        with self._lock:
            last = self._last.get(name)
            if not should_store(self._policies.get(name, DEFAULT_POLICY), last, value, quality, t):
                return False
            self._last[name] = _Last(value, quality, t)
            return True

    def forget(self, name: str) -> None:
        """The next value of `name` is stored whatever it is (e.g. after a restart)."""
        with self._lock:
            self._last.pop(name, None)
