"""schemathesis against /api/openapi.json: every operation with generated input and an admin
token: no server error, and every answer has a documented status, content type and shape.

The app runs over the real stores of a fresh data directory with a committed
configuration; bounded to a few examples per operation (well under two minutes), the
same ones every run (derandomized); `make fuzz` runs random ones, 20 times as many.
Operations that would end the test's own access are left out: revoking tokens (the
generator soon guesses the admin token's id) and logging out.
"""

from __future__ import annotations

import shutil
import threading
from pathlib import Path
from typing import Any

import pytest
import schemathesis
import yaml
from argon2 import PasswordHasher
from hypothesis import HealthCheck, Phase, given, settings
from propkit import FUZZ, examples
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from appliance.errors import NotFound
from appliance.paths import Paths
from appliance.state import revisions as revs
from appliance.state.control import ControlServer, socket_path
from appliance.state.live import LiveState
from appliance.web import accounts
from appliance.web.app import create_app

EXCLUDED = {("DELETE", "/api/tokens/{token_id}"), ("DELETE", "/api/session")}
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
DEMO = Path(__file__).resolve().parents[2] / "examples" / "demo.yaml"


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = tmp_path_factory.mktemp("schemathesis")
    paths = Paths(root / "data", root / "run")
    accounts.set_hasher(PasswordHasher(time_cost=1, memory_cost=8, parallelism=1))
    app = create_app(paths, testing=True)
    with app.app_context():
        accounts.create_user("admin", "admin", "schemathesis-admin-pw", by="test", now=1.0)
        _, token = accounts.create_token("admin", role="admin", name="st", now=1.0)
        store = app.extensions["appliance"].store
        doc = yaml.safe_load(DEMO.read_text())
        doc.pop("devices", None), doc.pop("fleet", None), doc.pop("syslog", None)
        doc.pop("webhooks", None)
        revs.import_text(store, yaml.safe_dump(doc), author="test", now=1.0)
        revs.commit(store, author="test", now=2.0)
    app.config["TOKEN"] = token
    # the field, agent and net roles' control sockets, answering as those roles do
    servers = [
        ControlServer(
            socket_path(paths.run_dir, "field"), {"write": field_write, "ack_alarm": field_ack}
        ),
        ControlServer(socket_path(paths.run_dir, "agent"), {"identify": agent_identify}),
        ControlServer(socket_path(paths.run_dir, "net"), {"identify_port": net_identify_port}),
    ]
    for server in servers:
        server.start()
    stop = threading.Event()
    net = threading.Thread(target=publish_net, args=(LiveState(paths.run_dir), stop), daemon=True)
    net.start()
    yield app
    stop.set()
    net.join()
    for server in servers:
        server.stop()
    shutil.rmtree(root, ignore_errors=True)


def field_write(tag: str, value: Any, actor: str) -> dict[str, Any]:
    if tag != "plc1.setpoint":
        raise NotFound(f"no tag {tag!r}")
    return {"tag": tag, "value": value, "written_at": 1.0}


def field_ack(id: int, actor: str) -> dict[str, Any]:
    if id != 1:
        raise NotFound(f"no alarm {id}")
    return {"id": 1, "acked": True, "acked_by": actor}


def net_identify_port(port: str, seconds: int = 15, actor: str = "") -> dict[str, Any]:
    if port != "it0":
        raise NotFound(f"no port {port!r} (ports: it0)", field="port")
    return {"port": port, "until": 100.0 + seconds}


def agent_identify(seconds: int = 15, actor: str = "") -> dict[str, Any]:
    return {"until": 100.0 + seconds}


# the net role's live document (ports among them), as it writes it
NET_DOC: dict[str, Any] = {
    "role": "net",
    "applied": {"revision": 1, "sha256": None, "state": "confirmed", "confirm_deadline": None,
                "at": 2.0, "fail_closed": False},
    "last_error": None,
    "forwarding": True,
    "links": [],
    "ports": [{
        "name": "it0", "mac": "02:a0:00:00:01:01", "driver": "veth", "pci_path": None,
        "label": None, "kind": "veth", "role": "it", "interface": "it0", "admin_up": True,
        "carrier": True, "operstate": "UP", "speed": 10000, "duplex": "full", "index": 2,
        "counters": {"rx_bytes": 1, "rx_packets": 1, "rx_errors": 0, "rx_dropped": 0,
                     "tx_bytes": 1, "tx_packets": 1, "tx_errors": 0, "tx_dropped": 0},
    }],
    "conduits": {},
    "drops": {},
    "denied": [],
    "drift": {"count": 0, "last_at": None},
}  # fmt: skip


def publish_net(live: LiveState, stop: threading.Event) -> None:
    """Write the net role's document every second (alive), as the role does, until stop."""
    while True:
        live.write("net", NET_DOC)
        if stop.wait(1.0):
            return


def operations(app: Any) -> list[Any]:
    schema = schemathesis.openapi.from_wsgi("/api/openapi.json", app)
    return [result.ok() for result in schema.get_all_operations()]


def test_api_conforms(api: Any) -> None:
    auth = {"Authorization": f"Bearer {api.config['TOKEN']}"}
    ops = operations(api)
    assert len(ops) >= 40
    failures: list[str] = []
    tried = 0
    for op in ops:
        if (op.method.upper(), op.path) in EXCLUDED:
            continue

        @given(case=op.as_strategy())
        @settings(
            max_examples=examples(12),
            derandomize=not FUZZ,  # the same examples every `make test`; random in `make fuzz`
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
            phases=[Phase.explicit, Phase.generate],
        )
        def run(case: Any) -> None:
            case.call_and_validate(headers=auth, checks=CHECKS)

        tried += 1
        try:
            run()
        except (Exception, BaseExceptionGroup) as e:  # collect every failure, fail once
            failures.append(f"{op.method.upper()} {op.path}: {e}"[:2000])
    assert tried >= 40
    assert not failures, "\n\n".join(failures)
