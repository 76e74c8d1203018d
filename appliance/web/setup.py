"""First boot: the one-time setup code that lets the first admin be created.

No default password exists. While no admin exists, the web role makes a random
code (stored 0600 in the secrets directory) and every page leads to the setup
page, which needs it. Only root can read it: `appliance setup-code` prints it
(`lab up` prints it too). It is deleted when the first admin is created, so it
works once; wrong codes count against the caller's address like failed logins.

Root writes and reads it in a directory the service user owns, so every access goes
through `appliance.secretfile`: no symlink followed, no predictable temporary name, the
file given to the data directory's owner by descriptor.
"""

from __future__ import annotations

import hmac
import logging
import os
import secrets
import sqlite3
from collections.abc import Callable

import click

from appliance import secretfile
from appliance.cli_options import paths_options
from appliance.errors import PermissionDenied
from appliance.paths import Paths
from appliance.secretfile import UnsafeSecretPath

log = logging.getLogger(__name__)

CODE_FILE = "setup-code"
ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I: read off a console
GROUPS, GROUP_LEN = 4, 4  # 16 symbols of 32: 80 bits


def _path(paths: Paths):
    return paths.secrets_dir / CODE_FILE


def new_code() -> str:
    raw = "".join(secrets.choice(ALPHABET) for _ in range(GROUPS * GROUP_LEN))
    return "-".join(raw[i : i + GROUP_LEN] for i in range(0, len(raw), GROUP_LEN))


def normalize(code: str) -> str:
    return "".join(c for c in code.upper() if c.isalnum())


def admin_exists(paths: Paths) -> bool:
    """Whether the config DB has an enabled admin (a read-only look: no Store needed, so
    any process may ask without rebinding its own databases)."""
    db = paths.data_dir / "config.db"
    if not db.exists():
        return False
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    except sqlite3.Error:
        return False
    try:
        row = conn.execute(
            "SELECT 1 FROM web_user WHERE role = 'admin' AND NOT disabled LIMIT 1"
        ).fetchone()
        return row is not None
    except sqlite3.Error:  # no such table yet: nobody has been created
        return False
    finally:
        conn.close()


def _read_code(paths: Paths) -> str | None:
    """The stored code; None when there is none (or an empty file). UnsafeSecretPath when
    the file or the secrets directory is a symlink, a FIFO or another non-file."""
    try:
        return secretfile.read(_path(paths)).decode("ascii", "replace").strip() or None
    except FileNotFoundError:
        return None


def setup_code(paths: Paths, create: bool = True) -> str | None:
    """The current setup code; with `create`, make one when there is none and no admin
    exists. None once an admin exists (a code left over is deleted then)."""
    if admin_exists(paths):
        consume(paths)
        return None
    code = _read_code(paths)
    if code or not create:
        return code
    secretfile.write(
        paths.secrets_dir,
        CODE_FILE,
        (new_code() + "\n").encode(),
        owner=secretfile.owner_for(paths.data_dir),
        # an empty file is replaced; a code another process made meanwhile never is
        replace=os.path.lexists(_path(paths)),
    )
    return _read_code(paths)


def code_matches(paths: Paths, offered: str) -> bool:
    try:
        code = setup_code(paths, create=False)
    except UnsafeSecretPath as e:  # the log says why; the caller learns no path
        log.warning("setup code refused: %s", e)
        return False
    if not code or not offered:
        return False
    return hmac.compare_digest(normalize(code).encode(), normalize(offered).encode())


def consume(paths: Paths) -> None:
    """The code has been used: delete it (never through a symlinked directory)."""
    secretfile.remove(paths.secrets_dir, CODE_FILE)


def code_for_cli(paths: Paths, euid: Callable[[], int] = os.geteuid) -> str | None:
    """What `appliance setup-code` prints: None when an admin exists (no code needed)."""
    if euid() != 0:
        raise PermissionDenied("setup-code: only root can read the setup code (sudo)")
    return setup_code(paths, create=True)


@click.command("setup-code")
@paths_options
def setup_code_cmd(paths: Paths) -> None:
    """Print the one-time code that creates the first admin in the web UI (root only)."""
    code = code_for_cli(paths)
    if code is None:
        click.echo("an admin exists: no setup code is needed (log in at the web UI)")
        return
    click.echo(code)
