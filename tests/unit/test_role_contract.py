"""Every role of `roles.ROLES` fulfils its contract (net: SyncRole; agent, web:
SyncFollower; field, opcua, modbusproxy: AsyncRole), each built with the fakes of its own test file;
and the checker (testkit.contract_problems) is shown to fail on each way a role can miss
the contract, so that first assertion can fail too."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from testkit import Clock, contract_problems

from appliance.modbusproxy.role import ModbusProxyRole
from appliance.net.role import NetRole
from appliance.roles import ROLE_NAMES, AsyncRole, Change, RoleContract, SyncFollower, SyncRole
from appliance.state.db import Store
from appliance.state.live import LiveState

from . import test_field_role, test_modbusproxy_role, test_opcua_role, test_web_role
from .test_agent_role import make_agent
from .test_net_role import FakeForwarding, FakeNft

# Each role as its unit tests build it, and the contract its loop relies on.
BUILDERS: dict[str, tuple[type, Callable[[Store, Path], object]]] = {
    "net": (
        SyncRole,
        lambda store, tmp: NetRole(
            store,
            LiveState(tmp / "run"),
            FakeNft(),
            None,
            clock=Clock(),
            forwarding=FakeForwarding(),
        ),
    ),
    "field": (AsyncRole, lambda store, tmp: test_field_role.Fixture(store, tmp).role),
    "opcua": (AsyncRole, lambda store, tmp: test_opcua_role.Fixture(tmp).role),
    "modbusproxy": (
        AsyncRole,
        lambda store, tmp: ModbusProxyRole(store, sockets=test_modbusproxy_role.LoopbackSockets(0)),
    ),
    "agent": (SyncFollower, lambda store, tmp: make_agent(store, tmp)[0]),
    "web": (SyncFollower, lambda store, tmp: test_web_role.Unit(store, tmp).role),
}


def test_every_role_has_a_contract_here() -> None:
    assert sorted(BUILDERS) == sorted(ROLE_NAMES)


@pytest.mark.parametrize("name", ROLE_NAMES)
def test_the_role_fulfils_its_contract(name: str, store: Store, tmp_path: Path) -> None:
    contract, build = BUILDERS[name]
    role = build(store, tmp_path)
    assert contract_problems(role, contract) == []
    assert role.name == name  # type: ignore[attr-defined]


class Good:
    name = "web"

    def __init__(self) -> None:
        self.dirty = False

    def snapshot(self, now: float) -> dict[str, Any]:
        return {}

    def step(self, now: float) -> None: ...

    def apply(self, change: Change) -> None: ...


class GoodAsync:
    name = "field"

    def __init__(self) -> None:
        self.dirty = False

    def snapshot(self, now: float) -> dict[str, Any]:
        return {}

    async def start(self) -> None: ...

    async def apply(self, change: Change) -> None: ...

    async def step(self, now: float) -> None: ...

    async def close(self) -> None: ...


def test_a_role_with_every_member_has_no_problem() -> None:
    assert contract_problems(Good(), SyncFollower) == []
    assert contract_problems(Good(), SyncRole) == []
    assert contract_problems(GoodAsync(), AsyncRole) == []
    # the base contract asks only for name, dirty and snapshot
    assert contract_problems(GoodAsync(), RoleContract) == []


def test_a_missing_attribute_or_method_is_named() -> None:
    class NoDirty(Good):
        def __init__(self) -> None:
            pass

    class NoApply:
        name = "agent"
        dirty = False

        def snapshot(self, now: float) -> dict[str, Any]:
            return {}

        def step(self, now: float) -> None: ...

    assert contract_problems(NoDirty(), SyncRole) == ["no attribute 'dirty'"]
    assert contract_problems(NoApply(), SyncFollower) == ["no method apply()"]
    assert contract_problems(NoApply(), SyncRole) == []


@pytest.mark.parametrize(
    ("name", "dirty", "problem"),
    [
        ("proxy", False, "name 'proxy' is not a role of roles.ROLES"),
        (None, False, "name is not a str"),
        ("web", 0, "dirty is not a bool"),
    ],
)
def test_name_must_be_a_known_role_and_dirty_a_bool(name: Any, dirty: Any, problem: str) -> None:
    role = Good()
    role.name = name
    role.dirty = dirty
    assert contract_problems(role, SyncRole) == [problem]


def test_sync_and_async_methods_must_match_the_contract() -> None:
    # a sync role where the loop awaits, and an async one where a thread calls
    assert contract_problems(Good(), AsyncRole) == [
        "apply() must be async",
        "no method close()",
        "no method start()",
        "step() must be async",
    ]
    assert contract_problems(GoodAsync(), SyncFollower) == [
        "apply() must be not async",
        "step() must be not async",
    ]


def test_a_method_that_does_not_take_the_contracts_arguments_is_named() -> None:
    class NoNow(Good):
        def step(self) -> None:  # type: ignore[override]
            ...

    [problem] = contract_problems(NoNow(), SyncRole)
    assert problem.startswith("step() does not take (now): ")
