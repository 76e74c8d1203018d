"""The web role's glue with fakes (no process, no socket): where it starts the HTTPS server,
when it restarts it (addresses changed, the server died: back-off), the redirect, a stored
document that no longer loads, and web.json."""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
import yaml

from appliance.paths import Paths
from appliance.roles import Change
from appliance.state import revisions as revs
from appliance.state.db import Revision, Store
from appliance.state.live import LiveState
from appliance.web import serve, tls
from appliance.web.role import BACKOFF_MAX_S, WebRole

from . import factory

T0 = 1_800_000_000.0
MGMT = ["10.99.0.2", "fd00:99::2"]
MGMT_BINDS = ["10.99.0.2:443", "[fd00:99::2]:443"]


cfg = factory.web_config


class FakeServer:
    """A server process that runs until the test says it died."""

    def __init__(self, argv: list[str], pid: int) -> None:
        self.argv = argv
        self.pid = pid
        self.returncode: int | None = None
        self.stopped = False

    def poll(self) -> int | None:
        return self.returncode

    def die(self, code: int) -> None:
        self.returncode = code

    def stop(self, grace: float) -> None:
        self.stopped = True
        if self.returncode is None:
            self.returncode = -15

    def binds(self) -> list[str]:
        return [self.argv[i + 1] for i, a in enumerate(self.argv) if a == "--bind"]


class FakeRedirect:
    def __init__(self) -> None:
        self.listening: list[str] = []
        self.starts: list[tuple[list[str], int, int]] = []
        self.errors: list[str] = []

    def start(self, addresses: Iterable[str], port: int, https_port: int) -> list[str]:
        addresses = list(addresses)
        self.starts.append((addresses, port, https_port))
        self.listening = [serve.bind_spec(a, port) for a in addresses]
        return list(self.errors)

    def stop(self) -> None:
        self.listening = []


class Unit:
    """The role built with fakes, and the fakes."""

    def __init__(self, store: Store, tmp_path: Path) -> None:
        self.store = store
        self.paths = Paths(store.data_dir, tmp_path / "run")
        self.live = LiveState(self.paths.run_dir)
        self.present = {"127.0.0.1", *MGMT}  # the addresses this "host" has
        self.servers: list[FakeServer] = []
        self.redirect = FakeRedirect()
        self.admin = False
        self.cert_kw: dict[str, Any] = {}
        self.role = WebRole(
            self.paths,
            store,
            self.live,
            spawn=self.spawn,
            redirect=self.redirect,
            can_bind=lambda a: a in self.present,
            ensure_cert=self.ensure_cert,
            admin_exists=lambda: self.admin,
        )
        self.role.ensure_cert()

    def spawn(self, argv: list[str]) -> FakeServer:
        server = FakeServer(argv, pid=1000 + len(self.servers))
        self.servers.append(server)
        return server

    def ensure_cert(self, paths: Paths, **kw: Any) -> tuple[Path, Path]:
        self.cert_kw = kw
        return Path("/fake/cert.pem"), Path("/fake/key.pem")

    @property
    def server(self) -> FakeServer:
        return self.servers[-1]

    def events(self, kind: str) -> list[str]:
        return [e.message for e in reversed(self.store.events(200, kind_prefix=kind))]


@pytest.fixture
def unit(store: Store, tmp_path: Path) -> Unit:
    return Unit(store, tmp_path)


# -- where it listens ---------------------------------------------------------------------


def test_without_a_revision_it_serves_on_loopback(unit: Unit) -> None:
    unit.role.apply(Change(None, None))
    unit.role.step(T0)
    assert len(unit.servers) == 1
    argv = unit.server.argv
    assert unit.server.binds() == ["127.0.0.1:443"]
    assert argv[argv.index("--certfile") + 1] == "/fake/cert.pem"
    assert argv[argv.index("--keyfile") + 1] == "/fake/key.pem"
    assert unit.role.binds == ["127.0.0.1:443"]
    assert "no management address" in unit.role.why
    assert unit.events("web.listen") == [
        "web UI on 127.0.0.1:443 (no management address known: only 127.0.0.1)"
    ]


