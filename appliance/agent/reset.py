"""Factory reset: the unit back to its first-boot state.

Wipes the configuration DB (revisions, users, audit), the history DB (samples,
events, alarms, outbox), the secrets directory (TLS key, setup code, tokens),
every other file of the data directory except the unit's id (`unit-id`: it
names the box to its fleet like a serial number does), and the live state in
the run directory. Before it wipes, it writes an event, an audit line and a
log line (and the agent flushes syslog, so the SIEM sees it); after, the
fresh history holds one event saying that the unit was reset.

Last, it raises the *reset generation*, a counter in `<data_dir>/reset-generation`.
Every role process watches it (`appliance.daemon.ResetWatch`, in the one runner
every role goes through) and, when it changes, stops and exits with
`daemon.EXIT_RESET`; whatever runs it starts it again (systemd: `Restart=always`,
`RestartForceExitStatus=75` in each unit; `appliance run`: its supervisor). So no
role keeps the deleted databases open whoever runs the roles: the net role comes
back fail-closed with no conduit, the web role with no account (the setup code
again), as on first boot. `<run_dir>/factory-reset.json` records who reset and when.

Why the data directory and not the run directory: the counter lies with what it
stands for (the databases) and survives a reboot, so it only ever grows and a role
cannot miss a reset by seeing a value again; every role's unit can read and write it
(`StateDirectory=appliance`), the CLI's reset as root (the agent not running) too;
and it does not depend on the run directory being kept (`RuntimeDirectoryPreserve=`)
or on the reset's own wipe of the run directory.

Root resets too (`sudo appliance factory-reset --yes` while the agent is not running), in
directories the roles' user owns and can write. So the generation and the marker are
written through `appliance.secretfile` (a fresh random name, rename over the target: no
link planted at either name is followed; no FIFO is waited on), and the databases are
opened, to record the reset and to make the first-boot ones, only in a child process
running as the data directory's owner: they are the roles' to write, and root opens no
SQLite file there.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from appliance import secretfile
from appliance.errors import ApplianceError, PermissionDenied, UnsafeSecretPath
from appliance.paths import Paths
from appliance.secretfile import owner_for
from appliance.state.db import Store, config_db, history_db

log = logging.getLogger(__name__)

GENERATION = "reset-generation"
KEEP_IN_DATA = frozenset({"unit-id", GENERATION})
KEEP_IN_RUN = frozenset({"supervisor.json"})
MARKER = "factory-reset.json"
RECOGNISED = ("config.db", "history.db", "secrets", "unit-id", GENERATION)


def generation(data_dir: Path) -> str | None:
    """The reset generation (None before the first reset). Raises OSError if the file is
    there but cannot be read, or is not a regular file (a symlink, a FIFO: root reads this
    file in a directory the roles can write, so it opens no link and waits on no pipe)."""
    try:
        data = secretfile.read(Path(data_dir).resolve() / GENERATION, limit=64)
    except FileNotFoundError:
        return None
    except UnsafeSecretPath as e:
        raise OSError(errno.EINVAL, str(e)) from None
    return data.decode("ascii", "replace").strip()


def bump_generation(data_dir: Path) -> int:
    """Raise the reset generation by one (atomically, fsynced, through `secretfile`: a link
    planted at the name or at a temporary one is replaced, never followed); returns the
    new value. Root (the CLI) leaves the file to the data directory's owner, the roles'
    user, who may replace it later."""
    data_dir = Path(data_dir)
    try:
        old = generation(data_dir)
    except OSError:
        old = None
    new = int(old) + 1 if old and old.isdigit() else 1
    secretfile.write(
        data_dir.resolve(),
        GENERATION,
        f"{new}\n".encode(),
        mode=0o644,  # every role reads it, whatever the umask
        owner=owner_for(data_dir),
        dir_mode=None,  # the data directory keeps its mode
    )
    return new


def _as_owner(owner: tuple[int, int] | None, what: str, step: Callable[[], None]) -> None:
    """Run `step` as the data directory's owner when root resets (the CLI, the agent not
    running): the databases it makes belong to the roles' user, who must write them, and
    root opens no SQLite file in a directory that user controls (SQLite would follow a
    link planted at a database's -wal or -journal name). Without `owner`: in-process."""
    if owner is None:
        step()
        return
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop to the owner, run the step, report, exit
        code = 0
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(owner[1])
            os.setuid(owner[0])
            step()
        except BaseException as e:  # everything goes back to the parent
            code = 1
            with contextlib.suppress(OSError):
                os.write(w, f"{e}".encode("utf-8", "replace")[:4000])
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        why = f.read().decode("utf-8", "replace").strip()
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise ApplianceError(
            f"factory reset: {what} as uid {owner[0]} failed: {why or 'no reason given'}"
        )


def _check_data_dir(data_dir: Path) -> None:
    """Refuse to wipe a directory that is not an appliance data directory."""
    if data_dir == Path(data_dir.anchor) or data_dir == Path.home():
        raise ApplianceError(f"refusing to wipe {data_dir}: not a data directory")
    if not data_dir.is_dir():
        return
    entries = {p.name for p in data_dir.iterdir()}
    if entries and not entries & set(RECOGNISED):
        raise ApplianceError(
            f"refusing to wipe {data_dir}: it holds no appliance databases "
            f"(expected some of {', '.join(RECOGNISED)})"
        )


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=False)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _wipe(paths: Paths, removed: list[str]) -> None:
    data_dir = Path(paths.data_dir)
    try:
        if data_dir.is_dir():
            for entry in sorted(data_dir.iterdir()):
                if entry.name in KEEP_IN_DATA:
                    continue
                _remove(entry)
                removed.append(str(entry))
        run_dir = Path(paths.run_dir)
        if run_dir.is_dir():
            for entry in sorted(run_dir.iterdir()):
                if entry.name in KEEP_IN_RUN:
                    continue
                _remove(entry)
                removed.append(str(entry))
    except PermissionError as e:
        raise PermissionDenied(f"factory reset: cannot remove {e.filename} (root?)") from None
    except OSError as e:
        raise ApplianceError(f"factory reset: cannot remove {e.filename}: {e.strerror}") from None


