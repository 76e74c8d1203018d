"""A factory reset takes effect whoever runs the roles: it raises the reset generation,
and the one runner every role goes through (`appliance run --roles X`, what each
systemd unit runs) stops the role and exits with EXIT_RESET when it changes."""

from __future__ import annotations

import os
import threading
import time
import types
from pathlib import Path
from typing import Any

import pytest
from testkit import start_roles

from appliance import daemon
from appliance.agent import reset
from appliance.paths import Paths
from appliance.state.db import Store


def paths_in(tmp_path: Path) -> Paths:
    return Paths(tmp_path / "data", tmp_path / "run")


def test_the_generation_grows_by_one_and_survives_the_reset(tmp_path: Path) -> None:
    paths = paths_in(tmp_path)
    paths.data_dir.mkdir()
    assert reset.generation(paths.data_dir) is None
    assert reset.bump_generation(paths.data_dir) == 1
    assert reset.generation(paths.data_dir) == "1"
    (paths.data_dir / "unit-id").write_text("9a1d6b0e-1111-4222-8333-444455556666\n")
    Store(paths.data_dir).close()
    done = reset.factory_reset(paths, "test", now=1000.0)
    assert reset.generation(paths.data_dir) == "2"  # kept by the wipe, and raised
    assert str(paths.data_dir / reset.GENERATION) not in done["removed"]
    assert oct((paths.data_dir / reset.GENERATION).stat().st_mode & 0o777) == "0o644"
    assert not [p.name for p in paths.data_dir.iterdir() if p.name.endswith(".tmp")]


def test_the_generation_is_written_over_a_planted_link_not_through_it(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    (data / reset.GENERATION).symlink_to(victim)
    reset.bump_generation(data)
    assert victim.read_text() == "keep me"
    assert not (data / reset.GENERATION).is_symlink()


@pytest.mark.skipif(os.geteuid() != 0, reason="root's reset (the CLI, no agent running)")
def test_roots_reset_leaves_the_generation_to_the_roles_user(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    os.chown(data, 65534, 65534)  # the data directory belongs to the roles' user
    reset.bump_generation(data)
    st = (data / reset.GENERATION).stat()
    assert (st.st_uid, st.st_gid) == (65534, 65534)


def test_the_watch_sees_a_reset_and_only_a_reset(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    watch = daemon.ResetWatch(data)
    assert not watch.changed()
    assert not watch.changed()
    reset.bump_generation(data)
    assert watch.changed()
    assert daemon.ResetWatch(data).changed() is False  # a process started after it


class FakeRole:
    """`appliance.<role>.role` with a main() that runs until stop, as the real roles do."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.stopped_by: str | None = None

    def module(self, on_start: Any = None) -> types.ModuleType:
        mod = types.ModuleType("appliance.fake.role")

        def main(paths: Paths, stop: threading.Event) -> None:
            self.started.set()
            if on_start is not None:
                on_start(paths)
                return
            stop.wait(30)
            self.stopped_by = "stop" if stop.is_set() else "timeout"

        mod.main = main  # type: ignore[attr-defined]
        return mod


def test_a_role_stops_when_the_generation_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = paths_in(tmp_path)
    fake = FakeRole()
    monkeypatch.setattr(daemon.importlib, "import_module", lambda name: fake.module())
    stop = threading.Event()
    result: list[bool] = []
    t = threading.Thread(target=lambda: result.append(daemon.run_role(paths, "field", stop)))
    t.start()
    assert fake.started.wait(10)
    time.sleep(daemon.RESET_WATCH_S * 2)
    assert t.is_alive()  # no reset, no stop
    started = time.monotonic()
    reset.bump_generation(paths.data_dir)
    t.join(10)
    assert not t.is_alive()
    assert time.monotonic() - started < daemon.RESET_WATCH_S * 4
    assert fake.stopped_by == "stop"
    assert result == [True]


def test_a_role_stopped_by_sigterm_is_not_a_reset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeRole()
    monkeypatch.setattr(daemon.importlib, "import_module", lambda name: fake.module())
    stop = threading.Event()
    stop.set()
    assert daemon.run_role(paths_in(tmp_path), "web", stop) is False


def test_the_agent_returning_after_its_own_reset_asks_to_be_restarted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeRole()
    resetting = fake.module(on_start=lambda paths: reset.factory_reset(paths, "button"))
    monkeypatch.setattr(daemon.importlib, "import_module", lambda name: resetting)
    paths = paths_in(tmp_path)
    assert daemon.run_role(paths, "agent", threading.Event()) is True
    store = Store(paths.data_dir)
    try:
        kinds = [e.kind for e in store.events(10)]
    finally:
        store.close()
    # the stop is written to the fresh history, after the reset's own event
    assert kinds[:2] == ["role.stopped", "unit.factory_reset"]


def test_a_role_that_fails_on_its_wiped_files_still_exits_for_a_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The opcua role closes a cache in the data directory on its way out: after a reset
    that file is gone. The role was stopping for the reset: it is started again, not an
    internal error; the same failure without a reset is still raised."""

    def fails(paths: Paths) -> None:
        reset.factory_reset(paths, "test")
        raise FileNotFoundError(2, "No such file or directory", "cache/opcua-aspace")

    fake = FakeRole()
    monkeypatch.setattr(daemon.importlib, "import_module", lambda name: fake.module(fails))
    assert daemon.run_role(paths_in(tmp_path), "opcua", threading.Event()) is True

    def fails_alone(paths: Paths) -> None:
        raise FileNotFoundError(2, "No such file or directory", "cache/opcua-aspace")

    monkeypatch.setattr(daemon.importlib, "import_module", lambda name: fake.module(fails_alone))
    with pytest.raises(FileNotFoundError):
        daemon.run_role(paths_in(tmp_path), "opcua", threading.Event())


def test_appliance_run_exits_for_a_restart_after_a_reset(tmp_path: Path) -> None:
    """The process a unit runs: `appliance run --roles field`, env as in the unit."""
    paths = paths_in(tmp_path)
    proc = start_roles(paths, "field")
    try:
        deadline = time.monotonic() + 30
        while not (paths.run_dir / "field.json").exists():
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            assert time.monotonic() < deadline, "the field role did not start"
            time.sleep(0.1)
        reset.bump_generation(paths.data_dir)
        code = proc.wait(15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    err = proc.stderr.read().decode() if proc.stderr else ""
    assert code == daemon.EXIT_RESET, err
    assert "factory reset" in err