def test_a_revision_with_mgmt_addresses_restarts_it_there_once(unit: Unit) -> None:
    unit.role.apply(Change(None, None))
    unit.role.step(T0)
    first = unit.server
    unit.role.apply(Change(1, cfg()))
    unit.role.step(T0 + 1)
    assert len(unit.servers) == 2 and first.stopped
    assert unit.server.binds() == MGMT_BINDS
    assert unit.role.listen == MGMT and "mgmt" in unit.role.why
    unit.role.apply(Change(1, cfg()))  # the same again: nothing to do
    unit.role.step(T0 + 2)
    unit.role.step(T0 + 3)
    assert len(unit.servers) == 2 and not unit.server.stopped
    assert unit.role.restarts == 2


def test_mgmt_addresses_not_present_yet_mean_loopback_with_the_reason(unit: Unit) -> None:
    unit.present = {"127.0.0.1"}
    unit.role.apply(Change(1, cfg()))
    unit.role.step(T0)
    assert unit.server.binds() == ["127.0.0.1:443"]
    assert "mgmt" in unit.role.why and "none present yet: only 127.0.0.1" in unit.role.why
    unit.present |= set(MGMT)  # the net role brought them up
    unit.role.step(T0 + 1)
    assert unit.server.binds() == MGMT_BINDS and len(unit.servers) == 2


def test_the_certificate_names_the_mgmt_and_it_addresses(unit: Unit) -> None:
    unit.role.apply(Change(1, cfg()))
    unit.role.ensure_cert()
    assert unit.cert_kw == {"unit_name": "test-unit", "addresses": ["10.10.0.1", *MGMT]}


# -- a dying server -----------------------------------------------------------------------


def test_a_dead_server_is_restarted_with_back_off_and_reported_once(unit: Unit) -> None:
    unit.role.apply(Change(1, cfg()))
    unit.role.step(T0)
    now = T0 + 5.0
    waits = []
    for _ in range(8):
        count = len(unit.servers)
        unit.server.die(1)
        unit.role.step(now)  # found dead: not restarted at once
        assert len(unit.servers) == count and unit.role.server is None
        assert unit.role.snapshot(now)["server_alive"] is False
        wait = 0.0
        while len(unit.servers) == count:
            wait += 0.5
            unit.role.step(now + wait)
            assert wait <= BACKOFF_MAX_S
        waits.append(wait)
        assert unit.server.binds() == MGMT_BINDS
        now += wait + 0.5
    assert waits == [1, 2, 4, 8, 16, 30, 30, 30]
    assert unit.role.restarts == 9
    assert unit.events("web.error") == ["the HTTPS server exited (1); restarting"]
    unit.server.die(3)  # another message: reported too
    unit.role.step(now)
    assert unit.events("web.error")[-1] == "the HTTPS server exited (3); restarting"
    assert len(unit.events("web.error")) == 2


def test_a_server_that_ran_a_while_restarts_after_one_second_again(unit: Unit) -> None:
    unit.role.apply(Change(1, cfg()))
    unit.role.step(T0)
    unit.server.die(1)  # two deaths in a row: the next wait would be 4 s
    unit.role.step(T0 + 1)
    unit.role.step(T0 + 2)
    unit.server.die(1)
    unit.role.step(T0 + 3)
    unit.role.step(T0 + 5)
    assert unit.role.restarts == 3 and unit.role.server is not None
    count = len(unit.servers)
    unit.role.step(T0 + 60)  # up for longer than the back-off remembers
    unit.server.die(1)
    unit.role.step(T0 + 61)
    unit.role.step(T0 + 61.9)
    assert len(unit.servers) == count
    unit.role.step(T0 + 62)
    assert len(unit.servers) == count + 1


# -- the redirect -------------------------------------------------------------------------


def test_the_redirect_listens_on_the_same_addresses_with_the_right_ports(unit: Unit) -> None:
    unit.role.apply(Change(1, cfg(http_port=8080, https_port=8443)))
    unit.role.step(T0)
    assert unit.redirect.starts == [(MGMT, 8080, 8443)]
    assert unit.server.binds() == ["10.99.0.2:8443", "[fd00:99::2]:8443"]
    unit.role.step(T0 + 1)  # nothing changed: not restarted
    assert len(unit.redirect.starts) == 1
    unit.role.apply(Change(2, cfg(http_port=None, https_port=8443)))
    unit.role.step(T0 + 2)
    assert len(unit.redirect.starts) == 1 and unit.redirect.listening == []
    assert unit.role.snapshot(T0 + 2)["redirect"] == []


