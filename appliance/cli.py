"""The `appliance` command: one CLI for installers, IT staff and the lab.

Errors are one line on stderr and a non-zero exit (codes in appliance.errors);
`--debug` shows the traceback of an unexpected error instead.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from appliance import __version__
from appliance.cli_options import Number, actor, has_unit_state, paths_options
from appliance.errors import ApplianceError, BadRequest, ConfigInvalid
from appliance.net.identify import IDENTIFY_DEFAULT_S, IDENTIFY_MAX_S
from appliance.paths import Paths
from appliance.roles import CONFIG_FOLLOWERS, ROLE_NAMES

EXIT_INTERNAL = 70
# revisions.MAX_CONFIRM_WINDOW_S, not imported here: `appliance --help` must not load the
# configuration model (tests/cli/test_cli.py checks that the two agree)
CONFIRM_WINDOW_MAX_S = 24 * 3600
DEBUG = {"on": False}


def _store(paths: Paths):
    from appliance.state.db import Store

    return Store(paths.data_dir)


def _fmt_time(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _time_line(clock: dict) -> str:
    """The time client's state in one line (the net role's `time` document)."""
    if not clock.get("servers"):
        return "not kept: no NTP server in the configuration (time.ntp)"
    if clock.get("synchronised"):
        offset = clock.get("offset_s")
        off = f", offset {offset * 1000:+.3f} ms" if isinstance(offset, int | float) else ""
        return f"in sync with {clock.get('source')} (stratum {clock.get('stratum')}{off})"
    since = clock.get("unsynchronised_since")
    ago = f" for {time.time() - since:.0f} s" if isinstance(since, int | float) else ""
    why = clock.get("error") or (
        f"{clock.get('reachable', 0)} of {clock.get('sources', 0)} NTP servers answer"
    )
    return f"NOT in sync{ago}: {why}"


def _mode_line(net: dict[str, Any]) -> str | None:
    """Routed or bridge, and for a bridge its ports, its L2 passes and how IP meets the
    conduits (the net role's `mode` and `bridge`); None before any revision ran."""
    mode = net.get("mode")
    bridge = net.get("bridge")
    if mode != "bridge" or not isinstance(bridge, dict):
        return f"{mode} (the unit routes between its IT and OT subnets)" if mode else None
    ports = ", ".join(f"{p['name']} ({p['role']})" for p in bridge.get("ports", []))
    l2 = ", ".join(
        f"{what} {'passes' if bridge.get(key) else 'dropped'}"
        for key, what in (("lldp", "LLDP"), ("stp", "STP"))
    )
    how = (
        f"IP filtered through {bridge['filter']}"
        if bridge.get("filter")
        else f"NOTHING crosses: {bridge.get('error')}"
    )
    return f"bridge {bridge.get('name')}: {ports}; ARP passes, {l2}; {how}"


def _dhcp_lines(net: dict[str, Any], now: float) -> list[str]:
    """One line per link with DHCP: its lease (address, server, expires in) or none."""
    out = []
    for link in net.get("links") or []:
        lease = link.get("dhcp")
        if not isinstance(lease, dict):
            continue
        if not lease.get("bound"):
            client = "client running" if lease.get("client_pid") else "NO client running"
            out.append(f"{link['name']:<8} no lease ({client})")
            continue
        left = max(0, int(float(lease.get("expires_at") or 0) - now))
        out.append(
            f"{link['name']:<8} {lease.get('address')} from {lease.get('server') or '?'}, "
            f"router {lease.get('router') or 'none'}, expires in {_fmt_span(left)}"
        )
    return out


def _fmt_span(seconds: int) -> str:
    if seconds >= 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
    if seconds >= 60:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds} s"


