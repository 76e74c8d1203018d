"""The lab's fleet receiver: a fresh database with the demo unit's token, and how to run it.

`prepare` makes <dir>/fleet.db with one unit registered under a newly generated token
and a generated operator password, through the receiver's own commands
(`python -m appliance.fleet add-unit --token-file`, `set-password --password-file`,
the same as `appliance fleet ...`). Both secrets stay in 0600 files next to the
database, so the demo can put the token into the unit's configuration and tell a
person how to log in. `serve_argv` is the receiver's command line.
"""

from __future__ import annotations

import secrets
import sys
from dataclasses import dataclass
from pathlib import Path

from appliance import secretfile
from appliance.errors import LabError
from appliance.proc import run

FLEET = [sys.executable, "-m", "appliance.fleet"]


@dataclass(frozen=True)
class FleetSetup:
    db_url: str
    token_file: Path
    password_file: Path


def _secret_file(path: Path, text: str) -> None:
    secretfile.write(path.parent, path.name, (text + "\n").encode(), dir_mode=None)


def prepare(directory: Path, unit: str, env: dict[str, str] | None = None) -> FleetSetup:
    """A new fleet database in `directory` knowing `unit` by a new token."""
    directory = directory.absolute()
    directory.mkdir(parents=True, exist_ok=True)
    for leftover in directory.glob("fleet.db*"):
        leftover.unlink()
    setup = FleetSetup(
        db_url=f"sqlite:///{directory / 'fleet.db'}",
        token_file=directory / "unit-token",
        password_file=directory / "operator-password",
    )
    _secret_file(setup.token_file, secrets.token_urlsafe(32))
    _secret_file(setup.password_file, secrets.token_urlsafe(15))
    for argv in (
        [*FLEET, "add-unit", unit, "--db", setup.db_url, "--token-file", str(setup.token_file)],
        [*FLEET, "set-password", "--db", setup.db_url, "--password-file", str(setup.password_file)],
    ):
        cp = run(argv, check=False, env=env)
        if cp.returncode != 0:
            detail = (cp.stderr.strip() or cp.stdout.strip()).splitlines()
            why = detail[-1] if detail else f"exit status {cp.returncode}"
            raise LabError(f"cannot prepare the fleet database ({argv[3]}): {why}")
    return setup


def serve_argv(setup: FleetSetup, *, listen: str, cert: Path, key: Path) -> list[str]:
    """`appliance fleet serve` on `listen` (ADDR:PORT) over HTTPS with the lab's cert; one
    worker process is plenty for a lab on a small machine."""
    return [
        *FLEET,
        "serve",
        "--listen",
        listen,
        "--db",
        setup.db_url,
        "--cert",
        str(cert),
        "--key",
        str(key),
        "--workers",
        "1",
    ]
