"""A throw-away PostgreSQL cluster (initdb + pg_ctl in a temporary directory) for tests and bench.

There is no systemd in CI and the machine's own PostgreSQL is none of our business: the
cluster lives in its own directory, listens on a UNIX socket there and, when asked, on a
free localhost port, runs as the `postgres` user when started by root (initdb refuses
root), and is stopped and removed by `stop()`. `create_database()` makes a fresh empty
database (about 40 ms) and returns its URL for `appliance.fleet.store.open_db`.

Durability is off (fsync, synchronous_commit, full_page_writes): a test cluster is thrown
away, and the bench measures the receiver, not this VM's disk (`durable=True` keeps it on).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

from appliance.errors import ApplianceError

ADMIN_USER = "fleet"


class NoPostgres(RuntimeError):
    """PostgreSQL's server binaries (or a user to run them as) are not on this machine.

    A harness error for the tests and the bench, not one a person meets through the CLI or
    an API: so not an ApplianceError (those live in errors.py with their exit codes)."""


def pg_bin(name: str) -> str | None:
    """The path of PostgreSQL server program `name` (Debian keeps them out of PATH)."""
    found = shutil.which(name)
    if found:
        return found
    versions = sorted(
        glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
        key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0,
    )
    return versions[-1] if versions else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def database_of(url: str) -> str:
    """The database name in a postgresql:// URL."""
    return urlparse(url).path.lstrip("/")


@dataclass
class Cluster:
    """A running throw-away cluster; `url()` names one of its databases."""

    root: str
    port: int
    tcp: bool
    _run: dict[str, Any] = field(repr=False)
    _pg_ctl: str = field(repr=False)
    _made: int = 0

    @property
    def data(self) -> str:
        return f"{self.root}/data"

    def url(self, database: str = "postgres") -> str:
        """A URL for store.open_db: over TCP when the cluster listens there, else its socket."""
        if self.tcp:
            return f"postgresql://{ADMIN_USER}@127.0.0.1:{self.port}/{database}"
        return f"postgresql://{ADMIN_USER}@/{database}?host={self.root}&port={self.port}"

    def connect(self, database: str = "postgres") -> Any:
        import psycopg2

        conn = psycopg2.connect(host=self.root, port=self.port, user=ADMIN_USER, dbname=database)
        conn.autocommit = True
        return conn

    def sql(self, statement: str, database: str = "postgres") -> list[tuple[Any, ...]]:
        conn = self.connect(database)
        try:
            with conn.cursor() as cur:
                cur.execute(statement)
                return list(cur.fetchall()) if cur.description else []
        finally:
            conn.close()

    def create_database(self, prefix: str = "t") -> str:
        """A new empty database -> its URL."""
        self._made += 1
        name = f"{prefix}_{os.getpid()}_{self._made}"
        self.sql(f'CREATE DATABASE "{name}" TEMPLATE template0 STRATEGY FILE_COPY')
        return self.url(name)

    def drop_database(self, url: str) -> None:
        """Drop the database of `url` (made by create_database), ending its connections."""
        name = database_of(url)
        self.sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def stop(self) -> None:
        subprocess.run(
            [self._pg_ctl, "-D", self.data, "-m", "immediate", "stop"],
            **{**self._run, "check": False},
        )
        shutil.rmtree(self.root, ignore_errors=True)


def start(*, tcp: bool = False, durable: bool = False, max_connections: int = 100) -> Cluster:
    """initdb + pg_ctl start in a new temporary directory -> the running Cluster.

    Raises NoPostgres when the server binaries are missing (or root has no `postgres`
    user to run them as), ApplianceError when initdb or the start fail (with their output).
    """
    initdb, pg_ctl = pg_bin("initdb"), pg_bin("pg_ctl")
    if not initdb or not pg_ctl:
        raise NoPostgres("no PostgreSQL server binaries (initdb, pg_ctl) on this machine")
    user = None
    if os.geteuid() == 0:  # initdb refuses to run as root
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            raise NoPostgres("running as root and there is no postgres user to run PostgreSQL as")
    root = tempfile.mkdtemp(prefix="fleet-pg-")
    run: dict[str, Any] = {"check": True, "capture_output": True, "timeout": 120, "text": True}
    if user is not None:
        os.chown(root, user.pw_uid, user.pw_gid)
        run["user"] = user.pw_uid
        run["group"] = user.pw_gid
    port = free_port()
    data = f"{root}/data"
    options = [
        f"-p {port}",
        f"-k {root}",
        "-c listen_addresses=" + ("127.0.0.1" if tcp else "''"),
        f"-c max_connections={max_connections}",
    ]
    if not durable:
        options += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
    try:
        subprocess.run([initdb, "-D", data, "-A", "trust", "-U", ADMIN_USER, "-E", "UTF8"], **run)
        subprocess.run(
            [pg_ctl, "-D", data, "-o", " ".join(options), "-l", f"{root}/log", "-w", "start"],
            **run,
        )
    except subprocess.CalledProcessError as e:
        log = ""
        try:
            with open(f"{root}/log") as f:
                log = f.read()[-2000:]
        except OSError:
            pass
        shutil.rmtree(root, ignore_errors=True)
        raise ApplianceError(
            f"{os.path.basename(e.cmd[0])} failed: {(e.stderr or e.stdout or '').strip()} {log}"
        ) from None
    return Cluster(root=root, port=port, tcp=tcp, _run=run, _pg_ctl=pg_ctl)