def _fmt_bytes(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000  # type: ignore[assignment]
    return f"{n:.1f} PB"


# -- the areas' own commands ------------------------------------------------------------
# Imported only when used: `appliance run --roles field` must not carry the web's TLS
# stack (cryptography) and Flask in a role that polls devices (memory is a goal there).
LAZY_COMMANDS = {
    "tags": "appliance.field.cli:tags",
    "alarms": "appliance.field.cli:alarms",
    "sql": "appliance.field.cli:sql",
    "identify": "appliance.agent.cli:identify",
    "diagnostics": "appliance.agent.cli:diagnostics",
    "factory-reset": "appliance.agent.cli:factory_reset",
    "setup-code": "appliance.web.setup:setup_code_cmd",
    "fleet": "appliance.fleet.cli:fleet",
    "audit": "appliance.audit_cli:audit",
    "conduits": "appliance.modbusproxy.cli:conduits",
    "inventory": "appliance.modbusproxy.cli:inventory",
}


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *LAZY_COMMANDS])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in LAZY_COMMANDS:
            import importlib

            module, attr = LAZY_COMMANDS[cmd_name].split(":")
            return getattr(importlib.import_module(module), attr)
        return super().get_command(ctx, cmd_name)


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="appliance")
@click.option("--debug", is_flag=True, help="show tracebacks and debug logs")
def cli(debug: bool) -> None:
    """IT/OT demarcation appliance: conduits, revisions, status and the lab."""
    DEBUG["on"] = debug


# -- config -------------------------------------------------------------------


@cli.group()
def config() -> None:
    """Validate, import, commit, confirm, roll back and inspect configuration revisions."""


def _read_file(path: str) -> str:
    """A configuration document's text: at most MAX_DOCUMENT_CHARS bytes (a larger file, or
    /dev/zero, is refused without reading it all), UTF-8, errors saying where (exit 2)."""
    from appliance.config.load import MAX_DOCUMENT_CHARS

    source = "<stdin>" if path == "-" else path
    try:
        if path == "-":
            raw = sys.stdin.buffer.read(MAX_DOCUMENT_CHARS + 1)
        else:
            with open(path, "rb") as f:
                raw = f.read(MAX_DOCUMENT_CHARS + 1)
    except FileNotFoundError:  # bad input like any other: exit 2
        raise BadRequest(f"{path}: no such file") from None
    except OSError as e:  # a directory, no permission, an I/O error
        raise BadRequest(f"{path}: cannot read ({e.__class__.__name__})") from None
    if len(raw) > MAX_DOCUMENT_CHARS:
        raise ConfigInvalid(
            [("", f"the document is larger than {MAX_DOCUMENT_CHARS // (1024 * 1024)} MiB", None)],
            source,
        )
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise ConfigInvalid([("", "the file is UTF-16: save it as UTF-8", 1)], source)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise ConfigInvalid(
            [
                (
                    "",
                    f"not UTF-8: byte 0x{raw[e.start]:02x} at offset {e.start} "
                    "(save the file as UTF-8)",
                    line,
                )
            ],
            source,
        ) from None


@config.command("validate")
@click.argument("file")
@click.option("--json", "as_json", is_flag=True, help="print the result as JSON")
@paths_options
def config_validate(file: str, as_json: bool, paths: Paths) -> None:
    """Check FILE without storing it; every error names the field path and line."""
    from appliance.config.load import load_text, sha256_of

    try:
        loaded = load_text(_read_file(file), file, now=datetime.now(UTC))
    except ConfigInvalid as e:
        if as_json:
            click.echo(
                json.dumps(
                    {
                        "valid": False,
                        "errors": [{"path": p, "message": m, "line": ln} for p, m, ln in e.errors],
                    }
                )
            )
            sys.exit(e.exit_code)
        raise
    if as_json:
        click.echo(
            json.dumps(
                {"valid": True, "sha256": sha256_of(loaded.config), "warnings": loaded.warnings}
            )
        )
        return
    for w in loaded.warnings:
        click.echo(f"warning: {w}", err=True)
    c = loaded.config
    click.echo(
        f"{file}: valid ({len(c.interfaces)} interfaces, {len(c.conduits)} conduits, "
        f"sha256 {sha256_of(c)[:12]})"
    )


@config.command("import")
@click.argument("file")
@click.option("--comment", "-m", default="", help="why this change")
@paths_options
def config_import(file: str, comment: str, paths: Paths) -> None:
    """Validate FILE and store it as the draft revision."""
    from appliance.state import revisions as revs

    text = _read_file(file)
    store = _store(paths)
    with store.config.atomic():  # the change and its audit row, or neither (CR 2.10)
        out = revs.import_text(
            store, text, author=actor(), comment=comment, source=file, now=time.time()
        )
        store.audit(actor(), "config.import", target=f"revision {out.revision.id}", detail=comment)
    click.echo(out.message)


