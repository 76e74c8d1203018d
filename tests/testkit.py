"""Helpers every test folder shares: a clock to inject, polling for a condition, a role's process.

tests/ is on sys.path (tests/conftest.py sits there without an __init__.py), so any test
module imports these as `from testkit import Clock, wait_for`.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import pytest

from appliance.errors import DeviceError

if TYPE_CHECKING:
    from appliance.paths import Paths

T0 = 1_800_000_000.0  # a fixed epoch second (2027-01-15)


class Clock:
    """A clock the test moves by hand: inject it where the code takes `clock=`/`now=`.

    Calling it returns `t`; `advance(s)` (or `sleep(s)`, for code that sleeps on the clock
    it was given) moves it on. Tests may also set or add to `t` directly."""

    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds

    sleep = advance


def wait_for(
    pred: Callable[[], Any],
    timeout: float = 10.0,
    what: str = "the condition",
    detail: Callable[[], Any] | None = None,
    every: float = 0.05,
) -> Any:
    """Poll `pred` every `every` seconds until it returns something truthy, and return that;
    fail naming `what` (and `detail()`, what was last seen) after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        got = pred()
        if got:
            return got
        if time.monotonic() > deadline:
            seen = f"; last seen: {detail()}" if detail else ""
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}{seen}")
        time.sleep(every)


async def until(pred: Callable[[], Any], timeout: float, what: str, every: float = 0.05) -> Any:
    """`wait_for` inside a coroutine: `pred` may be a plain or an async function."""
    deadline = time.monotonic() + timeout
    while True:
        got = pred()
        if inspect.isawaitable(got):
            got = await got
        if got:
            return got
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(every)


def contract_problems(role: object, contract: type) -> list[str]:
    """What `role` (a built role object) lacks of `contract` (a Protocol of appliance.roles).

    The Protocols are not runtime-checkable and a type checker only sees what a test
    annotates, so this reads the contract itself: every attribute it declares is set (with
    the declared type for `name` and `dirty`), `name` is a role of `roles.ROLES`, and every
    method it declares exists, is a coroutine function exactly when the contract's is, and
    takes the contract's arguments."""
    from appliance.roles import ROLE_NAMES

    problems: list[str] = []
    protocols = [k for k in contract.__mro__ if getattr(k, "_is_protocol", False)]
    attributes = {a for k in protocols for a in getattr(k, "__annotations__", {})}
    for attr in sorted(attributes):
        if not hasattr(role, attr):
            problems.append(f"no attribute {attr!r}")
    if isinstance(getattr(role, "name", None), str):
        if role.name not in ROLE_NAMES:  # type: ignore[attr-defined]
            problems.append(f"name {role.name!r} is not a role of roles.ROLES")  # type: ignore[attr-defined]
    elif "name" in attributes:
        problems.append("name is not a str")
    if hasattr(role, "dirty") and not isinstance(role.dirty, bool):  # type: ignore[attr-defined]
        problems.append("dirty is not a bool")
    methods = {
        m: f for k in reversed(protocols) for m, f in vars(k).items() if inspect.isfunction(f)
    }
    for m, declared in sorted(methods.items()):
        if m.startswith("_"):
            continue
        got = getattr(role, m, None)
        if not callable(got):
            problems.append(f"no method {m}()")
            continue
        if inspect.iscoroutinefunction(declared) != inspect.iscoroutinefunction(got):
            want = "async" if inspect.iscoroutinefunction(declared) else "not async"
            problems.append(f"{m}() must be {want}")
        args = [p for p in inspect.signature(declared).parameters.values() if p.name != "self"]
        try:
            inspect.signature(got).bind(*(None for _ in args))
        except TypeError as e:
            problems.append(f"{m}() does not take ({', '.join(p.name for p in args)}): {e}")
    return problems


def start_roles(paths: Paths, roles: str) -> subprocess.Popen[bytes]:
    """`appliance run --roles <roles>` as a unit runs it (its data and run directories in the
    environment), stdout dropped and stderr piped for the test's messages; the caller stops it."""
    env = {
        **os.environ,
        "APPLIANCE_DATA_DIR": str(paths.data_dir),
        "APPLIANCE_RUN_DIR": str(paths.run_dir),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "appliance", "run", "--roles", roles],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


class FakeLink:
    """A Modbus device in memory behind the link interface of `appliance.field.modbus`
    (`ModbusLink`): registers and coils to read and write, errors to inject."""

    def __init__(self, registers: dict[int, int] | None = None) -> None:
        self.registers = registers or {}
        self.coils: dict[int, bool] = {}
        self.holes: set[int] = set()  # addresses that answer exception 2 when read
        self.fail: DeviceError | None = None  # every read fails with this
        self.connect_error: DeviceError | None = None
        self.is_connected = False
        self.reads: list[tuple[str, int, int]] = []
        self.writes: list[tuple[str, int, Any]] = []
        self.connects = 0
        self.timeout = 1.0
        self.requests = 0
        self.times: list[tuple[float, float]] = []
        self.delay = 0.0  # seconds each read takes (a slow or hanging device)

    @property
    def connected(self) -> bool:
        return self.is_connected

    def set_timeout(self, timeout: float) -> None:
        self.timeout = timeout

    async def connect(self) -> None:
        if self.is_connected:
            return
        self.connects += 1
        if self.connect_error is not None:
            raise self.connect_error
        self.is_connected = True

    def close(self) -> None:
        self.is_connected = False

    async def read(self, unit: int, table: str, start: int, count: int) -> Sequence[Any]:
        t0 = time.monotonic()
        self.reads.append((table, start, count))
        self.requests += 1
        await asyncio.sleep(self.delay)
        if self.fail is not None:
            raise self.fail
        if any(a in self.holes for a in range(start, start + count)):
            raise DeviceError("exception", "illegal data address", exception_code=2)
        self.times.append((t0, time.monotonic()))
        if table in ("coil", "discrete"):
            return [self.coils.get(a, False) for a in range(start, start + count)]
        return [self.registers.get(a, 0) for a in range(start, start + count)]

    async def write_coil(self, unit: int, address: int, value: bool) -> None:
        self.writes.append(("coil", address, value))
        self.coils[address] = value

    async def write_registers(self, unit: int, address: int, values: Sequence[int]) -> None:
        self.writes.append(("holding", address, list(values)))
        for i, v in enumerate(values):
            self.registers[address + i] = v
