"""`appliance fleet`: run the reference fleet receiver and manage its units and operator password.

Registered on the main CLI by appliance/cli.py (`cli.add_command(fleet)`);
`python -m appliance.fleet ...` runs the same group through the same error
handling. Errors are ApplianceError subclasses: one line, non-zero exit.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from appliance.errors import ApplianceError

DB_HELP = (
    "database URL: sqlite:///fleet.db (default, in the working directory), "
    "sqlite:////abs/path.db, a plain path, or postgresql://USER:PASS@HOST/DB "
    "[env APPLIANCE_FLEET_DB]"
)


def db_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--db", "db", envvar="APPLIANCE_FLEET_DB", help=DB_HELP)(fn)


def _open(db: str | None) -> Any:
    from appliance.fleet import store

    return store.open_db(db)


@click.group()
def fleet() -> None:
    """The reference fleet receiver: heartbeats from units, an operator's view of them."""


@fleet.command("serve")
@click.option(
    "--listen",
    default="0.0.0.0:8443",
    show_default=True,
    help="ADDR:PORT to listen on ([V6ADDR]:PORT for IPv6)",
)
@db_option
@click.option("--cert", type=click.Path(dir_okay=False), help="TLS certificate (PEM, with chain)")
@click.option("--key", type=click.Path(dir_okay=False), help="TLS private key (PEM)")
@click.option("--open", "open_access", is_flag=True, help="no operator login (a lab only)")
@click.option("--workers", default=2, show_default=True, type=click.IntRange(1, 32))
@click.option("--threads", default=4, show_default=True, type=click.IntRange(1, 64))
@click.option(
    "--keep-days",
    default=90.0,
    show_default=True,
    type=float,
    help="days of heartbeats and events to keep (0: forever, at most 36500)",
)
@click.option(
    "--keep-heartbeats",
    default="1000",
    show_default=True,
    help="heartbeats to keep per unit, the newest (0: no limit)",
)
@click.option("--access-log", is_flag=True, help="log every request on stderr")
def serve(
    listen: str,
    db: str | None,
    cert: str | None,
    key: str | None,
    open_access: bool,
    workers: int,
    threads: int,
    keep_days: float,
    keep_heartbeats: str,
    access_log: bool,
) -> None:
    """Run the receiver (gunicorn) until stopped: HTTPS with --cert/--key, else plain HTTP."""
    from appliance.fleet import store
    from appliance.fleet.app import create_app
    from appliance.fleet.server import (
        check_bindable,
        check_tls,
        gunicorn_options,
        parse_listen,
        serve,
    )
    from appliance.fleet.validate import check_keep_days, check_keep_heartbeats

    keep = check_keep_days(keep_days)
    keep_count = check_keep_heartbeats(keep_heartbeats)
    where = parse_listen(listen)
    tls = check_tls(cert, key)
    check_bindable(where)
    app = create_app(
        db,
        open_access=open_access,
        secure_cookies=tls,
        keep_days=keep,
        keep_heartbeats=keep_count,
    )
    if not tls:
        click.echo(
            "warning: no --cert/--key: serving plain HTTP (tokens and heartbeats travel in "
            "clear text, session cookies are not Secure)",
            err=True,
        )
    if open_access:
        click.echo("warning: --open: anyone who reaches this port can operate units", err=True)
    else:
        with store.fleet_db.connection_context():  # bound by create_app; closed before fork
            no_password = not store.has_operators()
        if no_password:
            click.echo(
                "warning: no operator password yet: `appliance fleet set-password` "
                "(heartbeats are accepted meanwhile)",
                err=True,
            )
    if app.config["FLEET_SCHEMA"] != "agent":
        click.echo(
            "warning: appliance/agent/heartbeat.schema.json not found: checking heartbeats "
            "against the receiver's minimal schema only",
            err=True,
        )
    store.release_connections()  # no socket to PostgreSQL shared with the workers
    click.echo(
        f"fleet receiver on {where.url(tls)} (database {app.config['FLEET_DB']}, "
        f"{workers} workers x {threads} threads)",
        err=True,
    )
    serve(
        app,
        gunicorn_options(
            where,
            cert=cert if tls else None,
            key=key if tls else None,
            workers=workers,
            threads=threads,
            access_log=access_log,
        ),
    )


@fleet.command("add-unit")
@click.argument("name")
@db_option
@click.option(
    "--token-file",
    type=click.Path(dir_okay=False),
    help="use the token in this file ('-': stdin) instead of making one",
)
@click.option("--replace", is_flag=True, help="give an existing unit this (or a new) token")
def add_unit(name: str, db: str | None, token_file: str | None, replace: bool) -> None:
    """Register unit NAME; print its new token once (the receiver keeps only a hash)."""
    from appliance.fleet import store

    token = _read_token(token_file) if token_file else None
    _open(db)
    with store.fleet_db.connection_context():
        made = store.add_unit(name, token, replace=replace, now=time.time())
    if token is None:
        click.echo(made)
        click.echo(
            f"unit {name!r} registered: put the token above in its fleet.token "
            "(it is not shown again)",
            err=True,
        )
    else:
        click.echo(f"unit {name!r} registered with the token from {token_file}", err=True)


