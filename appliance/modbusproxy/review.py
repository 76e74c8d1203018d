"""The conduit review: conduits that should be looked at again, and why. No I/O.

For the plant's periodic review of zones and conduits (`appliance conduits review`):

- `expired`: the conduit's expiry has passed (it passes nothing; the document still
  holds it): remove or renew it;
- `expiring`: it expires within EXPIRING_S (a week);
- `disabled`: it is switched off: remove it if it is no longer needed;
- `unused`: no traffic for `unused_days`. For a conduit with a Modbus restriction the
  proxy knows when each client last used it (`assets.Asset.uses`, kept in the history
  DB); for any other conduit only the net role's packet counter is known, which counts
  since the net role started: zero packets is reported once that start is longer ago
  than `unused_days`;
- `wider`: a network in a Modbus conduit's `from` (or `to`) with at least WIDER_FACTOR
  times more addresses than the clients (PLCs) the proxy saw use it, e.g. a /24 used by
  one host: narrow it to the hosts seen;
- `owner`: the owner names nobody to reach (no e-mail address or telephone number).

Only the configuration (the running revision), the net role's live counters and the
proxy's inventory are read, so the review is as good as what they saw: a conduit used
once a quarter looks unused after a month.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from appliance.config.model import Conduit, Config
from appliance.modbusproxy.assets import Asset

EXPIRING_S = 7 * 86400
WIDER_FACTOR = 4  # a network this many times larger than the hosts seen in it is wider
SHOWN_HOSTS = 8
_REACHABLE = re.compile(r"@|\+?\d[\d ()./-]{6,}\d")  # an e-mail address or a phone number


@dataclass(frozen=True)
class Finding:
    conduit: str
    kind: str  # expired | expiring | disabled | unused | wider | owner
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"conduit": self.conduit, "kind": self.kind, "message": self.message}


def _when(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _days(s: float) -> str:
    d = s / 86400
    return f"{d:.0f} days" if d >= 2 else f"{s / 3600:.0f} hours"


def usage(assets: Iterable[Asset]) -> dict[str, dict[str, Any]]:
    """Per conduit, from the inventory: the clients and when each last used it, the PLCs
    reached, the last time any did."""
    out: dict[str, dict[str, Any]] = {}
    for a in assets:
        for conduit, clients in a.uses.items():
            u = out.setdefault(conduit, {"clients": {}, "plcs": set(), "last_seen": 0.0})
            for client, t in clients.items():
                u["clients"][client] = max(t, u["clients"].get(client, 0.0))
                u["last_seen"] = max(u["last_seen"], t)
            u["plcs"].add(a.address)
    return out


def _wider(c: Conduit, key: str, nets: list[Any], hosts: Iterable[str]) -> list[Finding]:
    seen = [ipaddress.ip_address(h) for h in hosts]
    out = []
    for net in nets:
        inside = sorted({h for h in seen if h in net})
        if net.num_addresses < WIDER_FACTOR * max(len(inside), 1) or not inside:
            continue
        who = ", ".join(str(h) for h in inside[:SHOWN_HOSTS])
        more = f" and {len(inside) - SHOWN_HOSTS} more" if len(inside) > SHOWN_HOSTS else ""
        out.append(
            Finding(
                c.name,
                "wider",
                f"{key} {net} ({net.num_addresses} addresses) was used by {len(inside)} "
                f"host{'' if len(inside) == 1 else 's'} ({who}{more}): narrow it to "
                f"{'it' if len(inside) == 1 else 'them'}",
            )
        )
    return out


def review(
    config: Config,
    now: float,
    *,
    unused_days: float,
    assets: Iterable[Asset] = (),
    net: Mapping[str, Any] | None = None,
) -> list[Finding]:
    """What to look at again in `config`'s conduits (the module docstring), in the
    document's order of conduits. `net` is the net role's live document, if any."""
    uses = usage(assets)
    counters = (net or {}).get("conduits") or {}
    started = (net or {}).get("started_at")
    unused_s = unused_days * 86400
    at = datetime.fromtimestamp(now, UTC)
    out: list[Finding] = []
    for c in config.conduits:
        if c.expires is not None:
            left = (c.expires - at).total_seconds()
            when = c.expires.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
            if left <= 0:
                out.append(
                    Finding(c.name, "expired", f"expired {when} ({_days(-left)} ago): "
                            "it passes nothing; remove it or renew it")
                )  # fmt: skip
            elif left <= EXPIRING_S:
                out.append(Finding(c.name, "expiring", f"expires {when} (in {_days(left)})"))
        if not c.enabled:
            out.append(Finding(c.name, "disabled", "disabled: remove it if it is no longer needed"))
        active = c.active(at)
        u = uses.get(c.name)
        if c.modbus is not None and active:
            if u is not None and now - u["last_seen"] >= unused_s:
                out.append(
                    Finding(c.name, "unused", f"no Modbus request since {_when(u['last_seen'])} "
                            f"({_days(now - u['last_seen'])})")
                )  # fmt: skip
            if u is not None:
                out += _wider(c, "from", c.from_, u["clients"])
                out += _wider(c, "to", c.to, u["plcs"])
        packets = (counters.get(c.name) or {}).get("packets")
        if (
            active
            and u is None
            and packets == 0
            and isinstance(started, int | float)
            and now - started >= unused_s
        ):
            out.append(
                Finding(c.name, "unused", f"no packet since the net role started "
                        f"{_when(started)} ({_days(now - started)})")
            )  # fmt: skip
        if not _REACHABLE.search(c.owner):
            out.append(
                Finding(c.name, "owner", f"owner {c.owner!r} names no e-mail address or "
                        "telephone number to ask about it")
            )  # fmt: skip
    return out
