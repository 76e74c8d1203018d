"""Unit-test fixtures: a base configuration to vary, a fixed clock, a fresh data dir per test,
and a fresh web app (`web`, `ready`; the kit is webkit.py)."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from appliance.agent import outbox
from appliance.config.load import Loaded, validate_data
from appliance.errors import ConfigInvalid
from appliance.field import store as field_store
from appliance.state.db import Store
from appliance.web import accounts

from . import factory
from .factory import NOW

if TYPE_CHECKING:
    from .webkit import Web

# The hypothesis profile (repeatable in `make test`, random in `make fuzz`) is loaded by
# tests/conftest.py from tests/propkit.py, for every folder.


# Every area's tables, as a process running all the roles would have them.
ALL_MODELS = (*field_store.MODELS, *outbox.MODELS, *accounts.MODELS)


@pytest.fixture
def base() -> dict[str, Any]:
    """A valid document (IT 10.10.0.0/24, OT 192.168.50.0/24, one Modbus conduit) to vary."""
    return factory.base()


@pytest.fixture
def invalid() -> Callable[..., list[tuple[str, str, int | None]]]:
    """Validate a document that must fail; return its (path, message, line) errors."""

    def run(data: dict[str, Any], now: datetime | None = NOW) -> list[tuple[str, str, int | None]]:
        with pytest.raises(ConfigInvalid) as exc:
            validate_data(data, now=now)
        return exc.value.errors

    return run


@pytest.fixture
def valid() -> Callable[..., Loaded]:
    def run(data: dict[str, Any], now: datetime | None = NOW) -> Loaded:
        return validate_data(data, now=now)

    return run


@pytest.fixture(scope="session")
def empty_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Databases with every area's tables, made once: creating them costs ~0.1 s of fsyncs."""
    path = tmp_path_factory.mktemp("template") / "data"
    Store(path, ALL_MODELS).close()
    return path


@pytest.fixture
def store(tmp_path: Path, empty_data_dir: Path) -> Iterator[Store]:
    """Both databases in a fresh temporary data directory (a copy of empty ones)."""
    shutil.copytree(empty_data_dir, tmp_path / "data")
    s = Store(tmp_path / "data")
    # Durability is not under test here (test_db checks the real pragmas); without
    # an fsync per write the revision tests run ten times faster.
    for db in (s.config, s.history):
        db.execute_sql("PRAGMA synchronous=OFF")
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def web(tmp_path: Path, empty_data_dir: Path) -> Iterator[Web]:
    """A fresh web app (no users yet) over copies of empty databases, with an injected clock."""
    from .webkit import make_web  # flask and the app load only for the tests that use them

    w = make_web(tmp_path, empty_data_dir)
    yield w
    w.app.extensions["appliance"].store.close()


@pytest.fixture
def ready(web: Web) -> Web:
    """A web app after setup: users `viewer`, `operator`, `admin` (one per role)."""
    from .webkit import ROLES

    for role in ROLES:
        web.user(role, role)
    return web


@pytest.fixture
def mock_pins() -> Iterator[Any]:
    """gpiozero's mock pin factory as every Device's, for one test (`.pin(n)` is pin n)."""
    from gpiozero import Device
    from gpiozero.pins.mock import MockFactory

    old = Device.pin_factory
    Device.pin_factory = MockFactory()
    try:
        yield Device.pin_factory
    finally:
        Device.pin_factory.close()
        Device.pin_factory = old
