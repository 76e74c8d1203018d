"""Options every command that touches a unit's state takes, in one place for every area."""

from __future__ import annotations

import functools
import getpass
import os
from collections.abc import Callable
from typing import Any

import click

from appliance.paths import Paths


def actor() -> str:
    """Who runs this command, as audit rows name them (sudo's user, not root)."""
    user = os.environ.get("SUDO_USER") or getpass.getuser()
    return f"cli:{user}"


def paths_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """--data-dir and --run-dir (also APPLIANCE_DATA_DIR/RUN_DIR, or the parent group's, so
    `tags --data-dir D history X` works too), passed on as `paths`."""

    @click.option(
        "--data-dir",
        envvar="APPLIANCE_DATA_DIR",
        type=click.Path(file_okay=False),
        help="configuration and history databases [default: /var/lib/appliance]",
    )
    @click.option(
        "--run-dir",
        envvar="APPLIANCE_RUN_DIR",
        type=click.Path(file_okay=False),
        help="live state of the roles (tmpfs) [default: /run/appliance]",
    )
    @functools.wraps(fn)
    def wrapper(*args: Any, data_dir: str | None, run_dir: str | None, **kw: Any) -> Any:
        parent = click.get_current_context().parent
        if parent is not None:
            data_dir = data_dir or parent.params.get("data_dir")
            run_dir = run_dir or parent.params.get("run_dir")
        return fn(*args, paths=Paths.resolve(data_dir, run_dir), **kw)

    return wrapper
