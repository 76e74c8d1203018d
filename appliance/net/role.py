"""The net role: makes the kernel hold what the desired revision says, and reports it.

Each step: revert a pending revision whose deadline passed; apply the desired
revision if it changed (or a conduit expired); reconcile the NICs on link events;
read the table back, re-assert it on drift; publish counters, links, the unit's
ports (`net.ports`: every NIC, configured or not, read every PORTS_EVERY_S and at once on
a link event; a carrier change is a `port.carrier_up`/`port.carrier_lost` event) and
denied flows to the live state. Only this role needs CAP_NET_ADMIN.

Every ANSWERS_EVERY_S it asks conntrack which conduits' connections are answered
(`conduits[name].connections`/`.unanswered`): a conduit whose connections all went
unanswered at two reads in a row is `answering: false` and a `conduit.not_answering`
event (warning: the destination is off, unplugged or the address is wrong; "who is to
blame" at the demarcation point), `conduit.answering` when a reply comes again.

A link with `dhcp: true` gets a DHCP client (`appliance.net.dhcp`, supervised here) that
only reports its lease; this role applies it (address, default route, DNS servers when the
document names none), shows it (`links[].dhcp`) and makes events of it: `dhcp.bound`,
`dhcp.renewed` (when what the lease gives changed), `dhcp.lost` (warning: run out or
taken back), `dhcp.released` (the document dropped dhcp).

Its control socket (`<run_dir>/net.sock`) takes one request: `identify_port` (blink a
port's LED for an installer, through the `PortBlinker` adapter it is given).
"""

from __future__ import annotations

import ipaddress
import json
import logging
import select
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from appliance.config.model import Config
from appliance.config.netsvc import Dns
from appliance.errors import ApplianceError, ApplyFailed, Invalid, NotFound, Unavailable
from appliance.net import nft as nftlib
from appliance.net.conntrack import Conntrack, answers, flows_to_cut
from appliance.net.dhcp import DhcpClients, Lease
from appliance.net.identify import IDENTIFY_DEFAULT_S, IDENTIFY_MAX_S, PortBlinker
from appliance.net.links import Forwarding, LinkObs, Links
from appliance.net.netsvc import NetServices, TimeStatus
from appliance.net.ports import Port, Ports, carrier_changes
from appliance.net.render import Ruleset, render, render_fail_closed
from appliance.state import revisions as revs
from appliance.state.control import ControlServer, socket_path
from appliance.state.db import Revision, Store
from appliance.state.live import LiveState

log = logging.getLogger("appliance.net")

DRIFT_EVERY_S = 5.0
LINKS_EVERY_S = 30.0
PORTS_EVERY_S = 5.0  # and at once on a netlink link event (a carrier change is one)
COUNTERS_EVERY_S = 1.0
TIME_EVERY_S = 10.0  # the time client's state (chronyc)
ANSWERS_EVERY_S = 5.0  # which conduits' connections are answered (conntrack)
MAX_ANSWER_FLOWS = 20_000  # tracked connections matched to conduits per read (the dump is
# read whole: leaving a netlink dump half read would leave its rest on the socket)
DHCP_EVERY_S = 1.0  # the DHCP clients (alive?) and their lease files
# Reading the table back costs ~30 ms per 1000 conduits. Periodic reads are spaced
# so that they take at most 1/COUNTERS_DUTY (counters) and 1/DRIFT_DUTY (drift) of
# the time: a 10k-conduit unit reads counters every ~8 s instead of every second.
# Drift is still caught at once by the nftables monitor.
COUNTERS_DUTY = 20
DRIFT_DUTY = 50
DENIED_EVENTS_PER_MIN = 20
RETRY_APPLY_S = 10.0


@dataclass
class Applied:
    revision_id: int | None
    sha256: str | None
    config: Config | None
    ruleset: Ruleset
    fingerprint: str
    at: float