@config.command("commit")
@click.argument("rev", required=False)
@click.option(
    "--confirm-within",
    type=Number(10, CONFIRM_WINDOW_MAX_S),
    help="seconds to confirm in; without confirmation the previous revision comes back",
)
@click.option("--comment", "-m", default="", help="note for the audit log")
@click.option("--no-wait", is_flag=True, help="do not wait for the net role to apply it")
@paths_options
def config_commit(
    rev: str | None, confirm_within: float | None, comment: str, no_wait: bool, paths: Paths
) -> None:
    """Commit the draft (or REV): the net role applies it."""
    from appliance.state import revisions as revs
    from appliance.state.live import LiveState

    store = _store(paths)
    with store.config.atomic():  # the change and its audit row, or neither (CR 2.10)
        out = revs.commit(
            store, author=actor(), now=time.time(), ref=rev, confirm_within=confirm_within
        )
        store.audit(
            actor(),
            "config.commit",
            target=f"revision {out.revision.id}",
            detail=f"confirm_within={confirm_within}" + (f" {comment}" if comment else ""),
        )
    live = LiveState(paths.run_dir)
    live.ring(*CONFIG_FOLLOWERS)
    click.echo(out.message)
    if no_wait:
        return
    _wait_applied(live, out.revision.id)


def _wait_applied(live: Any, rev_id: int) -> None:
    from appliance.state import revisions as revs

    if not live.alive("net"):
        click.echo("the net role is not running: it applies the revision when it starts")
        return
    rev = revs.wait_applied(live, rev_id)
    if rev.state == "pending" and rev.confirm_deadline:
        left = rev.confirm_deadline - time.time()
        click.echo(
            f"revision {rev_id} applied; confirm within {left:.0f} s with "
            f"`appliance config confirm`, or it is reverted at "
            f"{_fmt_time(rev.confirm_deadline)}"
        )
    else:
        click.echo(f"revision {rev_id} applied and running")


@config.command("confirm")
@paths_options
def config_confirm(paths: Paths) -> None:
    """Confirm the pending revision: it becomes the running configuration."""
    from appliance.state import revisions as revs

    store = _store(paths)
    with store.config.atomic():  # the change and its audit row, or neither (CR 2.10)
        out = revs.confirm(store, author=actor(), now=time.time())
        store.audit(actor(), "config.confirm", target=f"revision {out.revision.id}")
    click.echo(out.message)


@config.command("rollback")
@click.argument("rev", required=False)
@paths_options
def config_rollback(rev: str | None, paths: Paths) -> None:
    """Drop the pending revision, or go back to REV (default: the previous confirmed one)."""
    from appliance.state import revisions as revs
    from appliance.state.live import LiveState

    store = _store(paths)
    with store.config.atomic():  # the change and its audit row, or neither (CR 2.10)
        out = revs.rollback(store, author=actor(), now=time.time(), ref=rev)
        store.audit(
            actor(),
            "config.rollback",
            target=f"revision {out.revision.id}",
            detail=f"to {rev or 'previous'}",
        )
    live = LiveState(paths.run_dir)
    live.ring(*CONFIG_FOLLOWERS)
    click.echo(out.message)
    if out.revision.state == "pending":
        _wait_applied(live, out.revision.id)


REDACT_HELP = "secrets replaced by [redacted] (for a ticket or a colleague)"


@config.command("diff")
@click.argument("a", required=False)
@click.argument("b", required=False)
@click.option("--redact", is_flag=True, help=REDACT_HELP)
@paths_options
def config_diff(a: str | None, b: str | None, redact: bool, paths: Paths) -> None:
    """Show what changes from A (default: running) to B (default: draft)."""
    from appliance.config.diff import summary, unified
    from appliance.state import revisions as revs

    store = _store(paths)
    ra = revs.resolve(store, a, default="running")
    rb = revs.resolve(store, b, default="draft")
    ca, cb = revs.config_of(ra), revs.config_of(rb)
    lines = summary(ca, cb)
    if not lines:
        click.echo(f"revisions {ra.id} and {rb.id} are the same configuration")
        return
    click.echo(f"revision {ra.id} ({ra.state}) → revision {rb.id} ({rb.state}):")
    for line in lines:
        click.echo(f"  {line}")
    click.echo()
    for line in unified(ca, cb, f"revision {ra.id}", f"revision {rb.id}", redacted=redact):
        click.echo(line)