def _read_token(path: str) -> str:
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
    except FileNotFoundError:
        raise ApplianceError(f"{path}: no such file", field="--token-file")
    except (OSError, UnicodeDecodeError) as e:
        raise ApplianceError(f"{path}: cannot read ({e.__class__.__name__})", field="--token-file")
    token = text.strip()
    if not token:
        raise ApplianceError(f"{path} is empty", field="--token-file")
    return token


@fleet.command("remove-unit")
@click.argument("name")
@db_option
@click.option("--yes", is_flag=True, help="do not ask")
def remove_unit(name: str, db: str | None, yes: bool) -> None:
    """Forget unit NAME, its token, heartbeats and events."""
    from appliance.fleet import store

    _open(db)
    with store.fleet_db.connection_context():
        store.get_unit(name)
        if not yes:
            click.confirm(f"remove unit {name!r} and all its history?", abort=True)
        store.remove_unit(name)
    click.echo(f"unit {name!r} removed")


@fleet.command("units")
@db_option
@click.option("--json", "as_json", is_flag=True, help="machine-readable")
@click.option("--search", help="a part of the name, reported name, site, serial or unit id")
@click.option("--site", help="units of this site (assigned, else reported)")
@click.option("--group", help="units in this group")
@click.option("--health", help="ok, degraded, fault, pending-confirm, booting, identify, none")
@click.option("--firmware", help="units on this firmware version")
@click.option("--revision", help="units on this configuration revision (4 or r4)")
@click.option("--page", help="page number (with --per-page)")
@click.option("--per-page", help="units per page, 1-1000 (default: all)")
def units(
    db: str | None,
    as_json: bool,
    search: str | None,
    site: str | None,
    group: str | None,
    health: str | None,
    firmware: str | None,
    revision: str | None,
    page: str | None,
    per_page: str | None,
) -> None:
    """List the units with site, last seen, health, revision and firmware (filtered)."""
    from appliance.errors import BadRequest
    from appliance.fleet import store, view
    from appliance.fleet.validate import unit_query

    given = {
        "search": search,
        "site": site,
        "group": group,
        "health": health,
        "firmware": firmware,
        "revision": revision,
        "page": page,
        "per_page": per_page,
    }
    try:
        query = unit_query({k: v for k, v in given.items() if v is not None}, per_page_default=None)
    except BadRequest as e:
        raise BadRequest(e.message, f"--{(e.field or '').replace('_', '-')}") from None
    _open(db)
    now = time.time()
    with store.fleet_db.connection_context():
        found = store.find_units(query)
        rows = found.units
        if as_json:
            out = []
            for u in rows:
                d = u.as_dict(found.groups.get(u.id, []))
                d["overdue"] = view.overdue(now, u.last_seen, u.interval_request, u.last_gap)
                out.append(d)
            click.echo(json.dumps(out, indent=2))
            return
    if not rows:
        if any(v is not None for v in given.values()):
            click.echo("no unit matches")
        else:
            click.echo("no units: `appliance fleet add-unit NAME` registers one")
        return
    click.echo(
        f"{'NAME':<20} {'SITE':<16} {'LAST SEEN':<16} {'HEALTH':<16} {'REVISION':<30} FIRMWARE"
    )
    for u in rows:
        seen = view.age(now, u.last_seen)
        if view.overdue(now, u.last_seen, u.interval_request, u.last_gap):
            seen += " !"
        rev = view.revision_text(u.revision_id, u.revision_state, u.revision_sha256)
        click.echo(
            f"{u.name:<20} {(u.site_shown or '-')[:16]:<16} {seen:<16} {u.health or '-':<16} "
            f"{rev:<30} {u.firmware or '-'}"
        )
    if found.pages > 1:
        click.echo(f"page {query.page} of {found.pages} ({found.total} units)", err=True)


@fleet.command("place")
@click.argument("name")
@db_option
@click.option("--site", help="the unit's site ('' : back to the one it reports)")
@click.option("--group", "groups", multiple=True, help="a group (repeat; replaces its groups)")
@click.option("--no-groups", is_flag=True, help="take the unit out of every group")
def place(
    name: str, db: str | None, site: str | None, groups: tuple[str, ...], no_groups: bool
) -> None:
    """Give unit NAME a site and groups (a unit has one site and any groups)."""
    from appliance.errors import BadRequest
    from appliance.fleet import store
    from appliance.fleet.validate import check_placement

    data: dict[str, Any] = {}
    if site is not None:
        data["site"] = site
    if groups and no_groups:
        raise BadRequest("--group and --no-groups exclude each other", "--no-groups")
    if groups or no_groups:
        data["groups"] = list(groups)
    if not data:
        raise BadRequest("give --site, --group or --no-groups", "--site")
    try:
        where, members = check_placement(data)
    except BadRequest as e:
        flag = "--group" if (e.field or "").startswith("groups") else "--site"
        raise BadRequest(e.message, flag) from None
    _open(db)
    with store.fleet_db.connection_context():
        unit = store.set_placement(name, where, members)
        shown = unit.as_dict()
    click.echo(
        f"unit {name!r}: site {shown['site'] or '-'}, groups {' '.join(shown['groups']) or '-'}"
    )


