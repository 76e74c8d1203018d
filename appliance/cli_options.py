"""Options every command that touches a unit's state takes, in one place for every area."""

from __future__ import annotations

import functools
import getpass
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from appliance.paths import Paths

# The checkout this package runs from (an editable install): where `make demo` puts its lab.
CHECKOUT = Path(__file__).resolve().parents[1]
LAB_ROLES = ("net", "field", "opcua", "agent", "web")


def has_unit_state(paths: Paths) -> bool:
    return (paths.data_dir / "config.db").exists()


def _running_lab(cwd: Path) -> Paths | None:
    """The unit of a lab that is up in this checkout (or the current folder): its data
    and run directories, when the roles there report alive."""
    from appliance.state.live import LiveState

    for root in dict.fromkeys((cwd / ".lab", CHECKOUT / ".lab")):
        paths = Paths((root / "data").absolute(), (root / "run").absolute())
        if not has_unit_state(paths):
            continue
        live = LiveState(paths.run_dir)
        if any(live.alive(role) for role in LAB_ROLES):
            return paths
    return None


def default_paths(cwd: Path | None = None, note: Callable[[str], None] | None = None) -> Paths:
    """Where a command looks when it is told nowhere: the unit's own directories; on a
    developer's machine with no unit state there but a lab up in this checkout, the
    lab's unit, said in one line (so the first `appliance status` after `make demo`
    shows the demo, not "no configuration yet")."""
    say = note or (lambda text: click.echo(text, err=True))
    paths = Paths.resolve(None, None)
    if has_unit_state(paths):
        return paths
    lab = _running_lab(Path.cwd() if cwd is None else cwd)
    if lab is not None:
        say(
            f"appliance: no unit state in {paths.data_dir}; using the lab's unit in "
            f"{lab.data_dir.parent} (export APPLIANCE_DATA_DIR={lab.data_dir} "
            f"APPLIANCE_RUN_DIR={lab.run_dir} to say so)"
        )
        return lab
    return paths


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
        if data_dir is None and run_dir is None:
            return fn(*args, paths=default_paths(), **kw)
        return fn(*args, paths=Paths.resolve(data_dir, run_dir), **kw)

    return wrapper


class Number(click.ParamType):
    """A finite number in lo..hi (of `unit`s): anything else (nan, inf, 1e400, -1, "x") is
    one line naming the option, exit 2 (a click usage error is several lines)."""

    def __init__(self, lo: float, hi: float, unit: str = "seconds") -> None:
        self.lo, self.hi, self.name = lo, hi, unit

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        import math

        from appliance.errors import BadRequest

        if isinstance(value, float):
            return value
        option = "/".join(param.opts) if param is not None else "value"
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if not (math.isfinite(number) and self.lo <= number <= self.hi):
            raise BadRequest(
                f"must be a finite number of {self.name}, {self.lo:g}-{self.hi:g} (got {value!r})",
                field=option,
            )
        return number