@config.command("export")
@click.argument("rev", required=False)
@click.option("--canonical", is_flag=True, help="the validated document, not the text as written")
@click.option("--redact", is_flag=True, help=REDACT_HELP + "; implies --canonical")
@paths_options
def config_export(rev: str | None, canonical: bool, redact: bool, paths: Paths) -> None:
    """Print REV (default: running) as YAML."""
    import yaml

    from appliance.config.load import to_yaml
    from appliance.config.redact import redact_config
    from appliance.state import revisions as revs

    store = _store(paths)
    r = revs.resolve(store, rev, default="running")
    if redact:  # built from the document redacted by key, never by searching the text
        text = yaml.safe_dump(redact_config(revs.config_of(r)), sort_keys=False)
    else:
        text = to_yaml(revs.config_of(r)) if canonical else r.source
    # an export may carry the device passwords and tokens: who took one is audited
    store.audit(
        actor(), "config.export", target=f"revision {r.id}", detail="redacted" if redact else ""
    )
    click.echo(text, nl=False)


@config.command("log")
@click.option("--limit", "-n", default=20, show_default=True, type=click.IntRange(1, 10000))
@click.option("--json", "as_json", is_flag=True)
@paths_options
def config_log(limit: int, as_json: bool, paths: Paths) -> None:
    """List revisions, newest first."""
    from appliance.state import revisions as revs

    rows = revs.history(_store(paths), limit)
    if as_json:
        click.echo(json.dumps([r.as_dict() for r in rows], indent=2))
        return
    if not rows:
        click.echo("no revisions yet: `appliance config import FILE` stores the first")
        return
    click.echo(f"{'REV':>4}  {'STATE':<11}  {'CREATED':<23}  {'SHA256':<12}  AUTHOR / COMMENT")
    for r in rows:
        note = r.comment or ""
        if r.state == "pending" and r.confirm_deadline:
            note = f"confirm by {_fmt_time(r.confirm_deadline)}  {note}"
        elif r.state == "rolled-back":
            note = f"{r.reason}  {note}"
        click.echo(
            f"{r.id:>4}  {r.state:<11}  {_fmt_time(r.created_at):<23}  {r.sha256[:12]}  "
            f"{r.author}  {note}".rstrip()
        )


# -- net: the ruleset as data -----------------------------------------------------


@cli.group()
def net() -> None:
    """Render and check rulesets without applying them (like fw4 print/check)."""


@net.command("render")
@click.argument("file")
@click.option("--at", "at", help="render as of this ISO time (default: now)")
def net_render(file: str, at: str | None) -> None:
    """Print the libnftables-JSON ruleset that FILE's configuration becomes."""
    from appliance.config.load import load_text
    from appliance.net.render import render

    when = _parse_time(at)
    cfg = load_text(_read_file(file), file, now=when).config
    click.echo(json.dumps(render(cfg, when).document(), indent=1))


@net.command("check")
@click.argument("file")
def net_check(file: str) -> None:
    """Validate FILE and let the kernel check its ruleset (dry run: nothing changes)."""
    from appliance.config.load import load_text
    from appliance.net.nft import Nft
    from appliance.net.render import render

    when = datetime.now(UTC)
    cfg = load_text(_read_file(file), file, now=when).config
    Nft().apply(render(cfg, when).document(), check_only=True)
    click.echo(f"{file}: the kernel accepts this ruleset")


@net.command("fail-closed")
def net_fail_closed() -> None:
    """Print the fail-closed ruleset the image loads at boot (system/failclosed.json)."""
    from appliance.net.render import render_fail_closed

    click.echo(json.dumps(render_fail_closed().document(), indent=1))