@fleet.command("stats")
@db_option
@click.option("--json", "as_json", is_flag=True, help="machine-readable")
def stats(db: str | None, as_json: bool) -> None:
    """The database: its size on disk, schema version, units, heartbeats and events kept."""
    from appliance.fleet import store, view

    _open(db)
    with store.fleet_db.connection_context():
        found = store.stats()
    if as_json:
        click.echo(json.dumps(found, indent=2))
        return
    click.echo(f"database     {found['backend']}, schema {found['schema_version']}")
    click.echo(f"size         {view.bytes_text(found['size_bytes'])}")
    click.echo(f"units        {found['units']}")
    kept = f"{found['heartbeats']}"
    if found["heartbeats"]:
        kept += f" (received {view.when(found['oldest_heartbeat'])} .. "
        kept += f"{view.when(found['newest_heartbeat'])})"
    click.echo(f"heartbeats   {kept}")
    click.echo(f"events       {found['events']}")


@fleet.command("prune")
@db_option
@click.option(
    "--keep-days",
    default=90.0,
    show_default=True,
    type=float,
    help="delete heartbeats and events received longer ago (0: no age limit)",
)
@click.option(
    "--keep-heartbeats",
    default="1000",
    show_default=True,
    help="keep this many of each unit's newest heartbeats (0: no limit)",
)
def prune(db: str | None, keep_days: float, keep_heartbeats: str) -> None:
    """Apply the retention now (serve does it about hourly), in batches, with progress."""
    from appliance.fleet import store
    from appliance.fleet.validate import check_keep_days, check_keep_heartbeats

    days = check_keep_days(keep_days)
    count = check_keep_heartbeats(keep_heartbeats)
    _open(db)
    before = time.time() - days * 86400 if days else None
    total = {"heartbeats": 0, "events": 0}
    with store.fleet_db.connection_context():
        while True:
            pruned = store.prune(before, count, budget_s=2.0)
            total["heartbeats"] += pruned.heartbeats
            total["events"] += pruned.events
            if pruned.done:
                break
            click.echo(
                f"... {total['heartbeats']} heartbeats, {total['events']} events so far", err=True
            )
    click.echo(f"pruned {total['heartbeats']} heartbeats and {total['events']} events")


@fleet.command("set-password")
@db_option
@click.option(
    "--password-file",
    type=click.Path(dir_okay=False),
    help="read the password from this file ('-': stdin) instead of asking",
)
@click.option("--operator", "name", default="admin", show_default=True, help="the operator's name")
@click.option(
    "--role",
    help="viewer, operator or admin (a new operator: admin if it is the first, else viewer)",
)
def set_password(db: str | None, password_file: str | None, name: str, role: str | None) -> None:
    """Set an operator's password (argon2id), making the account if it is new; ends every
    session of that operator."""
    from appliance.fleet import store

    store.check_operator_name(name, "--operator")
    if role is not None:
        store.check_role(role, "--role")
    if password_file:
        try:
            text = sys.stdin.read() if password_file == "-" else Path(password_file).read_text()
        except (OSError, UnicodeDecodeError) as e:
            raise ApplianceError(
                f"{password_file}: cannot read ({e.__class__.__name__})", field="--password-file"
            )
        password = text.rstrip("\r\n")
    else:
        password = click.prompt(
            f"Password of {name}", hide_input=True, confirmation_prompt=True, err=True
        )
    _open(db)
    with store.fleet_db.connection_context():
        op = store.set_password(password, name, role)
    click.echo(f"operator {op.name!r} ({op.role}): password set", err=True)


@fleet.command("operators")
@db_option
@click.option("--json", "as_json", is_flag=True, help="machine-readable")
def operators(db: str | None, as_json: bool) -> None:
    """List the operator accounts and their roles."""
    from appliance.fleet import store

    _open(db)
    with store.fleet_db.connection_context():
        rows = [o.as_dict() for o in store.operators()]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no operators: `appliance fleet set-password` makes the first (an admin)")
    for o in rows:
        click.echo(f"{o['name']:<24} {o['role']}")


@fleet.command("remove-operator")
@click.argument("name")
@db_option
def remove_operator(name: str, db: str | None) -> None:
    """Remove operator NAME; their sessions end."""
    from appliance.fleet import store

    _open(db)
    with store.fleet_db.connection_context():
        store.remove_operator(name)
    click.echo(f"operator {name!r} removed")


def main(argv: list[str] | None = None) -> None:
    """`python -m appliance.fleet ARGS` = `appliance fleet ARGS`, with the CLI's error handling."""
    from appliance import cli as main_cli

    if "fleet" not in main_cli.cli.commands:
        main_cli.cli.add_command(fleet)
    args = list(sys.argv[1:] if argv is None else argv)
    main_cli.main(["fleet", *args])
