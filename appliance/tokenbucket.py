"""A token bucket per key (`Limiter`): `rate` a second on average, bursts of up to
`burst` at once. Pure (the caller gives the time) and thread-safe. Used by the web API's
rate limit (`appliance.web.ratelimit`) and the agent's syslog output bound.

At most `keys_max` keys are kept; beyond, the half idle longest is forgotten (which only
ever forgives).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

KEYS_MAX = 10_000


@dataclass
class _Bucket:
    tokens: float
    at: float


class Limiter:
    def __init__(self, rate: float, burst: int, keys_max: int = KEYS_MAX) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate = float(rate)
        self.burst = int(burst)
        self.keys_max = keys_max
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()

    def configure(self, rate: float, burst: int) -> None:
        """New figures (a committed revision changed them); the buckets keep their fill."""
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        with self._lock:
            self.rate, self.burst = float(rate), int(burst)

    def _refill(self, b: _Bucket, now: float) -> None:
        elapsed = max(0.0, now - b.at)  # a clock that went back refills nothing
        b.tokens = min(float(self.burst), b.tokens + elapsed * self.rate)
        b.at = now

    def check(self, keys: tuple[str, ...], now: float) -> float:
        """0.0: allowed, and one request is taken from every key's bucket; else the seconds
        until each of them has one again (nothing is taken: a refused request costs none)."""
        with self._lock:
            buckets = []
            wait = 0.0
            for key in keys:
                b = self._buckets.get(key)
                if b is None:
                    if len(self._buckets) >= self.keys_max:
                        self._forget(now)
                    b = self._buckets[key] = _Bucket(float(self.burst), now)
                else:
                    self._refill(b, now)
                buckets.append(b)
                if b.tokens < 1.0:
                    wait = max(wait, (1.0 - b.tokens) / self.rate)
            if wait > 0:
                return wait
            for b in buckets:
                b.tokens -= 1.0
            return 0.0

    def _forget(self, now: float) -> None:
        """Drop the half of the buckets that have been idle longest (the lock is held)."""
        for b in self._buckets.values():
            self._refill(b, now)
        oldest = sorted(self._buckets, key=lambda k: self._buckets[k].at)
        for k in oldest[: max(1, len(oldest) // 2)]:
            del self._buckets[k]

    def __len__(self) -> int:
        return len(self._buckets)
