"""The one loop of the asyncio roles and the desired revision as a role sees it."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path
from typing import Any

from appliance.rolekit import AsyncLoop, Desired
from appliance.roles import Change
from appliance.state import revisions
from appliance.state.db import Revision, Store
from appliance.state.live import LiveState

from . import factory


def commit(store: Store, name: str) -> Revision:
    """A new desired revision, confirmed as the net role would once it applied it."""
    now = time.time()
    doc = factory.base()
    doc["unit"]["name"] = name
    rev = revisions.import_text(store, json.dumps(doc), author="t", now=now).revision
    revisions.commit(store, author="t", now=now, ref=rev.id)
    revisions.confirm(store, author="net", now=now, automatic=True)
    return rev


class FakeRole:
    """Records what the loop asks of it; `fail` makes one method raise."""

    name = "field"

    def __init__(self, fail: str = "") -> None:
        self.dirty = False
        self.calls: list[str] = []
        self.changes: list[Change] = []
        self.fail = fail
        self.steps = 0

    def _maybe_fail(self, what: str) -> None:
        self.calls.append(what)
        if what == self.fail:
            raise RuntimeError(f"{what} broke")

    async def start(self) -> None:
        self._maybe_fail("start")

    async def apply(self, change: Change) -> None:
        self.changes.append(change)
        self._maybe_fail("apply")

    async def step(self, now: float) -> None:
        self.steps += 1
        self._maybe_fail("step")

    async def close(self) -> None:
        self._maybe_fail("close")

    def snapshot(self, now: float) -> dict[str, Any]:
        return {"role": self.name, "changes": len(self.changes), "steps": self.steps}


def run_until(loop: AsyncLoop, done: Any, timeout: float = 10.0) -> None:
    stop = threading.Event()

    async def main() -> None:
        task = asyncio.create_task(loop.run(stop))
        deadline = asyncio.get_running_loop().time() + timeout
        while not done() and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)
        stop.set()
        await task

    asyncio.run(main())
    assert done(), "the loop did not get there in time"


def test_desired_reports_a_change_once_and_a_new_revision_again(store: Store) -> None:
    desired = Desired(store)
    first = desired.poll()
    assert first == Change(None, None)  # a new unit: no revision yet, said once
    assert desired.poll() is None
    rev = commit(store, "a1")
    change = desired.poll()
    assert change is not None and change.revision_id == rev.id
    assert change.config is not None and change.config.unit.name == "a1"
    assert desired.poll() is None
    assert desired.poll(force=True) == change
    assert desired.revision_id == rev.id


def test_desired_names_a_stored_document_that_no_longer_validates(store: Store) -> None:
    rev = commit(store, "a1")
    Revision.update(document='{"unit": {"name": 5, "bogus": 1}}', sha256="x").where(
        Revision.id == rev.id
    ).execute()
    desired = Desired(store)
    change = desired.poll()
    assert change is not None and change.config is None and change.revision_id == rev.id
    assert change.error and "bogus" in change.error
    assert desired.poll() is None  # said once; the role keeps what it runs


def test_the_loop_applies_steps_publishes_and_closes(store: Store, tmp_path: Path) -> None:
    live = LiveState(tmp_path / "run")
    role = FakeRole()
    loop = AsyncLoop(role, store, live, step_every=0.05)
    run_until(loop, lambda: role.steps >= 3)
    assert role.calls[:2] == ["start", "apply"] and role.calls[-1] == "close"
    assert role.changes == [Change(None, None)]
    doc = live.read("field")
    assert doc is not None and doc["changes"] == 1 and doc["steps"] >= 3


def test_the_doorbell_makes_the_loop_read_a_new_revision_at_once(
    store: Store, tmp_path: Path
) -> None:
    live = LiveState(tmp_path / "run")
    role = FakeRole()
    loop = AsyncLoop(role, store, live, reload_every=3600.0)  # only the bell can do it
    rang = []

    def done() -> bool:
        if role.changes and not rang:
            rev = commit(store, "rung")
            rang.append(rev.id)
            live.ring("field")
        return len(role.changes) == 2

    run_until(loop, done)
    assert role.changes[1].revision_id == rang[0]


def test_a_failing_apply_or_step_does_not_stop_the_loop(store: Store, tmp_path: Path) -> None:
    live = LiveState(tmp_path / "run")
    for what in ("apply", "step"):
        role = FakeRole(fail=what)
        loop = AsyncLoop(role, store, live, step_every=0.05)
        run_until(loop, lambda r=role: r.steps >= 3)  # type: ignore[misc]
        assert role.calls[-1] == "close"


def test_a_dirty_role_is_published_soon(store: Store, tmp_path: Path) -> None:
    live = LiveState(tmp_path / "run")
    role = FakeRole()
    loop = AsyncLoop(role, store, live, step_every=0.05)
    seen: list[int] = []

    def done() -> bool:
        doc = live.read("field")
        if doc and not seen:
            seen.append(doc["steps"])
            role.dirty = True
            return False
        return bool(seen) and bool(doc) and doc["steps"] > seen[0]

    run_until(loop, done, timeout=0.9)  # well before the regular write each second


def test_stop_is_heeded_while_the_role_is_still_starting(store: Store, tmp_path: Path) -> None:
    """A start that takes minutes (the OPC UA role's first address space cache under a
    slow CPU) must not hold up systemd's stop: the start is cancelled, close() runs."""

    class SlowRole(FakeRole):
        async def apply(self, change: Change) -> None:
            self.calls.append("apply")
            await asyncio.sleep(3600)

    role = SlowRole()
    loop = AsyncLoop(role, store, LiveState(tmp_path / "run"))
    stop = threading.Event()

    async def main() -> float:
        task = asyncio.create_task(loop.run(stop))
        while "apply" not in role.calls:
            await asyncio.sleep(0.01)
        stop.set()
        t0 = time.monotonic()
        await asyncio.wait_for(task, 5)
        return time.monotonic() - t0

    assert asyncio.run(main()) < 1.0
    assert role.calls == ["start", "apply", "close"] and role.steps == 0
