"""The roles of the appliance: the one list that the supervisor, the CLI, status,
diagnostics, health and the demo read.

A role is one process (`appliance daemon <role>`, one systemd unit each in production)
that owns one part of the unit: the kernel's network state (net), the field devices
(field), the Modbus requests of restricted conduits (modbusproxy), the OPC UA server
for IT (opcua), LEDs, button, heartbeat and notifications (agent), the web UI and REST
API (web). Each publishes a live document
(`state.live.LiveState`) at least every `ALIVE_WITHIN_S / 2` seconds; a role whose
document is older, or whose pid is gone, is not running.

A new role is one entry here and its `appliance/<name>/role.py`. Pure data: importing
this module loads nothing else.

Every role object has the same shape (`RoleContract`): it takes the desired state
(`apply`, handed a `Change` of the desired revision by the one who reads the database),
does its periodic work (`step`), and reports what it holds (`snapshot`, the live
document). Its adapters (the nftables handle, the links, the Modbus links, the OPC UA
server, the HTTPS server's process, the LED pins) are handed in when it is built, so a
unit test builds it with fakes. The roles that talk to devices and clients over asyncio
(field, opcua, modbusproxy) are `AsyncRole`s and all run in one loop,
`appliance.rolekit.AsyncLoop`; the others keep the loop their inputs need (net: select on
netlink and the nftables monitor; agent: LED timing; web: a one-second tick).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # types only: importing this module stays free of the config stack
    from appliance.config.model import Config

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
    # the transparent proxy that checks each request of the Modbus-restricted conduits
    Role("modbusproxy", follows_config=True),
    Role("field", follows_config=True),  # polls the field devices; history, alarms, SQL
    Role("opcua", follows_config=True),  # the OPC UA server that offers field values to IT
    Role("agent", follows_config=True),  # health, LEDs, button, heartbeat, syslog, webhooks
    Role("web", follows_config=False),  # the web UI and the REST API
)
ROLE_NAMES: tuple[str, ...] = tuple(r.name for r in ROLES)
# The doorbells to ring after a configuration change.
CONFIG_FOLLOWERS: tuple[str, ...] = tuple(r.name for r in ROLES if r.follows_config)
_BY_NAME = {r.name: r for r in ROLES}


@dataclass(frozen=True)
class Change:
    """The desired revision changed (or was read for the first time).

    `config` is None when there is no revision yet (a new unit) or when the stored
    document no longer validates (`error` says why; the role keeps what it runs)."""

    revision_id: int | None
    config: Config | None
    error: str | None = None


class RoleContract(Protocol):
    """What every role object offers the loop that runs it."""

    name: str
    # something the live document shows has changed: publish it soon, not at the next
    # regular write
    dirty: bool

    def snapshot(self, now: float) -> dict[str, Any]:
        """The live document (`state.live.LiveState.write(name, ...)`)."""
        ...


class SyncRole(RoleContract, Protocol):
    """A role on threads with its own loop (net, agent, web) that calls `step`."""

    def step(self, now: float) -> None:
        """One pass of periodic work; never raises for bad input or a busy database."""
        ...


class SyncFollower(SyncRole, Protocol):
    """A sync role that follows the desired revision (web, agent): its loop hands it each
    `Change` that `rolekit.Desired` reads. The net role is not one: it is the role that
    moves revisions (applies, auto-confirms, reverts a pending one at its deadline), so
    it reads them, with their state, in its own step."""

    def apply(self, change: Change) -> None:
        """Make what the role runs match the desired revision."""
        ...


class AsyncRole(RoleContract, Protocol):
    """A role on asyncio (run by `appliance.rolekit.AsyncLoop`)."""

    async def start(self) -> None:
        """Open what the role serves (control socket, value stream), before any apply."""
        ...

    async def apply(self, change: Change) -> None: ...

    async def step(self, now: float) -> None: ...

    async def close(self) -> None:
        """Stop every task and close every adapter; the loop returns after it."""
        ...


def get(name: str) -> Role:
    """The role called `name`; KeyError names the known roles."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown role {name!r} (roles: {', '.join(ROLE_NAMES)})") from None