@dataclass
class NetState:
    applied: Applied | None = None
    links: list[LinkObs] = field(default_factory=list)
    ports: list[Port] = field(default_factory=list)
    carry: dict[str, dict[str, int]] = field(default_factory=dict)  # counters before re-applies
    conduits: dict[str, dict[str, int]] = field(default_factory=dict)
    drops: dict[str, dict[str, int]] = field(default_factory=dict)
    denied: list[dict[str, Any]] = field(default_factory=list)
    denied_seen: set[tuple] = field(default_factory=set)
    denied_budget: tuple[float, int] = (0.0, 0)
    drift_count: int = 0
    drift_last: float | None = None
    last_error: str | None = None
    failed_sha: str | None = None
    failed_at: float = 0.0
    # the kernel held a bridge table of ours since this role started (the unit bridged):
    # later rulesets keep one, closed when not bridging (render's keep_bridge)
    bridge_table: bool = False
    bridge_error: str | None = None
    # per conduit: {"connections", "unanswered"} at the last conntrack read, and the
    # conduits unanswered at the read before (two in a row make "not answering")
    answers: dict[str, dict[str, int]] = field(default_factory=dict)
    silent_once: set[str] = field(default_factory=set)
    not_answering: set[str] = field(default_factory=set)


def _overlapping(config: Config | None, leases: dict[str, Lease]) -> dict[str, str]:
    """Leases whose subnet meets a subnet of another link's addresses (a server on the IT
    network handing out the OT subnet must not make the unit route OT traffic to IT)."""
    out: dict[str, str] = {}
    for name, lease in leases.items():
        net = ipaddress.ip_interface(lease.address).network
        for link in config.links() if config else []:
            if link.name == name:
                continue
            mine = [a for a in link.addresses if a.version == 4]
            other = next((a for a in mine if a.network.overlaps(net)), None)
            if other is not None:
                out[name] = f"{lease.address} overlaps {other} on {link.name}"
                break
    return out


