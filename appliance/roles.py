"""The roles of the appliance: the one list that the supervisor, the CLI, status,
diagnostics, health and the demo read.

A role is one process (`appliance daemon <role>`, one systemd unit each in production)
that owns one part of the unit: the kernel's network state (net), the field devices
(field), the OPC UA server for IT (opcua), LEDs, button, heartbeat and notifications
(agent), the web UI and REST API (web). Each publishes a live document
(`state.live.LiveState`) at least every `ALIVE_WITHIN_S / 2` seconds; a role whose
document is older, or whose pid is gone, is not running.

A new role (a protocol-inspecting one is coming) is one entry here and its
`appliance/<name>/role.py`. Pure data: importing this module loads nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass

# A role whose live document is older than this is not running (it publishes at least
# twice as often).
ALIVE_WITHIN_S = 5.0


@dataclass(frozen=True)
class Role:
    name: str
    # Rung (its doorbell) when a configuration revision is committed or rolled back, so
    # it applies the new desired state at once instead of at its next poll.
    follows_config: bool

    @property
    def module(self) -> str:
        """The module whose `main(paths, stop)` runs the role's process."""
        return f"appliance.{self.name}.role"


# In start order: net first (the demarcation point is closed until it has applied a
# revision), web last (it shows what the others publish).
ROLES: tuple[Role, ...] = (
    Role("net", follows_config=True),  # links, addresses, routes, the nftables ruleset
    Role("field", follows_config=True),  # polls the field devices; history, alarms, SQL
    Role("opcua", follows_config=True),  # the OPC UA server that offers field values to IT
    Role("agent", follows_config=True),  # health, LEDs, button, heartbeat, syslog, webhooks
    Role("web", follows_config=False),  # the web UI and the REST API
)
ROLE_NAMES: tuple[str, ...] = tuple(r.name for r in ROLES)
# The doorbells to ring after a configuration change.
CONFIG_FOLLOWERS: tuple[str, ...] = tuple(r.name for r in ROLES if r.follows_config)
_BY_NAME = {r.name: r for r in ROLES}


def get(name: str) -> Role:
    """The role called `name`; KeyError names the known roles."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown role {name!r} (roles: {', '.join(ROLE_NAMES)})") from None
