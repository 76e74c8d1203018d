"""The web tests' kit: a fresh app with an injected clock (`make_web`), users of each role,
logged-in clients and tokens. The fixtures `web` and `ready` (tests/unit/conftest.py)
hand a test its `Web`; modules import the names they use (Web, PASSWORD, ROLES, error_of)."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from argon2 import PasswordHasher
from flask import Flask
from flask.testing import FlaskClient
from testkit import Clock

from appliance.paths import Paths
from appliance.web import accounts
from appliance.web.app import create_app

PASSWORD = "plant-floor-secret-42"
ROLES = ("viewer", "operator", "admin")


@dataclass
class Web:
    app: Flask
    paths: Paths
    clock: Clock
    csrf: dict[int, str] = field(default_factory=dict)

    def client(self) -> FlaskClient:
        return self.app.test_client()

    def user(self, name: str, role: str, password: str = PASSWORD) -> None:
        with self.app.app_context():
            accounts.create_user(name, role, password, by="test", now=self.clock())

    def login(self, name: str, password: str = PASSWORD) -> FlaskClient:
        c = self.client()
        r = c.post("/api/session", json={"username": name, "password": password})
        assert r.status_code == 200, r.json
        self.csrf[id(c)] = r.json["csrf"]
        return c

    def token(self, name: str, role: str | None = None) -> str:
        with self.app.app_context():
            _, secret = accounts.create_token(name, role=role, name="test", now=self.clock())
        return secret

    def h(self, c: FlaskClient) -> dict[str, str]:
        """The CSRF header of a logged-in client."""
        return {"X-CSRF-Token": self.csrf[id(c)]}


def make_web(tmp_path: Path, empty_data_dir: Path) -> Web:
    data = tmp_path / "data"
    shutil.copytree(empty_data_dir, data)
    paths = Paths(data, tmp_path / "run")
    clock = Clock()
    accounts.set_hasher(PasswordHasher(time_cost=1, memory_cost=8, parallelism=1))
    app = create_app(paths, testing=True, now=clock)
    store = app.extensions["appliance"].store
    for db in (store.config, store.history):
        db.execute_sql("PRAGMA synchronous=OFF")
    return Web(app, paths, clock)


def error_of(resp: Any) -> str:
    body = resp.get_json(silent=True) or {}
    return str(body.get("error", ""))
