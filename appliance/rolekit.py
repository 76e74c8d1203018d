"""What runs a role object: the desired revision as a role sees it (`Desired`), and the
one loop of the asyncio roles (`AsyncLoop`, field and opcua).

The contract the roles fulfil is in `appliance.roles` (`AsyncRole`, `SyncRole`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from appliance.roles import AsyncRole, Change
from appliance.state import revisions
from appliance.state.db import Store
from appliance.state.live import LiveState

log = logging.getLogger("appliance.rolekit")

RELOAD_EVERY_S = 2.0  # the desired revision is read this often even without a doorbell
PUBLISH_EVERY_S = 1.0  # the live document is written this often (liveness)
STEP_EVERY_S = 0.5
IDLE_S = 0.2  # how often the loop looks at the stop flag and its timers
SOON_S = 0.2  # a dirty role's document is written this soon after the last write


class Desired:
    """Which desired revision a role runs, and whether another one is there now."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.key: tuple[int, str] | None = None
        self.read_once = False

    @property
    def revision_id(self) -> int | None:
        return self.key[0] if self.key else None

    def poll(self, force: bool = False) -> Change | None:
        """A `Change` when the desired revision is another than the one last seen (or
        `force`), else None. A stored document that no longer validates is a Change
        with `error` (once: the role keeps what it runs until a newer revision comes).
        A database error propagates: the caller keeps what runs and tries again."""
        rev = revisions.desired(self.store)
        key = (rev.id, rev.sha256) if rev is not None else None
        if self.read_once and key == self.key and not force:
            return None
        self.key, self.read_once = key, True
        if rev is None:
            return Change(None, None)
        try:
            return Change(rev.id, revisions.config_of(rev))
        except ValueError as e:  # stored under older rules
            return Change(rev.id, None, error=str(e))


class AsyncLoop:
    """Runs one `AsyncRole` until `stop` is set.

    The role's doorbell (`LiveState.ring`) or `RELOAD_EVERY_S` make it read the desired
    revision, and a change is handed to `role.apply`; `role.step` runs every
    `step_every` seconds; the live document is written every `PUBLISH_EVERY_S` and,
    while the role says it is `dirty`, `SOON_S` after the last write. A failing apply,
    step or publish is logged and the loop goes on: the role keeps serving what it has.
    `stop` is heeded while the role is still starting too: the start is cancelled."""

    def __init__(
        self,
        role: AsyncRole,
        store: Store,
        live: LiveState,
        *,
        step_every: float = STEP_EVERY_S,
        reload_every: float = RELOAD_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.role = role
        self.live = live
        self.desired = Desired(store)
        self.step_every = step_every
        self.reload_every = reload_every
        self.clock = clock
        self.wall = wall
        self._wake: asyncio.Event | None = None
        self.last_publish = float("-inf")

    async def run(self, stop: threading.Event) -> None:
        loop = asyncio.get_running_loop()
        wake = self._wake = asyncio.Event()
        bell = self.live.watch_doorbell(self.role.name, loop, wake.set)
        try:
            if not await self._unless_stopped(self._start(), stop):
                return  # stopped while starting: close what started (finally)
            now = self.clock()
            next_reload, next_step = now + self.reload_every, now
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), IDLE_S)
                now = self.clock()
                if wake.is_set() or now >= next_reload:
                    wake.clear()
                    await self.reload()
                    next_reload = now + self.reload_every
                if now >= next_step:
                    await self._guard("step", self.role.step(self.wall()))
                    next_step = now + self.step_every
                since = now - self.last_publish
                if since >= PUBLISH_EVERY_S or (self.role.dirty and since >= SOON_S):
                    self.publish()
        finally:
            loop.remove_reader(bell.fileno())
            bell.close()
            await self._guard("close", self.role.close())
            self.publish()

    async def _start(self) -> None:
        await self.role.start()
        self.publish()
        await self.reload(force=True)
        self.publish()

    async def _unless_stopped(self, coro: Any, stop: threading.Event) -> bool:
        """Run `coro` to its end (True; its exception propagates) unless `stop` is set
        first: then it is cancelled (False). A start can take minutes (the OPC UA role
        builds its address space cache on a first boot, slower still on a small CPU):
        systemd's SIGTERM must not wait for it (TimeoutStopSec, then SIGKILL)."""
        task = asyncio.ensure_future(coro)
        while not task.done():
            await asyncio.wait({task}, timeout=IDLE_S)
            if stop.is_set() and not task.done():
                log.info("%s: stopped while starting", self.role.name)
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                return False
        task.result()
        return True

    async def reload(self, force: bool = False) -> None:
        """Read the desired revision (off the loop) and apply it when it changed."""
        try:
            change = await asyncio.to_thread(self.desired.poll, force)
        except Exception as e:  # a busy or broken database: keep running what we have
            log.warning("%s: cannot read the desired revision: %s", self.role.name, e)
            return
        if change is not None:
            await self._guard("apply", self.role.apply(change))

    def publish(self) -> None:
        self.role.dirty = False
        self.last_publish = self.clock()
        try:
            self.live.write(self.role.name, self.role.snapshot(self.wall()))
        except Exception as e:  # a full or vanished run dir: again at the next second
            log.warning("%s: cannot write its live document: %s", self.role.name, e)

    async def _guard(self, what: str, coro: Any) -> None:
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug in one pass must not stop the role serving the others
            log.exception("%s: %s failed", self.role.name, what)
