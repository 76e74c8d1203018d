"""CLI commands of the audit log: `appliance audit verify` and `appliance audit list`.

`appliance.cli` loads them when one is used (LAZY_COMMANDS).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import click

from appliance.cli_options import paths_options
from appliance.errors import AuditBroken
from appliance.paths import Paths


@click.group("audit")
def audit() -> None:
    """The audit log: who changed what, from where; hash-chained so tampering shows."""


@audit.command("verify")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@paths_options
def audit_verify(as_json: bool, paths: Paths) -> None:
    """Check the audit log's hash chain from its first row; exit 11 where it breaks.

    Prints the last row's id and digest: keep them elsewhere (a ticket, the fleet) to see
    later that no row was cut off the end."""
    from appliance.state.db import Store

    store = Store(paths.data_dir)
    try:
        verdict = store.verify_audit()
    finally:
        store.close()
    if as_json:
        click.echo(json.dumps(verdict.as_dict(), indent=2))
        if not verdict.intact:
            raise SystemExit(AuditBroken.exit_code)
        return
    if not verdict.intact:
        raise AuditBroken(verdict.line().removeprefix("audit log: "))
    click.echo(verdict.line())
    if verdict.head_id is not None:
        click.echo(f"head: row {verdict.head_id} {verdict.head}")


@audit.command("list")
@click.option("--limit", "-n", default=50, show_default=True, type=click.IntRange(1, 100000))
@click.option("--actor", default=None, help="only rows of this actor (substring)")
@click.option("--action", default=None, help="only actions starting with this")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@paths_options
def audit_list(
    limit: int, actor: str | None, action: str | None, as_json: bool, paths: Paths
) -> None:
    """The newest audit rows first."""
    from appliance.state.db import Audit, Store

    store = Store(paths.data_dir)
    try:
        q = Audit.select().order_by(Audit.id.desc()).limit(limit)
        if actor:
            q = q.where(Audit.actor.contains(actor))
        if action:
            q = q.where(Audit.action.startswith(action))
        rows = [{"id": a.id, **a.__data__} for a in q]
    finally:
        store.close()
    if as_json:
        click.echo(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    for r in rows:
        when = datetime.fromtimestamp(r["at"], UTC).strftime("%Y-%m-%d %H:%M:%S")
        what = " ".join(x for x in (r["action"], r["target"]) if x)
        tail = f" ({r['detail']})" if r["detail"] else ""
        click.echo(f"{r['id']:>6} {when} {r['actor']} [{r['source']}] {what}: {r['result']}{tail}")
