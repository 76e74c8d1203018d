"""The API's request rate limit, per source address and per API token (IEC 62443-4-2
CR 7.1: one noisy script or host cannot take the API from everyone else).

`Limiter` keeps a token bucket per key: `rate` requests a second on average, bursts of up
to `burst` at once. The web app asks it before anything costly (authentication reads the
config DB, views read live state): `check(keys, now)` takes one request from each key's
bucket or says how long to wait (an answer 429 with Retry-After). Keys are
``source:<address>`` (IPv6 per /64, as the login throttle counts: one host has a whole
/64) and ``token:<digest>`` for a Bearer token, the digest of the text as sent (a made-up
token is held by its source's bucket anyway). Loopback is not limited (the unit's own
processes).

Buckets live in the worker process's memory: with `serve.WORKERS` gunicorn workers a
client may get up to that many times the rate (the kernel hands connections to workers;
one keep-alive connection stays with one). `appliance.tokenbucket` keeps the buckets.
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
import threading

from appliance.tokenbucket import Limiter


def source_key(address: str) -> str:
    """``source:<address>``; an IPv6 address counts as its /64."""
    from appliance.web.accounts import source_key as throttle_key

    return f"source:{throttle_key(address)}"


def _loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def token_key(bearer: str) -> str:
    return "token:" + hashlib.sha256(bearer.encode()).hexdigest()[:32]


def retry_after(wait: float) -> str:
    """The Retry-After header's whole seconds (at least 1)."""
    return str(max(1, math.ceil(wait)))


REFRESH_S = 5.0  # how often the figures are read again from the desired revision


class ApiRateLimit:
    """The web app's limit: per source and per token (`web.rate_limit`), asked before
    every request but the static assets. A refusal is a 429 with Retry-After, and a
    `security.rate_limited` event at most once a minute per source (with how many more
    were refused meanwhile): never an audit row per refused request, which would be a
    way to fill the disk."""

    def __init__(self) -> None:
        from appliance.config.web import RateLimit
        from appliance.state.auditlog import Repeats

        d = RateLimit()
        self.sources = Limiter(d.per_source, d.burst)
        self.tokens = Limiter(d.per_bearer, d.burst)
        self.repeats = Repeats()
        self._read_at: float | None = None
        self._lock = threading.Lock()

    def _figures(self, now: float) -> None:
        with self._lock:
            if self._read_at is not None and 0 <= now - self._read_at < REFRESH_S:
                return
            self._read_at = now
        from appliance.config.web import RateLimit
        from appliance.web.context import ctx

        try:
            cfg = ctx().desired()[1]
        except Exception:  # the config DB unreadable: the defaults hold, the view says why
            cfg = None
        fig = cfg.web.rate_limit if cfg is not None else RateLimit()
        self.sources.configure(fig.per_source, fig.burst)
        self.tokens.configure(fig.per_bearer, fig.burst)

    def check(self, address: str, bearer: str | None, now: float) -> float:
        """0.0, or the seconds to wait. Loopback is not limited: only the unit's own
        processes (the console, its health checks) come from there."""
        if _loopback(address):
            return 0.0
        self._figures(now)
        wait = self.sources.check((source_key(address),), now)
        if wait == 0.0 and bearer:
            wait = self.tokens.check((token_key(bearer),), now)
        return wait

    def refused(self, address: str, path: str, wait: float, now: float) -> dict[str, object]:
        """The JSON body of the 429; the event, once a minute per source."""
        from appliance.web.context import ctx

        held = self.repeats.offer(("rate_limited", source_key(address)), now)
        if held is not None:
            what = f"API requests from {address} over the rate limit (last: {path[:100]})"
            if held:
                what += f"; {held} more refused in the last minute"
            try:
                ctx().store.event(
                    "security.rate_limited",
                    what,
                    source=address[:16],
                    severity="warning",
                    data={"from": address, "repeats": held},
                    at=now,
                )
            except Exception:  # an event that cannot be written never turns a 429 into a 500
                pass
        return {
            "error": f"too many requests: try again in {retry_after(wait)} s",
            "field": None,
            "retry_after": float(retry_after(wait)),
        }