class NetRole:
    name = "net"

    def __init__(
        self,
        store: Store,
        live: LiveState,
        nft: nftlib.Nft,
        links: Links | None,
        clock: Callable[[], float] = time.time,
        monitor: nftlib.NftMonitor | None = None,
        forwarding: Forwarding | None = None,
        conntrack: Conntrack | None = None,
        ports: Ports | None = None,
        blinker: PortBlinker | None = None,
        services: NetServices | None = None,
        dhcp: DhcpClients | None = None,
    ) -> None:
        self.store = store
        self.live = live
        self.nft = nft
        self.links = links
        self.clock = clock
        self.monitor = monitor
        self.forwarding = forwarding or Forwarding()
        self.conntrack = conntrack
        # the port list reads netlink through the links adapter unless given its own
        self.ports = ports if ports is not None else (Ports(links.nics) if links else None)
        # blinks the LEDs of the NICs of the namespace the links adapter is in
        self.blinker = blinker if blinker is not None else (PortBlinker() if links else None)
        self.identifying: dict[str, float] = {}  # port -> until (the role's clock)
        # the time client's sources and the resolver's file (None: not this role's, in tests)
        self.services = services
        self.time: TimeStatus | None = None
        self.unsynchronised_since: float | None = None  # (the role's clock)
        self._services_error: str | None = None
        # the DHCP clients of the links with dhcp, and the leases they hold (by link name)
        # (the links adapter's namespace is the one the clients run in)
        self.dhcp = dhcp if dhcp is not None else (DhcpClients(live.run_dir) if links else None)
        self.leases: dict[str, Lease] = {}
        # conntrack in the bridge family (nf_conntrack_bridge), probed on first bridging
        self.bridge_conntrack: bool | None = None
        self.state = NetState()
        self.started_at = clock()
        self._next = {
            "drift": 0.0,
            "links": 0.0,
            "counters": 0.0,
            "publish": 0.0,
            "ports": 0.0,
            "time": 0.0,
            "dhcp": 0.0,
            "answers": 0.0,
        }
        self.dirty = True  # something the live state shows has changed
        self._list_cost = 0.0  # seconds one read-back of the table takes (moving average)
        self._last_drift = 0.0
        self._ports_error: str | None = None

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> None:
        """Close the gate before anything else, then allow forwarding.

        A table found in the kernel is adopted (a restart must not cut traffic), unless
        there is no desired revision (first boot, or the databases wiped by a factory
        reset): then that table is a wiped configuration's, conduits and all, and the
        fail-closed ruleset replaces it."""
        found = self.nft.list_table()
        self.state.bridge_table = nftlib.holds_bridge_table(found)
        unconfigured = revs.desired(self.store) is None
        if found is None or unconfigured:
            closed = render_fail_closed(bridge=self.state.bridge_table)
            self._apply_ruleset(closed, None, None, self.clock())
            why = "no ruleset found" if found is None else "no configuration"
            self.store.event(
                "net.fail-closed",
                f"{why}: fail-closed ruleset loaded (no forwarding)",
                source="net",
            )
        else:
            # adopt the table as found (e.g. after a daemon restart): the gate stays
            # as it was; the first step re-applies the desired revision.
            self.state.applied = Applied(
                None, None, None, render_fail_closed(), nftlib.fingerprint(found), self.clock()
            )
        if not self.forwarding.enabled():
            self.forwarding.set(True)

    def run(self, stopping: Callable[[], bool]) -> None:
        doorbell = self.live.bind_doorbell(self.name)
        control = ControlServer(
            socket_path(self.live.run_dir, self.name), {"identify_port": self.identify_port}
        )
        fds = [doorbell.fileno()]
        fds += [self.links.fileno()] if self.links else []
        fds += [self.monitor.fileno()] if self.monitor else []
        try:
            self.start()
            control.start()
            while not stopping():
                self.safe_step()
                ready, _, _ = select.select(fds, [], [], 0.5)
                if doorbell.fileno() in ready:
                    while True:
                        try:
                            doorbell.recv(64)
                        except BlockingIOError:
                            break
                if self.links and self.links.fileno() in ready and self.links.drain():
                    self._next["links"] = 0.0
                    self._next["ports"] = 0.0
                if self.monitor and self.monitor.fileno() in ready and self.monitor.drain():
                    # someone changed nftables: read it back now (at most every 0.2 s)
                    self._next["drift"] = min(self._next["drift"], self._last_drift + 0.2)
        finally:
            control.stop()
            doorbell.close()
            if self.dhcp is not None:
                self.dhcp.close()

    def safe_step(self) -> None:
        try:
            self.step()
        except ApplianceError as e:
            self._error(str(e))
        except Exception as e:  # a bug must not stop the role holding the gate
            log.exception("net step failed")
            self._error(f"internal error: {e}")

    # -- one reconcile pass ------------------------------------------------------

    def step(self, now: float | None = None) -> None:
        """One reconcile pass at `now` (the role's clock when not given)."""
        now = self.clock() if now is None else now
        reverted = revs.expire_pending(self.store, now)
        if reverted:
            log.warning(reverted.message)
        self._reconcile_revision(now)
        if self.dhcp is not None and now >= self._next["dhcp"]:
            self._step_dhcp(self.dhcp, now)
            self._next["dhcp"] = now + DHCP_EVERY_S
        if now >= self._next["links"] and self.state.applied and self.state.applied.config:
            self._reconcile_links(self.state.applied.config)
            self._next["links"] = now + LINKS_EVERY_S
        if self.services is not None and now >= self._next["time"]:
            self._read_time(self.services, now)
            self._next["time"] = now + TIME_EVERY_S
        if self.ports is not None and now >= self._next["ports"]:
            self._read_ports(self.ports, now)
            self._next["ports"] = now + PORTS_EVERY_S
        if self.conntrack is not None and now >= self._next["answers"]:
            self._read_answers(self.conntrack, now)
            self._next["answers"] = now + ANSWERS_EVERY_S
        listing = None
        if now >= self._next["drift"]:
            listing = self._list()
            self._check_drift(listing, now)
            listing = self._list() if self.state.drift_last == now else listing
            self._next["drift"] = now + max(DRIFT_EVERY_S, DRIFT_DUTY * self._list_cost)
            self._last_drift = now
        if now >= self._next["counters"]:
            self._read_counters(listing if listing is not None else self._list(), now)
            self._next["counters"] = now + max(COUNTERS_EVERY_S, COUNTERS_DUTY * self._list_cost)
            self.dirty = True
        if self.dirty or now >= self._next["publish"]:
            self.publish(now)

    def _list(self) -> list[dict] | None:
        t0 = time.perf_counter()
        listing = self.nft.list_table()
        cost = time.perf_counter() - t0
        self._list_cost = cost if not self._list_cost else 0.7 * self._list_cost + 0.3 * cost
        self.state.bridge_table |= nftlib.holds_bridge_table(listing)
        return listing

    def _reconcile_revision(self, now: float) -> None:
        rev = revs.desired(self.store)
        applied = self.state.applied
        due = (
            applied is not None
            and applied.ruleset.next_change is not None
            and (datetime.fromtimestamp(now, UTC) >= applied.ruleset.next_change)
        )
        if rev is None:
            return  # fail-closed until a first revision is committed
        if applied is not None and applied.sha256 == rev.sha256 and applied.revision_id == rev.id:
            if due:
                self._apply_revision(rev, now)
            elif rev.state == revs.PENDING and rev.auto_confirm:
                self._auto_confirm(rev, now)
            return
        if self.state.failed_sha == rev.sha256 and now - self.state.failed_at < RETRY_APPLY_S:
            return
        self._apply_revision(rev, now)

    def _apply_revision(self, rev: Revision, now: float) -> None:
        config = revs.config_of(rev)
        self._record_expiries(config, now)
        when = datetime.fromtimestamp(now, UTC)
        ruleset = render(config, when, keep_bridge=self.state.bridge_table)
        before = self.state.applied.ruleset if self.state.applied else None
        try:
            self._apply_ruleset(ruleset, rev, config, now)
        except ApplyFailed as e:
            self.state.failed_sha, self.state.failed_at = rev.sha256, now
            if rev.state == revs.PENDING:
                revs.revert_pending(
                    self.store, reason=f"apply failed: {e}", now=now, severity="error"
                )
                self._reconcile_revision(now)  # back to the confirmed revision at once
            else:
                self._error(f"revision {rev.id} could not be applied: {e}")
            return
        self.state.failed_sha = None
        self.state.last_error = None
        self.store.event(
            "net.applied",
            f"revision {rev.id} applied ({rev.state})",
            source="net",
            data={"revision": rev.id, "sha256": rev.sha256},
            at=now,
        )
        self._next["links"] = 0.0
        # the DHCP clients first: one the revision drops releases its lease while the
        # address it tells the server from is still there
        self._next["dhcp"] = 0.0
        if self.services is not None:
            self._apply_services(self.services, config, now)
        if before is not None:
            self._cut_withdrawn(before, ruleset, now)
        if rev.state == revs.PENDING and rev.auto_confirm:
            self._auto_confirm(rev, now)

    def _cut_withdrawn(self, before: Ruleset, after: Ruleset, now: float) -> None:
        """End the established connections of flows the new ruleset no longer allows."""
        withdrawn = before.withdrawn(after)
        if self.conntrack is None or not withdrawn:
            return
        cut = self.conntrack.cut(flows_to_cut(self.conntrack.flows(), withdrawn, after.elements()))
        if cut:
            self.store.event(
                "traffic.cut",
                f"{cut} established connection(s) ended: their conduit was withdrawn",
                source="net",
                data={"connections": cut},
                at=now,
            )

    def _auto_confirm(self, rev: Revision, now: float) -> None:
        revs.confirm(self.store, author=rev.committed_by or "net", now=now, automatic=True)

    def _apply_ruleset(
        self, ruleset: Ruleset, rev: Revision | None, config: Config | None, now: float
    ) -> None:
        # the kernel restarts counters with the new table: take what they say now
        self._read_counters(self.nft.list_table(), now, events=False)
        self._carry_counters()
        self.nft.apply(ruleset.document())
        listing = self.nft.list_table() or []
        self.state.bridge_table |= ruleset.bridged
        self.state.applied = Applied(
            rev.id if rev else None,
            rev.sha256 if rev else None,
            config,
            ruleset,
            nftlib.fingerprint(listing),
            now,
        )
        self.state.denied_seen.clear()
        self.dirty = True

    def _carry_counters(self) -> None:
        """Keep conduit and drop counters across a re-apply (the kernel restarts them)."""
        for group in (self.state.conduits, self.state.drops):
            for name, c in group.items():
                self.state.carry[name] = {"packets": c["packets"], "bytes": c["bytes"]}

    def _record_expiries(self, config: Config, now: float) -> None:
        """One conduit.expired event per conduit expiry, even across daemon restarts."""
        from appliance.state.db import Event

        when = datetime.fromtimestamp(now, UTC)
        for c in config.conduits:
            if c.expires is None or c.expires > when or not c.enabled:
                continue
            data = {"conduit": c.name, "owner": c.owner, "expires": c.expires.isoformat()}
            marker = json.dumps(data, sort_keys=True)
            seen = (
                Event.select()
                .where((Event.kind == "conduit.expired") & (Event.data == marker))
                .exists()
            )
            if not seen:
                self.store.event(
                    "conduit.expired",
                    f"conduit {c.name} (owner {c.owner}) expired at {c.expires.isoformat()}",
                    source="net",
                    data=data,
                    at=now,
                )

    def _reconcile_links(self, config: Config) -> None:
        if self.links is None:
            return
        try:
            changes = self.links.reconcile(config, self.leases, self.clock())
        except ApplyFailed as e:
            self._error(str(e))
            changes = list(getattr(e, "done", []))  # what was done before (or beside) it
        if config.bridge is not None:
            ports = [p.name for p in config.bridge_ports()]
            changes.extend(self._bridge_filter(config.bridge.name, ports))
        elif self.state.bridge_table:  # the unit bridged: its NICs get their IPv6 back
            try:
                changes.extend(self.forwarding.ipv6_back([i.name for i in config.interfaces]))
            except ApplyFailed as e:
                self._error(str(e))
        if changes:
            self.store.event(
                "net.links", "; ".join(changes), source="net", data={"changes": changes}
            )
        before = {o.name: (o.present, o.oper) for o in self.state.links}
        self.state.links = self.links.observe(config)
        self.dirty = True
        for o in self.state.links:
            if o.name in before and before[o.name] != (o.present, o.oper):
                sev = "info" if o.oper == "UP" else "warning"
                self.store.event(
                    "net.link",
                    f"{o.name} ({o.role}) is {o.oper.lower() if o.present else 'absent'}",
                    source="net",
                    severity=sev,
                    data=o.as_dict(),
                )

    def _bridge_filter(self, bridge: str, ports: list[str]) -> list[str]:
        """br_netfilter's sysctls for bridge mode (bridged IP through the inet table); what
        the kernel offers is found out once (shown in the snapshot's `bridge.kernel`)."""
        if self.bridge_conntrack is None:
            self.bridge_conntrack = self.nft.bridge_conntrack()
        try:
            changes = self.forwarding.bridge_filter(bridge, ports)
        except ApplyFailed as e:
            self.state.bridge_error = str(e)
            self._error(str(e))
            return []
        if self.state.bridge_error is not None and self.state.last_error == self.state.bridge_error:
            self.state.last_error = None
        self.state.bridge_error = None
        return changes

    def _apply_services(self, services: NetServices, config: Config, now: float) -> None:
        """The revision's NTP servers to the time client, its DNS to the resolver's file."""
        try:
            changes = services.apply(config.time, self._dns(config))
        except ApplianceError as e:
            self._services_error = f"the time client did not take the NTP servers: {e}"
            self._error(self._services_error)
            return
        if changes:
            self.store.event(
                "net.services", "; ".join(changes), source="net", data={"changes": changes}, at=now
            )
            self._next["time"] = now + 2.0  # iburst: the first answers come within seconds

    def _dns(self, config: Config) -> Dns:
        """The resolver's servers: the document's, else those of the first DHCP link's
        lease (document order) that names any."""
        if config.dns.servers:
            return config.dns
        for link in config.links():
            lease = self.leases.get(link.name or "") if link.dhcp else None
            if lease is not None and lease.dns:
                return config.dns.model_copy(update={"servers": list(lease.dns)})
        return config.dns

    def _step_dhcp(self, dhcp: DhcpClients, now: float) -> None:
        """A client per present DHCP link (started, restarted, stopped), their leases
        read; a lease that came, changed or went is applied at once and is an event."""
        config = self.state.applied.config if self.state.applied else None
        present = {o.name for o in self.state.links if o.present}
        # (a lease is read, and held, before its link is seen: a restarted role keeps it)
        want = [link.name for link in (config.links() if config else []) if link.dhcp and link.name]
        for change in dhcp.sync(want, ready=present):
            self.store.event(
                "dhcp.client",
                change.message,
                source="net",
                severity=change.severity,
                data={"link": change.link, **change.data},
                at=now,
            )
        found, bad = dhcp.leases(want)
        for link, why in bad.items():
            self._error(f"{link}: the DHCP lease file is not a lease: {why}")
        leases = {name: lease for name, lease in found.items() if lease.remaining(now) > 0}
        for name, why in _overlapping(config, leases).items():
            self._error(f"{name}: DHCP lease refused: {why}")
            del leases[name]
        before = self.leases
        if leases == before:
            return
        for name, lease in leases.items():
            old = before.get(name)
            data = {"link": name, **lease.as_dict()}
            if old is None:
                self.store.event(
                    "dhcp.bound",
                    f"{name}: DHCP lease {lease.address} from {lease.server or 'a server'} "
                    f"(router {lease.router or 'none'}, {lease.lease_s} s)",
                    source="net",
                    data=data,
                    at=now,
                )
            elif not old.same(lease):
                self.store.event(
                    "dhcp.renewed",
                    f"{name}: DHCP lease now {lease.address} (router {lease.router or 'none'}, "
                    f"DNS {', '.join(lease.dns) or 'none'}; was {old.address}, router "
                    f"{old.router or 'none'}, DNS {', '.join(old.dns) or 'none'})",
                    source="net",
                    data={**data, "was": old.as_dict()},
                    at=now,
                )
        for name, old in before.items():
            if name in leases:
                continue
            data = {"link": name, **old.as_dict()}
            if name not in want:
                self.store.event(
                    "dhcp.released",
                    f"{name}: DHCP lease {old.address} given back (no DHCP on it now)",
                    source="net",
                    data=data,
                    at=now,
                )
                continue
            why = "ran out" if old.remaining(now) == 0 else "was taken back (released or refused)"
            self.store.event(
                "dhcp.lost",
                f"{name}: DHCP lease {old.address} {why}; the address is removed",
                source="net",
                severity="warning",
                data=data,
                at=now,
            )
        dns_before = self._dns(config) if config else None
        self.leases = leases
        self.dirty = True
        self._next["links"] = 0.0  # apply it now
        if config is not None and self.services is not None and self._dns(config) != dns_before:
            self._apply_services(self.services, config, now)

    def _dhcp_snapshot(self, name: str) -> dict[str, Any]:
        lease = self.leases.get(name)
        out: dict[str, Any] = {
            "bound": lease is not None,
            "client_pid": self.dhcp.pid(name) if self.dhcp is not None else None,
        }
        if lease is not None:
            out.update(lease.as_dict())
        return out

    def _read_time(self, services: NetServices, now: float) -> None:
        """The time client's state; losing and regaining sync are events (when the running
        revision names NTP servers: without any the clock is not kept, and not reported)."""
        config = self.state.applied.config if self.state.applied else None
        servers = config.time.ntp if config else []
        status = services.time_status()
        before = self.time
        self.time = status
        self.dirty = True
        if status.synchronised or not servers:
            self.unsynchronised_since = None
        elif self.unsynchronised_since is None:
            self.unsynchronised_since = now
        changed = before is None or before.synchronised != status.synchronised
        # the first reading is an event only when in sync: a unit starts unsynchronised
        if servers and changed and (status.synchronised or before is not None):
            self._time_event(status, now)

    def _time_event(self, status: TimeStatus, now: float) -> None:
        if status.synchronised:
            self.store.event(
                "time.synchronised",
                f"the clock is in sync with {status.source} (stratum {status.stratum})",
                source="net",
                data=status.as_dict(),
                at=now,
            )
        else:
            why = status.error or f"{status.reachable} of {status.sources} NTP servers answer"
            self.store.event(
                "time.unsynchronised",
                f"the clock lost its NTP sync: {why}",
                source="net",
                severity="warning",
                data=status.as_dict(),
                at=now,
            )

    def time_snapshot(self) -> dict[str, Any] | None:
        config = self.state.applied.config if self.state.applied else None
        if self.services is None or config is None:
            return None
        out: dict[str, Any] = {
            "servers": list(config.time.ntp),
            "unsynchronised_after_s": config.time.unsynchronised_after_minutes * 60,
            "unsynchronised_since": self.unsynchronised_since,
            "dns": list(config.dns.servers),
        }
        if self.time is not None:
            out.update(self.time.as_dict())
        return out

    def _read_ports(self, reader: Ports, now: float) -> None:
        """Every NIC of the namespace, labelled with the running configuration's roles; a
        carrier that came or went is an event."""
        config = self.state.applied.config if self.state.applied else None
        try:
            ports = reader.read(config)
        except ApplianceError as e:
            self._error(str(e))
            self._ports_error = str(e)
            return
        if self._ports_error is not None and self.state.last_error == self._ports_error:
            self.state.last_error = None  # that error is over (others wait for an apply)
        self._ports_error = None
        for change in carrier_changes(self.state.ports, ports):
            self.store.event(
                change.kind,
                change.message,
                source="net",
                severity=change.severity,
                data=change.data,
                at=now,
            )
        self.state.ports = ports
        self.dirty = True

    # -- requests (control socket: a thread of its own) -----------------------------------

    def identify_port(
        self, port: str, seconds: int = IDENTIFY_DEFAULT_S, actor: str = "cli"
    ) -> dict[str, Any]:
        """Blink `port`'s LED for `seconds` (one of the ports listed now)."""
        if isinstance(seconds, bool) or not isinstance(seconds, int):
            raise Invalid(f"{seconds!r} is not a whole number of seconds", field="seconds")
        if not 1 <= seconds <= IDENTIFY_MAX_S:
            raise Invalid(f"must be between 1 and {IDENTIFY_MAX_S} seconds", field="seconds")
        listed = [p.name for p in self.state.ports]  # the list the loop published last
        if port not in listed:
            raise NotFound(f"no port {port!r} (ports: {', '.join(listed) or 'none'})", field="port")
        if self.blinker is None:
            raise Unavailable("this net role has no way to blink a port's LED")
        self.blinker.blink(port, seconds)
        now = self.clock()
        self.identifying[port] = now + seconds
        self.dirty = True
        self.store.event(
            "port.identify",
            f"{port}: blinking its LED for {seconds} s, asked by {actor}",
            source="net",
            data={"port": port, "seconds": seconds, "actor": str(actor)},
            at=now,
        )
        return {"port": port, "until": now + seconds}

    def _check_drift(self, listing: list[dict] | None, now: float) -> None:
        applied = self.state.applied
        if applied is None:
            return
        fp = nftlib.fingerprint(listing) if listing is not None else None
        if fp == applied.fingerprint:
            return
        what = "table missing" if listing is None else "table changed"
        self.state.drift_count += 1
        self.state.drift_last = now
        self.store.event(
            "net.drift",
            f"ruleset drift ({what}) detected; re-asserting the configured ruleset",
            source="net",
            severity="warning",
            data={"what": what},
            at=now,
        )
        if applied.revision_id is None:
            self._apply_ruleset(render_fail_closed(bridge=self.state.bridge_table), None, None, now)
            return
        rev = Revision.get_by_id(applied.revision_id)
        self._apply_revision(rev, now)

    def _read_counters(self, listing: list[dict] | None, now: float, events: bool = True) -> None:
        applied = self.state.applied
        if listing is None or applied is None:
            return
        carry = self.state.carry
        conduits: dict[str, dict[str, int]] = {}
        for key, c in nftlib.element_counters(listing).items():
            owner = applied.ruleset.owners.get(key)
            if owner is None:
                continue
            agg = conduits.setdefault(owner, dict(carry.get(owner, {"packets": 0, "bytes": 0})))
            agg["packets"] += c["packets"]
            agg["bytes"] += c["bytes"]
        if applied.config:
            for c in applied.config.conduits:
                conduits.setdefault(c.name, dict(carry.get(c.name, {"packets": 0, "bytes": 0})))
        drops = {}
        for name, c in nftlib.named_counters(listing).items():
            base = carry.get(name, {"packets": 0, "bytes": 0})
            drops[name] = {
                "packets": base["packets"] + c["packets"],
                "bytes": base["bytes"] + c["bytes"],
            }
        self.state.conduits, self.state.drops = conduits, drops
        self.state.denied = nftlib.denied(listing)
        if events:
            self._denied_events(now)

    def _read_answers(self, conntrack: Conntrack, now: float) -> None:
        """Which conduits' connections conntrack saw answered; events when a conduit stops
        or starts being answered (see the module docstring)."""
        applied = self.state.applied
        if applied is None:
            return
        try:
            flows = conntrack.flows()[:MAX_ANSWER_FLOWS]
        except Exception as e:  # netlink trouble: keep the last reading, say it once
            log.warning("cannot read conntrack: %s", e)
            return
        got = answers(flows, ((c, el) for _n, _v, c, el in applied.ruleset.owned))
        silent = {name for name, a in got.items() if a["unanswered"] == a["connections"] > 0}
        for name in sorted((silent & self.state.silent_once) - self.state.not_answering):
            a = got[name]
            self.store.event(
                "conduit.not_answering",
                f"conduit {name}: its destination does not answer ({a['unanswered']} "
                "connection attempts without a reply)",
                source="net",
                severity="warning",
                data={"conduit": name, **a},
                at=now,
            )
            self.state.not_answering.add(name)
        current = {c for _n, _v, c, _el in applied.ruleset.owned}
        for name in sorted(self.state.not_answering - silent):
            if name in got:  # answered again (not merely the attempts timed out)
                self.store.event(
                    "conduit.answering",
                    f"conduit {name}: its destination answers again",
                    source="net",
                    data={"conduit": name, **got[name]},
                    at=now,
                )
                self.state.not_answering.discard(name)
            elif name not in current:  # withdrawn or expired: nothing left to answer
                self.state.not_answering.discard(name)
        if got != self.state.answers:
            self.dirty = True
        self.state.answers, self.state.silent_once = got, silent

    def _denied_events(self, now: float) -> None:
        window_start, used = self.state.denied_budget
        if now - window_start >= 60:
            window_start, used = now, 0
        fresh = []
        for d in self.state.denied:
            key = (d["src"], d["dst"], d["proto"], d["port"])
            if key not in self.state.denied_seen:
                self.state.denied_seen.add(key)
                fresh.append(d)
        for d in fresh[: max(0, DENIED_EVENTS_PER_MIN - used)]:
            self.store.event(
                "traffic.denied",
                f"dropped {d['src']} → {d['dst']} {d['proto']}/{d['port']}: no conduit allows it",
                source="net",
                severity="notice",
                data=d,
                at=now,
            )
        skipped = len(fresh) - max(0, DENIED_EVENTS_PER_MIN - used)
        if skipped > 0:
            self.store.event(
                "traffic.denied",
                f"{skipped} more denied flows in the last minute (not listed one by one)",
                source="net",
                severity="notice",
                data={"count": skipped},
                at=now,
            )
        self.state.denied_budget = (window_start, used + len(fresh))

    def _error(self, message: str) -> None:
        self.dirty = True
        if message != self.state.last_error:
            log.error(message)
            self.store.event("net.error", message, source="net", severity="error")
        self.state.last_error = message

    # -- publish ------------------------------------------------------------

    def snapshot(self, now: float) -> dict[str, Any]:
        a = self.state.applied
        rev = Revision.get_or_none(Revision.id == a.revision_id) if a and a.revision_id else None
        expiries = {}
        if a and a.config:
            when = datetime.fromtimestamp(now, UTC)
            for c in a.config.conduits:
                expiries[c.name] = {
                    "active": c.active(when),
                    "expires": c.expires.isoformat() if c.expires else None,
                    "owner": c.owner,
                }
        dhcp_links = {
            link.name for link in (a.config.links() if a and a.config else []) if link.dhcp
        }
        conduits = {
            name: {
                **counts,
                **expiries.get(name, {}),
                **self.state.answers.get(name, {"connections": 0, "unanswered": 0}),
                "answering": name not in self.state.not_answering,
            }
            for name, counts in self.state.conduits.items()
        }
        config = a.config if a else None
        bridge = None
        if config is not None and config.bridge is not None:
            bridge = {
                "name": config.bridge.name,
                "ports": [{"name": p.name, "role": p.role} for p in config.bridge_ports()],
                "lldp": config.bridge.pass_l2.lldp,
                "stp": config.bridge.pass_l2.stp,
                # how bridged IP meets the conduits (see appliance.net.render)
                "filter": "br_netfilter" if self.state.bridge_error is None else None,
                "error": self.state.bridge_error,
                # what the kernel offers: br_netfilter (used), nf_conntrack_bridge (not yet)
                "kernel": {
                    "br_netfilter": self.state.bridge_error is None,
                    "nf_conntrack_bridge": self.bridge_conntrack,
                },
            }
        return {
            "role": self.name,
            "started_at": self.started_at,
            "mode": config.mode if config is not None else None,
            "bridge": bridge,
            "applied": {
                "revision": a.revision_id if a else None,
                "sha256": a.sha256 if a else None,
                "state": rev.state if rev else None,
                "confirm_deadline": rev.confirm_deadline if rev else None,
                "at": a.at if a else None,
                "fail_closed": a is None or a.revision_id is None,
            },
            "last_error": self.state.last_error,
            "forwarding": self.forwarding.enabled(),
            "links": [
                {**o.as_dict(), "dhcp": self._dhcp_snapshot(o.name)}
                if o.name in dhcp_links
                else o.as_dict()
                for o in self.state.links
            ],
            "ports": [p.as_dict() for p in self.state.ports],
            "identifying": {n: t for n, t in list(self.identifying.items()) if t > now},
            "conduits": conduits,
            "drops": self.state.drops,
            "denied": self.state.denied[:50],
            "drift": {"count": self.state.drift_count, "last_at": self.state.drift_last},
            "time": self.time_snapshot(),
        }

    def publish(self, now: float) -> None:
        """Write the live state (when it changed, and at least every second: liveness)."""
        self.live.write(self.name, self.snapshot(now))
        self.dirty = False
        self._next["publish"] = now + 1.0
