"""argon2 under a burst of logins: at most HASH_SLOTS hash at once per process, the rest
are told to come back (429 with Retry-After) quickly, and every attempt is counted by the
throttle before its hash (issue 18: 16 concurrent wrong logins took each gunicorn worker
to ~580 MB and a viewer's /api/status to 4 s)."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from argon2 import PasswordHasher

from appliance.web import accounts

from .webkit import PASSWORD, Web

BURST = 16
ADDR = "10.20.0.9"


class GatedHasher(PasswordHasher):
    """A cheap hasher whose `verify` holds its slot until the test opens the gate, and
    records how many ran at once and what the throttle had counted when each began."""

    def __init__(self) -> None:
        super().__init__(time_cost=1, memory_cost=8, parallelism=1)
        self.gate = threading.Event()
        self.lock = threading.Lock()
        self.active = 0
        self.most = 0
        self.started = 0
        self.counted_at_start: list[int] = []
        self.two_in = threading.Event()

    def verify(self, hash: str | bytes, password: str | bytes) -> bool:
        row = accounts.LoginThrottle.get_or_none(accounts.LoginThrottle.key == f"addr:{ADDR}")
        with self.lock:
            self.active += 1
            self.started += 1
            self.most = max(self.most, self.active)
            self.counted_at_start.append(row.failures if row else 0)
            if self.active >= accounts.HASH_SLOTS:
                self.two_in.set()
        try:
            assert self.gate.wait(10), "the test never opened the gate"
            return super().verify(hash, password)
        finally:
            with self.lock:
                self.active -= 1


@pytest.fixture
def gated(ready: Web) -> GatedHasher:
    h = GatedHasher()
    with ready.app.app_context():
        accounts._dummy_hash()  # made with the cheap hasher of the fixture
        dummy = accounts._DUMMY_HASH
    accounts.set_hasher(h)
    accounts._DUMMY_HASH = dummy
    return h


def _login(
    web: Web,
    password: str,
    out: list[Any],
    done: threading.Semaphore | None = None,
    user: str = "viewer",
) -> None:
    t0 = time.monotonic()
    r = web.client().post(
        "/api/session",
        json={"username": user, "password": password},
        environ_base={"REMOTE_ADDR": ADDR},
    )
    out.append((r.status_code, r.headers.get("Retry-After"), time.monotonic() - t0))
    if done is not None:
        done.release()


def test_a_burst_of_logins_hashes_at_most_hash_slots_at_once(
    ready: Web, gated: GatedHasher, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(accounts, "HASH_WAIT_S", 0.2)
    results: list[Any] = []
    done = threading.Semaphore(0)
    threads = [
        # a name each (a spray: one (account, source) pair would lock after 5, cheaply)
        threading.Thread(target=_login, args=(ready, "wrong-password-x", results, done, f"user{i}"))
        for i in range(BURST)
    ]
    for t in threads:
        t.start()
    assert gated.two_in.wait(10)
    # the slots stay taken: everyone else is turned away after HASH_WAIT_S, not queued
    for _ in range(BURST - accounts.HASH_SLOTS):
        assert done.acquire(timeout=10), results
    busy = list(results)
    gated.gate.set()
    for t in threads:
        t.join(10)
    assert gated.most == accounts.HASH_SLOTS
    assert gated.started == accounts.HASH_SLOTS
    assert len(busy) == BURST - accounts.HASH_SLOTS
    assert all(code == 429 and retry == "1" and took < 5 for code, retry, took in busy), busy
    assert sorted(code for code, _, _ in results) == [401] * accounts.HASH_SLOTS + [429] * (
        BURST - accounts.HASH_SLOTS
    )
    with ready.app.app_context():
        row = accounts.LoginThrottle.get_by_id(f"addr:{ADDR}")
    assert row.failures == BURST  # every attempt of the burst counted, the refused ones too


def test_the_attempt_is_counted_before_its_hash(ready: Web, gated: GatedHasher) -> None:
    gated.gate.set()
    results: list[Any] = []
    for n in range(3):
        _login(ready, "wrong-password-x", results)
        assert gated.counted_at_start[-1] == n + 1  # counted when the hash began
    # a right password takes its count back: the address is where it was
    _login(ready, PASSWORD, results)
    assert gated.counted_at_start[-1] == 4
    assert [code for code, _, _ in results] == [401, 401, 401, 200]
    with ready.app.app_context():
        assert accounts.LoginThrottle.get_by_id(f"addr:{ADDR}").failures == 3


def test_right_passwords_never_lock_their_address(ready: Web) -> None:
    """Counting before the hash must not turn many good logins (a shared NAT address)
    into failures: each right password takes its count back."""
    for _ in range(accounts.FREE_FAILURES["addr"] + 5):
        out: list[Any] = []
        _login(ready, PASSWORD, out)
        assert out[0][0] == 200
    with ready.app.app_context():
        assert (
            accounts.LoginThrottle.get_or_none(accounts.LoginThrottle.key == f"addr:{ADDR}") is None
        )


def test_busy_is_429_with_retry_after_for_setup_too(
    web: Web, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Hashing a new password (setup, users, password change) takes a slot as well."""
    from appliance.web import setup

    monkeypatch.setattr(accounts, "HASH_WAIT_S", 0.01)
    code = setup.setup_code(web.paths, create=True)
    taken = [accounts._hash_slots.acquire(timeout=1) for _ in range(accounts.HASH_SLOTS)]
    try:
        assert all(taken)
        r = web.client().post(
            "/api/setup", json={"code": code, "username": "boss", "password": "a-good-long-secret"}
        )
        assert r.status_code == 429 and r.headers["Retry-After"] == "1", r.json
        assert r.json["error"].startswith("busy")
    finally:
        for _ in taken:
            accounts._hash_slots.release()
    r = web.client().post(
        "/api/setup", json={"code": code, "username": "boss", "password": "a-good-long-secret"}
    )
    assert r.status_code == 201