def _parse_time(text: str | None) -> datetime:
    if not text:
        return datetime.now(UTC)
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise BadRequest(
            f"{text!r} is not an ISO time like 2027-01-31T18:00:00Z", field="--at"
        ) from None
    if when.tzinfo is None:
        raise BadRequest("needs a time zone, e.g. 2027-01-31T18:00:00Z", field="--at")
    return when


# -- status and events ----------------------------------------------------------


def status_data(paths: Paths) -> dict[str, Any]:
    from appliance.state import revisions as revs
    from appliance.state.live import LiveState

    store = _store(paths)
    live = LiveState(paths.run_dir)
    docs = {role: live.read(role) for role in ROLE_NAMES}
    alive = {role: live.alive(role) for role in ROLE_NAMES}
    running = revs.desired(store)
    unit = revs.config_of(running).unit.name if running else None
    pend = revs.pending(store)
    field = docs["field"] or {}
    devices = field.get("devices") or {}
    tags = field.get("tags") or {}
    web = docs["web"] or {}
    return {
        "version": __version__,
        "unit": unit,
        "health": _health(docs, alive, paths),
        "roles": {role: alive[role] for role in ROLE_NAMES},
        "net": {"alive": alive["net"], **(docs["net"] or {})},
        "field": {
            "alive": alive["field"],
            "devices": {n: d.get("state") for n, d in sorted(devices.items())},
            "tags": {
                "total": len(tags),
                "good": sum(1 for t in tags.values() if t.get("quality") == "good"),
            },
            "alarms": (field.get("alarms") or {}).get("counts", {}),
        },
        "web": {
            "alive": alive["web"],
            "listen": web.get("listen", []),
            "cert_fingerprint": web.get("cert_fingerprint") or _cert_fingerprint(paths),
        },
        "agent": docs["agent"] or {},
        "running": running.as_dict() if running else None,
        "pending": pend.as_dict() if pend else None,
        "events": [e.as_dict() for e in store.events(10)],
    }


def _cert_fingerprint(paths: Paths) -> str | None:
    from appliance.web.tls import fingerprint  # loads cryptography: only for `status`

    try:
        return fingerprint(paths)
    except OSError:
        return None


def _health(docs: dict, alive: dict[str, bool], paths: Paths) -> dict:
    """The agent's judgement while it runs; without it, the same computation here."""
    agent = docs.get("agent") or {}
    if alive.get("agent") and agent.get("health"):
        return agent["health"]
    from appliance.agent.role import compute_health

    return compute_health(paths).as_dict()