def _first_boot_history(data_dir: Path, actor: str, at: float) -> None:
    fresh = Store(data_dir)  # the empty databases of a first boot
    try:
        fresh.event(
            "unit.factory_reset",
            f"this unit was reset to its first-boot state by {actor}",
            source="agent",
            severity="warning",
            data={"actor": actor, "at": at},
        )
    finally:
        fresh.close()


def _restart_roles(data_dir: Path) -> int | None:
    """Raise the reset generation: every role process sees it and starts afresh."""
    if not data_dir.is_dir():
        return None
    try:
        return bump_generation(data_dir)
    except ApplianceError as e:
        raise ApplianceError(
            f"factory reset: {e}; the roles keep the wiped state open until they restart "
            "(reboot the unit)"
        ) from None


def factory_reset(
    paths: Paths,
    actor: str,
    *,
    store: Store | None = None,
    before_wipe: Callable[[], None] | None = None,
    now: float | None = None,
) -> dict[str, Any]:
    """Wipe the unit; returns what was removed. Raises ApplianceError if it cannot."""
    at = time.time() if now is None else now
    data_dir = Path(paths.data_dir)
    _check_data_dir(data_dir)
    message = f"factory reset by {actor}: configuration, users, secrets and history are wiped"
    log.warning("%s", message)
    own_store = store is None
    # root (the CLI, the agent not running): the databases are opened as their owner
    owner = owner_for(data_dir) if own_store else None

    def record() -> None:
        mine = Store(data_dir) if store is None else store
        try:
            mine.event("unit.factory_reset", message, source="agent", severity="warning", at=at)
            mine.audit(actor, "factory-reset", source="agent", at=at)
        finally:
            if mine is not store:
                mine.close()

    try:
        _as_owner(owner, "recording the reset", record)
    except ApplianceError as e:  # a broken DB is one reason to reset: go on
        log.warning("could not record the reset before wiping: %s", e)
    if before_wipe is not None:
        try:
            before_wipe()
        except Exception as e:  # best effort (syslog flush): the reset goes on
            log.warning("before the wipe: %s", e)
    if store is not None:
        store.close()
    removed: list[str] = []
    try:
        _wipe(paths, removed)
        _as_owner(
            owner,
            "making the first-boot databases",
            lambda: _first_boot_history(data_dir, actor, at),
        )
    finally:
        if not own_store:
            # the caller goes on with its Store (the daemon writes "role.stopped"): bind the
            # models back to it, else its transactions and the models' writes would use two
            # connections and wait for each other
            config_db.initialize(store.config)
            history_db.initialize(store.history)
        # Even a wipe that failed half-way has deleted files the roles hold open: every
        # role starts again on what is there now, rather than going on with the old.
        gen = _restart_roles(data_dir)
    # who reset and when, in the run directory the roles can write: through secretfile,
    # so root follows no link planted at the name or at a temporary one
    record_at = {"at": at, "actor": actor, "pid": os.getpid(), "generation": gen}
    Path(paths.run_dir).mkdir(mode=0o755, parents=True, exist_ok=True)
    secretfile.write(
        Path(paths.run_dir).resolve(),
        MARKER,
        json.dumps(record_at).encode(),
        mode=0o644,
        owner=owner_for(data_dir),
        dir_mode=None,
    )
    log.warning(
        "factory reset done: %d entries removed; reset generation %s: every role restarts",
        len(removed),
        gen,
    )
    return {"at": at, "actor": actor, "removed": removed}
