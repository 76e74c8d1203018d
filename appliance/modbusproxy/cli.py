"""`appliance conduits learned NAME|review` and `appliance inventory`: what the Modbus proxy
saw, and the conduits to look at again.

Registered on the main CLI by appliance.cli (LAZY_COMMANDS). Both read the history DB,
where the modbusproxy role saves what learning conduits saw and the asset inventory
every few seconds (`role.SAVE_EVERY_S`) and when it stops. Errors are ApplianceError
subclasses; appliance.cli.main prints them as one line.
"""

from __future__ import annotations

import json
from typing import Any

import click

from appliance.cli_options import Number, paths_options
from appliance.errors import BadRequest, NotFound
from appliance.paths import Paths


class Addresses(click.ParamType):
    """A number of addresses 0-65535; anything else is one line naming the option, exit 2."""

    name = "addresses"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        option = "/".join(param.opts) if param is not None else "value"
        text = str(value).strip()
        if not (text.isascii() and text.isdigit() and int(text) <= 65535):
            raise BadRequest(
                f"must be a number of addresses, 0-65535 (got {value!r})", field=option
            )
        return int(text)


def _store(paths: Paths) -> Any:
    """The history DB with the role's tables (the process's Store when it has one)."""
    from appliance.modbusproxy.store import MODELS
    from appliance.state.db import borrowed_store

    return borrowed_store(paths.data_dir, MODELS)


def _fmt_time(ts: float | None) -> str:
    from appliance.field.cli import fmt_time

    return fmt_time(ts)


@click.group("conduits")
def conduits() -> None:
    """What crosses the conduits: `learned NAME` prints a learning conduit's restriction,
    `review` the conduits to look at again."""


@conduits.command("learned")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="machine-readable, with every observation")
@click.option(
    "--gap",
    type=Addresses(),
    default=0,
    show_default=True,
    help="join address ranges at most this many addresses apart",
)
@paths_options
def learned(name: str, as_json: bool, gap: int, paths: Paths) -> None:
    """The `modbus:` restriction that allows what conduit NAME passed while learning
    (its restriction in mode learn), as YAML to paste into the conduit, in mode test."""
    from appliance.modbusproxy import learn, store

    with _store(paths):
        observed = store.learned(name)
    proposal = learn.propose(name, observed, gap=gap)
    if proposal is None:
        raise NotFound(
            f"nothing learned for conduit {name!r}: put its restriction in mode learn "
            "(`modbus: learn`), let the traffic cross, and ask again"
        )
    if as_json:
        out = {
            "conduit": name,
            "modbus": proposal.mapping or None,
            "notes": list(proposal.notes),
            "requests": proposal.requests,
            "first_seen": proposal.first_seen,
            "last_seen": proposal.last_seen,
            "observed": [o.as_dict() for o in sorted(observed, key=lambda o: o.key)],
        }
        click.echo(json.dumps(out, indent=2))
        return
    click.echo(learn.to_yaml(proposal), nl=False)


@click.command("inventory")
@click.option("--json", "as_json", is_flag=True, help="machine-readable")
@paths_options
def inventory(as_json: bool, paths: Paths) -> None:
    """The Modbus devices seen through the proxy: unit ids, function codes, device
    identification (vendor, product code, revision), first and last seen."""
    from appliance.field.cli import table
    from appliance.modbusproxy import store
    from appliance.modbusproxy.assets import describe

    with _store(paths):
        assets = store.assets()
    if as_json:
        click.echo(json.dumps([a.as_dict() for a in assets], indent=2))
        return
    if not assets:
        click.echo(
            "no Modbus devices seen yet (a device is recorded when requests reach it through "
            "a conduit with a `modbus:` restriction)"
        )
        return
    rows = []
    for a in assets:
        ident = "; ".join(
            f"unit {u}: {describe(v)}" for u, v in sorted(a.identity.items())
        ) or "-"  # fmt: skip
        rows.append(
            [
                a.address,
                ", ".join(str(u) for u in sorted(a.units)) or "-",
                ", ".join(str(f) for f in sorted(a.functions)) or "-",
                ident,
                _fmt_time(a.first_seen),
                _fmt_time(a.last_seen),
                ", ".join(sorted(a.conduits)),
            ]
        )
    headers = ("DEVICE", "UNITS", "FUNCTIONS", "IDENTIFICATION", "FIRST SEEN", "LAST SEEN")
    for line in table((*headers, "CONDUITS"), rows):
        click.echo(line)


@conduits.command("review")
@click.option(
    "--unused-days",
    type=Number(0, 3650, "days"),
    default=30,
    show_default=True,
    help="a conduit without traffic for this long is reported",
)
@click.option("--json", "as_json", is_flag=True, help="machine-readable")
@paths_options
def review(unused_days: float, as_json: bool, paths: Paths) -> None:
    """The running revision's conduits to look at again: expired, expiring within a week,
    disabled, unused, wider than their traffic (a /24 used by one host), an owner with
    no address to ask."""
    import time

    from appliance.modbusproxy import store
    from appliance.modbusproxy.review import review as run_review
    from appliance.state import revisions as revs
    from appliance.state.live import LiveState

    with _store(paths) as s:
        rev = revs.desired(s)
        if rev is None:
            raise NotFound("no configuration yet: nothing to review")
        config = revs.config_of(rev)
        assets = store.assets()
    net = LiveState(paths.run_dir).read("net")
    findings = run_review(config, time.time(), unused_days=unused_days, assets=assets, net=net)
    if as_json:
        out = {"revision": rev.id, "findings": [f.as_dict() for f in findings]}
        click.echo(json.dumps(out, indent=2))
        return
    if not findings:
        click.echo(f"revision {rev.id}: {len(config.conduits)} conduits, nothing to look at again")
        return
    from appliance.field.cli import table

    click.echo(f"revision {rev.id}: {len(findings)} findings in {len(config.conduits)} conduits")
    rows = [[f.conduit, f.kind, f.message] for f in findings]
    for line in table(("CONDUIT", "FINDING", "WHY"), rows):
        click.echo(line)