def test_a_redirect_that_cannot_listen_is_an_error(unit: Unit) -> None:
    unit.redirect.errors = ["http 10.99.0.2:80: Address already in use"]
    unit.role.apply(Change(1, cfg()))
    unit.role.step(T0)
    assert unit.events("web.error") == [
        "cannot listen for the HTTP redirect: http 10.99.0.2:80: Address already in use"
    ]


# -- a stored document that no longer loads -----------------------------------------------


def test_an_invalid_stored_document_is_one_error_and_the_last_config_keeps_serving(
    unit: Unit,
) -> None:
    unit.role.apply(Change(1, cfg()))
    unit.role.step(T0)
    for t in (T0 + 1, T0 + 2):
        unit.role.apply(Change(2, None, error="interfaces.0.name: too long"))
        unit.role.step(t)
    assert unit.events("web.error") == ["cannot read revision 2: interfaces.0.name: too long"]
    assert unit.role.rev_id == 1 and unit.role.config == cfg()
    assert len(unit.servers) == 1 and unit.server.binds() == MGMT_BINDS
    doc = unit.role.snapshot(T0 + 2)
    assert doc["revision"] == 1
    assert doc["last_error"] == "cannot read revision 2: interfaces.0.name: too long"


def commit(store: Store, doc: dict[str, Any]) -> Revision:
    revs.import_text(store, yaml.safe_dump(doc), author="test", now=time.time())
    rev = revs.commit(store, author="test", now=time.time()).revision
    revs.confirm(store, author="net", now=time.time(), automatic=True)
    return rev


def test_the_desired_revision_is_read_from_the_store(unit: Unit) -> None:
    unit.role.poll_desired(force=True)
    assert unit.role.rev_id is None and unit.role.config is None
    doc = factory.base()
    doc["interfaces"].append({"name": "mgmt0", "role": "mgmt", "addresses": ["10.99.0.2/30"]})
    good = commit(unit.store, doc)
    unit.role.poll_desired()
    assert unit.role.rev_id == good.id and unit.role.config is not None
    doc["unit"]["name"] = "renamed"
    bad = commit(unit.store, doc)
    Revision.update(document="{not json").where(Revision.id == bad.id).execute()
    for _ in range(2):
        unit.role.poll_desired()
    assert unit.role.rev_id == good.id
    assert unit.role.config.unit.name == "test-unit"
    errors = unit.events("web.error")
    assert len(errors) == 1 and errors[0].startswith(f"cannot read revision {bad.id}: ")


# -- web.json -----------------------------------------------------------------------------


def test_snapshot_shows_what_runs(unit: Unit) -> None:
    unit.role.cert = tls.ensure_cert(unit.paths)  # a real one, in the test's data dir
    unit.role.apply(Change(7, cfg(https_port=8443, http_port=8080)))
    assert unit.role.dirty
    unit.role.step(T0)
    doc = unit.role.snapshot(T0)
    assert doc["role"] == "web"
    assert doc["listen"] == ["10.99.0.2:8443", "[fd00:99::2]:8443"]
    assert doc["urls"] == ["https://10.99.0.2:8443/", "https://[fd00:99::2]:8443/"]
    assert doc["binds"] == ["10.99.0.2:8443", "[fd00:99::2]:8443"]
    assert "mgmt" in doc["why"]
    assert doc["redirect"] == ["10.99.0.2:8080", "[fd00:99::2]:8080"]
    assert (doc["https_port"], doc["http_port"]) == (8443, 8080)
    assert doc["revision"] == 7
    assert doc["server_pid"] == unit.server.pid and doc["server_alive"] is True
    assert doc["restarts"] == 1
    assert doc["cert_fingerprint"] == tls.fingerprint(unit.paths) is not None
    assert doc["cert_not_after"] == tls.not_after(unit.paths) is not None
    assert doc["setup_required"] is True and doc["last_error"] is None
    unit.admin = True
    assert unit.role.snapshot(T0)["setup_required"] is False
    unit.role.publish(T0)
    assert not unit.role.dirty
    written = unit.live.read("web")
    assert written is not None and written["server_pid"] == unit.server.pid
    unit.server.die(1)
    unit.role.step(T0 + 1)
    assert unit.role.dirty
    doc = unit.role.snapshot(T0 + 1)
    assert doc["server_pid"] is None and doc["server_alive"] is False
    assert doc["last_error"] == "the HTTPS server exited (1); restarting"
