"""Factory reset: the unit back to its first-boot state.

Wipes the configuration DB (revisions, users, audit), the history DB (samples,
events, alarms, outbox), the secrets directory (TLS key, setup code, tokens),
every other file of the data directory except the unit's id (`unit-id`: it
names the box to its fleet like a serial number does), and the live state in
the run directory. Before it wipes, it writes an event, an audit line and a
log line (and the agent flushes syslog, so the SIEM sees it); after, the
fresh history holds one event saying that the unit was reset.

The agent then returns from its role and leaves `<run_dir>/factory-reset.json`:
the supervisor restarts every role, so that none keeps the deleted databases
open and the net role starts fail-closed, as on first boot.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from appliance.errors import ApplianceError, PermissionDenied
from appliance.paths import Paths
from appliance.state.db import Store, config_db, history_db

log = logging.getLogger(__name__)

KEEP_IN_DATA = frozenset({"unit-id"})
KEEP_IN_RUN = frozenset({"supervisor.json"})
MARKER = "factory-reset.json"
RECOGNISED = ("config.db", "history.db", "secrets", "unit-id")


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
    try:
        store = store or Store(data_dir)
        store.event("unit.factory_reset", message, source="agent", severity="warning", at=at)
        store.audit(actor, "factory-reset", source="agent", at=at)
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
        if not own_store:
            # the caller goes on with its Store (the daemon writes "role.stopped"): bind the
            # models back to it, else its transactions and the models' writes would use two
            # connections and wait for each other
            config_db.initialize(store.config)
            history_db.initialize(store.history)
    run_dir = Path(paths.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    marker = run_dir / MARKER
    tmp = marker.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps({"at": at, "actor": actor, "pid": os.getpid()}))
    os.replace(tmp, marker)
    log.warning("factory reset done: %d entries removed; roles must restart", len(removed))
    return {"at": at, "actor": actor, "removed": removed}