@cli.command("status")
@click.option("--json", "as_json", is_flag=True, help="machine-readable")
@paths_options
def status(as_json: bool, paths: Paths) -> None:
    """What the unit is doing: revision, links, conduits, drops, recent events."""
    found = has_unit_state(paths)
    data = status_data(paths)
    if as_json:
        click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))
        return
    net = data["net"]
    if not found:
        click.echo(
            f"state:     none found in {paths.data_dir} and {paths.run_dir}: for the lab's "
            "unit run `make demo` in the checkout, or export APPLIANCE_DATA_DIR and "
            "APPLIANCE_RUN_DIR (the demo prints both)"
        )
    click.echo(f"unit:      {data['unit'] or '(no configuration yet)'}   appliance {__version__}")
    click.echo(f"health:    {data['health']['state']}")
    for reason in data["health"]["reasons"]:
        click.echo(f"  {reason['severity']:<7} {reason['message']}")
    if net.get("alive"):
        click.echo(
            f"net role:  running (pid {net.get('pid')}), forwarding "
            f"{'on' if net.get('forwarding') else 'off'}"
        )
    else:
        click.echo("net role:  NOT RUNNING")
    others = [r for r in ROLE_NAMES if r != "net" and data["roles"][r]]
    if others:
        click.echo(
            f"roles:     net {'up' if net.get('alive') else 'DOWN'}, "
            + ", ".join(f"{r} up" for r in others)
        )
    web = data["web"]
    if web["listen"]:
        click.echo(f"web UI:    {', '.join('https://' + a + '/' for a in web['listen'])}")
    if web["cert_fingerprint"]:
        click.echo(f"TLS cert:  {web['cert_fingerprint']}")
    field = data["field"]
    if field["devices"]:
        down = [n for n, st in field["devices"].items() if st != "ok"]
        click.echo(
            f"devices:   {len(field['devices']) - len(down)}/{len(field['devices'])} ok"
            + (f" (not ok: {', '.join(down)})" if down else "")
            + f", tags {field['tags']['good']}/{field['tags']['total']} good"
        )
    if any(field["alarms"].values()):
        click.echo(
            "alarms:    " + ", ".join(f"{n} {sev}" for sev, n in sorted(field["alarms"].items()))
        )
    applied = net.get("applied") or {}
    if applied.get("fail_closed"):
        click.echo("ruleset:   fail-closed (no revision applied: nothing is forwarded)")
    elif applied:
        click.echo(
            f"ruleset:   revision {applied.get('revision')} ({applied.get('state')}), "
            f"applied {_fmt_time(applied.get('at'))}"
        )
    pend = data["pending"]
    if pend and pend.get("confirm_deadline"):
        left = max(0, pend["confirm_deadline"] - time.time())
        click.echo(
            f"PENDING:   revision {pend['id']} reverts in {left:.0f} s unless "
            "`appliance config confirm`"
        )
    mode = _mode_line(net)
    if mode:
        click.echo(f"mode:      {mode}")
    if net.get("last_error"):
        click.echo(f"error:     {net['last_error']}")
    for link in net.get("links", []):
        state = link["oper"] if link["present"] else "ABSENT"
        click.echo(
            f"link:      {link['name']:<8} {link['role']:<4} {state:<8} "
            f"{' '.join(link['addresses'])}"
        )
    for line in _dhcp_lines(net, time.time()):
        click.echo(f"dhcp:      {line}")
    ports = net.get("ports") or []
    if ports:  # every NIC, configured or not: which has a cable (`appliance ports` says more)
        click.echo(
            "ports:     "
            + ", ".join(
                f"{p['name']}"
                + (f" ({p['role']})" if p.get("role") else "")
                + f" cable {_carrier(p)}"
                for p in ports
            )
        )
    clock = net.get("time")
    if isinstance(clock, dict):
        click.echo(f"time:      {_time_line(clock)}")
    for name, c in sorted((net.get("conduits") or {}).items()):
        extra = "" if c.get("active", True) else "  (inactive/expired)"
        if c.get("expires") and c.get("active", True):
            extra = f"  expires {c['expires']}"
        if c.get("answering") is False:  # every connection it opened went unanswered
            extra += f"  NOT ANSWERING ({c.get('unanswered', 0)} attempts without a reply)"
        click.echo(
            f"conduit:   {name:<20} {c['packets']:>8} pkts {_fmt_bytes(c['bytes']):>9}{extra}"
        )
    drops = net.get("drops") or {}
    if drops:
        parts = [
            f"{k.removeprefix('drop_')} {v['packets']}"
            for k, v in sorted(drops.items())
            if v["packets"]
        ]
        click.echo(f"dropped:   {', '.join(parts) if parts else 'nothing'}")
    for d in (net.get("denied") or [])[:5]:
        click.echo(
            f"denied:    {d['src']} → {d['dst']} {d['proto']}/{d['port']} ({d['packets']} pkts)"
        )
    drift = net.get("drift") or {}
    if drift.get("count"):
        click.echo(f"drift:     {drift['count']} re-asserted, last {_fmt_time(drift['last_at'])}")
    for e in data["events"][:5]:
        click.echo(f"event:     {_fmt_time(e['at'])}  {e['kind']:<16} {e['message']}")


@cli.command("events")
@click.option("--limit", "-n", default=30, show_default=True, type=click.IntRange(1, 100000))
@click.option("--kind", help="only kinds starting with this (e.g. net., config.)")
@click.option("--json", "as_json", is_flag=True)
@paths_options
def events(limit: int, kind: str | None, as_json: bool, paths: Paths) -> None:
    """Recent events, newest first."""
    rows = _store(paths).events(limit, kind)
    if as_json:
        click.echo(json.dumps([e.as_dict() for e in rows], indent=2))
        return
    for e in rows:
        click.echo(f"{_fmt_time(e.at)}  {e.severity:<7} {e.kind:<18} {e.message}")


