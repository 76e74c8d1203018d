"""What every request of the web app reads: the store, the clock, the live documents and
the desired configuration, each cached where it is safe (by revision id, by file mtime)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from flask import current_app

from appliance.config.model import Config
from appliance.paths import Paths
from appliance.roles import ALIVE_WITHIN_S
from appliance.state.db import Revision, Store
from appliance.state.live import LiveState


class LiveCache:
    """LiveState.read with the parsed document kept until the file changes (the field
    role's document with its tags is large, and every page polls)."""

    def __init__(self, run_dir: os.PathLike[str] | str) -> None:
        self.live = LiveState(run_dir)  # type: ignore[arg-type]
        self._cache: dict[str, tuple[tuple[int, int, int], dict[str, Any] | None]] = {}
        self._lock = threading.Lock()

    def read(self, role: str) -> dict[str, Any] | None:
        path = self.live.path(role)
        try:
            st = path.stat()
        except OSError:
            return None
        key = (st.st_mtime_ns, st.st_size, st.st_ino)
        with self._lock:
            hit = self._cache.get(role)
        if hit is not None and hit[0] == key:
            return hit[1]
        doc = self.live.read(role)
        with self._lock:
            self._cache[role] = (key, doc)
        return doc

    def alive(self, role: str, now: float) -> bool:
        doc = self.read(role)
        if not doc:
            return False
        try:
            if now - float(doc.get("updated_at", 0)) > ALIVE_WITHIN_S:
                return False
            os.kill(int(doc["pid"]), 0)
        except (ProcessLookupError, KeyError, ValueError, TypeError):
            return False
        except PermissionError:
            pass
        return True

    def ring(self, *roles: str) -> None:
        for role in roles:
            self.live.ring(role)


@dataclass
class WebContext:
    paths: Paths
    store: Store
    live: LiveCache
    clock: Callable[[], float] = time.time
    testing: bool = False
    started_at: float = field(default_factory=time.time)
    _config: tuple[int, Config] | None = None
    _admin_seen_at: float | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def now(self) -> float:
        return self.clock()

    def desired(self) -> tuple[Revision | None, Config | None]:
        """The pending revision, else the confirmed one, and its Config (cached by id)."""
        rev = (
            Revision.select(Revision.id, Revision.state)
            .where(Revision.state.in_(("pending", "confirmed")))
            .order_by((Revision.state == "pending").desc(), Revision.id.desc())
            .first()
        )
        if rev is None:
            return None, None
        with self._lock:
            cached = self._config
        if cached is not None and cached[0] == rev.id:
            return Revision.get_by_id(rev.id), cached[1]
        full = Revision.get_by_id(rev.id)
        from appliance.state.revisions import config_of

        cfg = config_of(full)
        with self._lock:
            self._config = (rev.id, cfg)
        return full, cfg

    def config(self) -> Config:
        """The desired configuration, or the defaults before there is one."""
        return self.desired()[1] or Config()

    def session_limits(self) -> tuple[float, float]:
        web = self.config().web
        return web.session_idle_minutes * 60.0, web.session_max_hours * 3600.0

    def admin_exists(self) -> bool:
        """Whether setup is done; a positive answer is trusted for a few seconds."""
        from appliance.web import accounts

        now = time.monotonic()
        if self._admin_seen_at is not None and now - self._admin_seen_at < 5.0:
            return True
        if accounts.admin_exists():
            self._admin_seen_at = now
            return True
        self._admin_seen_at = None
        return False

    def forget_admin(self) -> None:
        self._admin_seen_at = None


def ctx() -> WebContext:
    return current_app.extensions["appliance"]
