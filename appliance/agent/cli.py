"""CLI commands of the agent: `identify`, `diagnostics` and `factory-reset`.

`appliance.cli` loads them when one is used (see COMMANDS). Their --data-dir and
--run-dir are `appliance.cli_options.paths_options`, as everywhere.
"""

from __future__ import annotations

import errno
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import click

from appliance.cli_options import actor, has_unit_state, paths_options
from appliance.errors import ApplianceError, PermissionDenied
from appliance.paths import Paths


@click.command("identify")
@click.option(
    "--seconds",
    default=15.0,
    show_default=True,
    type=click.FloatRange(1, 3600),
    help="how long the LEDs blink",
)
@paths_options
def identify(seconds: float, paths: Paths) -> None:
    """Blink the unit's LEDs so an installer can find it in the cabinet."""
    from appliance.state.control import call, socket_path

    result = call(socket_path(paths.run_dir, "agent"), "identify", seconds=seconds, actor=actor())
    until = datetime.fromtimestamp(float(result["until"]), UTC).strftime("%H:%M:%S UTC")
    click.echo(f"identifying until {until} ({seconds:g} s)")


@click.command("diagnostics")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, allow_dash=True),
    help="archive to write ('-': standard output) [default: appliance-diagnostics-<time>.tar.gz]",
)
@paths_options
def diagnostics(output: str | None, paths: Paths) -> None:
    """Write one archive for support: versions, health, config (secrets redacted), ruleset,
    links, events, alarms, journals, disk and database figures."""
    from appliance.agent.diagnostics import build

    if output != "-" and output is not None and Path(output).exists() and Path(output).is_dir():
        raise ApplianceError(f"{output} is a directory", field="--output")
    data = build(paths)
    if has_unit_state(paths):  # who took the unit's figures, logs and (redacted) config
        from appliance.state.db import borrowed_store

        with borrowed_store(paths.data_dir) as store:
            store.audit(actor(), "diagnostics", detail=f"{len(data)} bytes")
    if output == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    target = Path(output or f"appliance-diagnostics-{stamp}.tar.gz")
    try:
        # no O_NOFOLLOW would let root follow a link planted in a shared directory
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
    except OSError as e:
        why = "it is a symlink" if e.errno == errno.ELOOP else e.strerror
        raise ApplianceError(f"cannot write {target}: {why}", field="--output") from None
    click.echo(f"wrote {target} ({len(data) / 1024:.0f} kB)")


@click.command("factory-reset")
@click.option("--yes", is_flag=True, help="really wipe configuration, users, secrets and history")
@paths_options
def factory_reset(yes: bool, paths: Paths) -> None:
    """Return the unit to its first-boot state (root only; the button does the same)."""
    if not yes:
        raise ApplianceError(
            "this wipes configuration, users, secrets and history: add --yes to do it",
            field="--yes",
        )
    if os.geteuid() != 0:
        raise PermissionDenied("a factory reset needs root")
    from appliance import secretfile
    from appliance.agent.role import RESET_KEY
    from appliance.state.control import call, socket_path
    from appliance.state.live import LiveState

    who = actor()
    live = LiveState(paths.run_dir)
    if live.alive("agent"):
        try:
            # root reads a file in a directory the roles can write: never through a symlink
            proof = secretfile.read(paths.run_dir / RESET_KEY).decode().strip()
        except OSError as e:
            raise ApplianceError(f"cannot read the agent's reset key: {e.strerror}") from None
        result = call(
            socket_path(paths.run_dir, "agent"),
            "factory_reset",
            timeout=60.0,
            actor=who,
            proof=proof,
        )
        how = "by the agent; the roles restart"
    else:
        from appliance.agent.reset import factory_reset as do_reset

        result = do_reset(paths, who, now=time.time())
        how = "(the agent is not running)"
    click.echo(f"factory reset done {how}: {len(result.get('removed', []))} entries removed")


COMMANDS = (identify, diagnostics, factory_reset)