def ports_data(paths: Paths) -> dict[str, Any]:
    """The net role's port list as it last published it; Unavailable when it is not running
    (a list it left behind is not what the ports are now)."""
    from appliance.errors import Unavailable
    from appliance.state.live import LiveState

    live = LiveState(paths.run_dir)
    doc = live.read("net")
    if doc is None or not live.alive("net"):
        raise Unavailable(
            f"the net role is not running (no live port list in {paths.run_dir}): "
            "`appliance status` says more"
        )
    return {"ports": doc.get("ports") or [], "updated_at": doc.get("updated_at")}


def _speed(port: dict[str, Any]) -> str:
    if not port.get("speed"):
        return "-"
    duplex = {"full": "FD", "half": "HD"}.get(port.get("duplex") or "", "")
    return f"{port['speed']}M {duplex}".strip()


def _carrier(port: dict[str, Any]) -> str:
    if port.get("carrier") is None:
        return "unknown (down)"
    return "yes" if port["carrier"] else "NO"


@cli.group("ports", invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="machine-readable")
@paths_options
@click.pass_context
def ports(ctx: click.Context, as_json: bool, paths: Paths) -> None:
    """Every NIC of the unit, configured or not: MAC, carrier, speed, role, counters;
    `ports identify PORT` blinks one's LED."""
    if ctx.invoked_subcommand is not None:
        return
    from appliance.field.cli import table

    data = ports_data(paths)
    if as_json:
        click.echo(json.dumps(data, indent=2, sort_keys=True))
        return
    if not data["ports"]:
        click.echo("no ports: the net role sees no NIC besides loopback")
        return
    rows = []
    for p in data["ports"]:
        c = p.get("counters") or {}
        rows.append(
            (
                p["name"],
                p.get("label") or "-",
                f"{p['role']} ({p['interface']})" if p.get("role") else "-",
                p.get("mac") or "-",
                _carrier(p),
                _speed(p),
                p.get("driver") or "-",
                p.get("pci_path") or "-",
                f"{_fmt_bytes(c.get('rx_bytes', 0))} / {c.get('rx_packets', 0)}",
                f"{_fmt_bytes(c.get('tx_bytes', 0))} / {c.get('tx_packets', 0)}",
                f"{c.get('rx_errors', 0) + c.get('tx_errors', 0)}"
                f" / {c.get('rx_dropped', 0) + c.get('tx_dropped', 0)}",
            )
        )
    headers = ("PORT", "LABEL", "ROLE", "MAC", "CARRIER", "SPEED", "DRIVER", "PCI")
    for line in table((*headers, "RX BYTES / PKTS", "TX BYTES / PKTS", "ERR / DROP"), rows):
        click.echo(line)


@ports.command("identify")
@click.argument("port")
@click.option(
    "--seconds",
    default=IDENTIFY_DEFAULT_S,
    show_default=True,
    type=click.IntRange(1, IDENTIFY_MAX_S),
    help="how long it blinks",
)
@paths_options
def ports_identify(port: str, seconds: int, paths: Paths) -> None:
    """Blink PORT's link LED so an installer finds the socket (where its NIC can)."""
    from appliance.errors import Unavailable
    from appliance.state.control import call, socket_path

    path = socket_path(paths.run_dir, "net")
    if not path.exists():
        raise Unavailable(f"the net role is not running (no {path})")
    result = call(path, "identify_port", port=port, seconds=seconds, actor=actor())
    click.echo(f"{port}: blinking until {_fmt_time(result['until'])} ({seconds} s)")


# -- daemon -------------------------------------------------------------------------


@cli.command("run")
@click.option("--roles", default="net", show_default=True, help="comma-separated roles to run")
@paths_options
def run_cmd(roles: str, paths: Paths) -> None:
    """Run the daemon roles in the foreground (systemd starts one unit per role)."""
    from appliance import daemon

    daemon.setup_logging(DEBUG["on"])
    daemon.run(paths, [r.strip() for r in roles.split(",") if r.strip()])


