"""Identify a port: the blinker adapter with a fake ioctl, and the net role's request."""

from __future__ import annotations

import errno
import threading
from pathlib import Path

import pytest
from testkit import Clock

from appliance.errors import ApplianceError, Conflict, Invalid, NotFound, Unavailable
from appliance.net.identify import IDENTIFY_MAX_S, PortBlinker
from appliance.net.links import NicFacts
from appliance.net.ports import Ports, Sysfs
from appliance.net.role import NetRole
from appliance.state.db import Store
from appliance.state.live import LiveState


class FakeIoctl:
    """ETHTOOL_PHYS_ID as a driver answers it: refuses at once, or blinks until released."""

    def __init__(self, refuse: int | None = None) -> None:
        self.refuse = refuse
        self.calls: list[tuple[str, int]] = []
        self.release = threading.Event()

    def __call__(self, name: str, seconds: int) -> None:
        self.calls.append((name, seconds))
        if self.refuse is not None:
            raise OSError(self.refuse, "refused")
        self.release.wait(5)


def test_a_blink_runs_on_its_own_thread_one_at_a_time() -> None:
    ioctl = FakeIoctl()
    blinker = PortBlinker(ioctl)
    blinker.blink("eth1", 10)  # returns while the LED blinks
    assert ioctl.calls == [("eth1", 10)]
    with pytest.raises(Conflict, match="eth1 is blinking already"):
        blinker.blink("eth1", 5)
    blinker.blink("eth2", 5)  # another port is another request
    ioctl.release.set()
    for t in threading.enumerate():
        if t.name.startswith("identify:"):
            t.join(5)
    blinker.blink("eth1", 3)  # done: again
    assert ioctl.calls[-1] == ("eth1", 3)


@pytest.mark.parametrize(
    ("code", "error", "text"),
    [
        (errno.EOPNOTSUPP, Conflict, "veth0 cannot blink its LED: its driver does not support it"),
        (errno.ENODEV, Conflict, "veth0 is gone"),
        (errno.EPERM, ApplianceError, "the kernel refused to blink its LED: refused"),
    ],
)
def test_a_refusal_is_the_answer(code: int, error: type, text: str) -> None:
    blinker = PortBlinker(FakeIoctl(refuse=code))
    with pytest.raises(error, match=text):
        blinker.blink("veth0", 5)
    with pytest.raises(error):  # a refusal leaves the port free
        blinker.blink("veth0", 5)


NICS = [NicFacts(2, "it0", "02:a0:00:00:01:01", "veth", False, True, True, "UP", {})]


@pytest.fixture
def role(tmp_path: Path):
    store = Store(tmp_path / "data")
    ioctl = FakeIoctl()
    role = NetRole(
        store, LiveState(tmp_path / "run"), None, None, clock=Clock(),  # type: ignore[arg-type]
        ports=Ports(lambda: NICS, Sysfs(tmp_path / "sys")), blinker=PortBlinker(ioctl),
    )  # fmt: skip
    role._read_ports(role.ports, role.clock())  # what step does: the list to pick from
    yield role, store, ioctl
    ioctl.release.set()
    store.close()


def test_identify_a_listed_port(role) -> None:
    role, store, ioctl = role
    result = role.identify_port("it0", 20, actor="web:admin")
    assert result == {"port": "it0", "until": role.clock() + 20}
    assert ioctl.calls == [("it0", 20)]
    [event] = store.events(10, "port.identify")
    assert event.message == "it0: blinking its LED for 20 s, asked by web:admin"
    assert role.snapshot(role.clock())["identifying"] == {"it0": role.clock() + 20}
    assert role.snapshot(role.clock() + 21)["identifying"] == {}


@pytest.mark.parametrize("seconds", [0, IDENTIFY_MAX_S + 1, "10", 1.5, True, None])
def test_seconds_must_be_a_whole_number_in_range(role, seconds: object) -> None:
    role, _store, ioctl = role
    with pytest.raises(Invalid) as e:
        role.identify_port("it0", seconds)
    assert e.value.field == "seconds" and ioctl.calls == []


def test_only_a_listed_port(role) -> None:
    role, _store, ioctl = role
    with pytest.raises(NotFound, match=r"no port 'eth0' \(ports: it0\)") as e:
        role.identify_port("eth0")
    assert e.value.field == "port" and ioctl.calls == []


def test_without_a_blinker_it_is_unavailable(role) -> None:
    role, _store, _ioctl = role
    role.blinker = None
    with pytest.raises(Unavailable):
        role.identify_port("it0")