# -- lab ------------------------------------------------------------------------------


@cli.group()
def lab() -> None:
    """The lab: IT host, appliance and OT network with PLC simulators, in namespaces."""


def lab_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = click.option(
        "--dir",
        "lab_dir",
        default=".lab",
        show_default=True,
        type=click.Path(),
        help="where the lab keeps state, logs and pids",
    )(fn)
    return click.option(
        "--prefix",
        default="lab",
        show_default=True,
        help="namespace name prefix (a second lab needs another)",
    )(fn)


@lab.command("up")
@click.option("--plcs", default=1, show_default=True, type=click.IntRange(1, 50))
@click.option(
    "--config",
    "config_file",
    default=None,
    help="configuration committed once the appliance runs ('' for none; default "
    "examples/demo.yaml, with --bridge examples/bridge.yaml)",
)
@click.option("--no-mgmt", is_flag=True, help="no management link to this machine")
@click.option(
    "--no-extras", is_flag=True, help="PLCs only: no slow PLC, RTU line, OPC UA, fleet, syslog"
)
@click.option("--roles", default="", help="roles to run (default: all)")
@click.option(
    "--bridge",
    is_flag=True,
    help="the bridge topology: IT host 192.168.50.2 in the PLCs' subnet, the appliance a "
    "transparent bridge between them (no fleet or syslog extra)",
)
@lab_options
def lab_up(
    plcs: int,
    config_file: str | None,
    no_mgmt: bool,
    no_extras: bool,
    roles: str,
    bridge: bool,
    lab_dir: str,
    prefix: str,
) -> None:
    """Build the lab (cleaning leftovers first), start the appliance, commit the config."""
    from appliance.lab import demo

    if config_file is None:
        config_file = "examples/bridge.yaml" if bridge else "examples/demo.yaml"
    demo.up(
        Path(lab_dir),
        bridge=bridge,
        plcs=plcs,
        config_file=config_file or None,
        echo=click.echo,
        prefix=prefix,
        mgmt=not no_mgmt,
        extras=not no_extras,
        roles=[r.strip() for r in roles.split(",") if r.strip()] or None,
    )


@lab.command("down")
@lab_options
def lab_down(lab_dir: str, prefix: str) -> None:
    """Stop every lab process and remove every lab namespace and link."""
    from appliance.lab import demo

    demo.down(Path(lab_dir), echo=click.echo, prefix=prefix)


@lab.command("status")
@click.option("--json", "as_json", is_flag=True)
@lab_options
def lab_status(as_json: bool, lab_dir: str, prefix: str) -> None:
    """Which lab namespaces, links and processes exist."""
    from appliance.lab import demo

    data = demo.status(Path(lab_dir), prefix=prefix)
    if as_json:
        click.echo(json.dumps(data, indent=2, default=str))
        return
    for line in demo.describe(data):
        click.echo(line)


@cli.command("demo")
@click.option("--plcs", default=3, show_default=True, type=click.IntRange(1, 50))
@click.option("--no-mgmt", is_flag=True, help="no management link to this machine")
@lab_options
def demo_cmd(plcs: int, no_mgmt: bool, lab_dir: str, prefix: str) -> None:
    """Build the lab, run the appliance in it with the demo configuration, show the way."""
    from appliance.lab import demo

    demo.run_demo(Path(lab_dir), plcs=plcs, echo=click.echo, prefix=prefix, mgmt=not no_mgmt)


# -- entry point --------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    try:
        cli.main(args=argv, prog_name="appliance", standalone_mode=False)
    except ConfigInvalid as e:
        for line in e.lines():
            click.echo(f"appliance: {line}", err=True)
        sys.exit(e.exit_code)
    except ApplianceError as e:
        click.echo(f"appliance: {e}", err=True)
        sys.exit(e.exit_code)
    except click.exceptions.Abort:
        click.echo("appliance: aborted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as e:  # the one place an unexpected error becomes one line
        if DEBUG["on"]:
            raise
        click.echo(
            f"appliance: internal error: {e.__class__.__name__}: {e} "
            "(run with --debug for details)",
            err=True,
        )
        sys.exit(EXIT_INTERNAL)
