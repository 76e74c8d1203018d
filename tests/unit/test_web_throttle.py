"""Login throttling that cannot be turned against the account it protects, the audit of
failed logins, and the pruning of throttle rows and ended sessions (issue 18)."""

from __future__ import annotations

from typing import Any

import pytest

from appliance.state.db import Audit
from appliance.web import accounts

from . import factory
from .webkit import PASSWORD, Web

MGMT_PEER = "10.99.0.1"  # the installer's laptop on the mgmt link 10.99.0.0/30


def _login(web: Web, user: str, password: str, addr: str) -> Any:
    return web.client().post(
        "/api/session",
        json={"username": user, "password": password},
        environ_base={"REMOTE_ADDR": addr},
    )


def _fail(web: Web, user: str, addr: str) -> Any:
    return _login(web, user, "wrong-password-x", addr)


def commit_mgmt(web: Web) -> None:
    """A configuration with a mgmt interface 10.99.0.2/30 (pending is enough)."""
    doc = factory.base()
    doc["interfaces"].append({"name": "mgmt0", "role": "mgmt", "addresses": ["10.99.0.2/30"]})
    c = web.login("admin")
    h = web.h(c)
    assert c.put("/api/config/draft", json=doc, headers=h).status_code == 200
    assert c.post("/api/config/commit", json={}, headers=h).status_code == 200


# -- one source cannot lock anyone else out ------------------------------------------------


def test_a_day_of_guessing_from_one_address_locks_only_that_address(ready: Web) -> None:
    """The outside review: 33 wrong guesses a day from one address kept `admin` locked
    1412 of 1440 minutes. Now the guesser waits; everyone else logs in at any time."""
    attacker, colleague = "10.10.0.66", "10.10.0.7"
    guesses = 0
    for minute in range(0, 24 * 60, 2):  # a try every other minute, all day
        r = _fail(ready, "admin", attacker)
        assert r.status_code in (401, 429)
        if r.status_code == 401:
            guesses += 1
        if minute % 74 == 0:
            assert _login(ready, "admin", PASSWORD, colleague).status_code == 200, minute
        ready.clock.advance(120)
    assert 5 <= guesses <= 40  # back-off: about one guess an hour once it is locked
    assert _login(ready, "admin", PASSWORD, colleague).status_code == 200


def test_back_off_per_account_and_source(ready: Web) -> None:
    free = accounts.FREE_FAILURES["pair"]
    src = "10.10.0.50"
    codes = [_fail(ready, "admin", src).status_code for _ in range(free)]
    assert codes == [401] * free
    # the free-th failure locks (admin, src) for LOCK_BASE_S: even the right password waits
    r = _login(ready, "admin", PASSWORD, src)
    assert r.status_code == 429
    assert 1 <= int(r.headers["Retry-After"]) <= accounts.LOCK_BASE_S
    # ... but not another account from the same address, nor the account from elsewhere
    assert _login(ready, "viewer", PASSWORD, src).status_code == 200
    assert _login(ready, "admin", PASSWORD, "10.10.0.51").status_code == 200
    ready.clock.advance(accounts.LOCK_BASE_S + 1)
    assert _fail(ready, "admin", src).status_code == 401
    ready.clock.advance(accounts.LOCK_BASE_S + 1)
    assert _login(ready, "admin", PASSWORD, src).status_code == 429, "the second lock is 2x"
    ready.clock.advance(accounts.LOCK_BASE_S)
    assert _login(ready, "admin", PASSWORD, src).status_code == 200
    # a success clears the pair's count: the next failure is free again
    assert _fail(ready, "admin", src).status_code == 401
    assert _login(ready, "admin", PASSWORD, src).status_code == 200
    assert any(a.result == "throttled" for a in Audit.select().where(Audit.action == "login"))


def test_ipv6_sources_count_per_64(ready: Web) -> None:
    free = accounts.FREE_FAILURES["pair"]
    for i in range(free):
        assert _fail(ready, "admin", f"2001:db8:1:2::{i + 1:x}").status_code == 401
    assert _login(ready, "admin", PASSWORD, "2001:db8:1:2::ffff").status_code == 429
    assert _login(ready, "admin", PASSWORD, "2001:db8:1:3::1").status_code == 200


def test_many_sources_lock_the_account_but_never_for_the_mgmt_side(ready: Web) -> None:
    commit_mgmt(ready)
    many = accounts.FREE_FAILURES["user"]
    for i in range(many):
        assert _fail(ready, "admin", f"10.10.{i}.9").status_code == 401
    # a distributed guess: the account waits for IT-side sources it has not seen fail ...
    r = _login(ready, "admin", PASSWORD, "10.10.200.1")
    assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
    # ... but the mgmt link and the console (loopback) always get in
    assert _login(ready, "admin", PASSWORD, MGMT_PEER).status_code == 200
    assert _login(ready, "admin", PASSWORD, "127.0.0.1").status_code == 200
    # other accounts are not affected
    assert _login(ready, "viewer", PASSWORD, "10.10.200.1").status_code == 200


def test_mgmt_side_from_the_net_roles_report_without_a_configuration(ready: Web) -> None:
    from appliance.state.live import LiveState

    LiveState(ready.paths.run_dir).write(
        "net", {"links": [{"name": "mgmt0", "role": "mgmt", "addresses": ["10.99.0.2/30"]}]}
    )
    for i in range(accounts.FREE_FAILURES["user"]):
        _fail(ready, "admin", f"10.10.{i}.9")
    assert _login(ready, "admin", PASSWORD, "10.10.200.1").status_code == 429
    assert _login(ready, "admin", PASSWORD, MGMT_PEER).status_code == 200


def test_opcua_logons_without_a_source_do_not_lock_the_web(ready: Web) -> None:
    with ready.app.app_context():
        for _ in range(50):
            assert accounts.authenticate("admin", "wrong-one-here", now=ready.clock()) is None
        # they throttle themselves (no source: one bucket of their own) ...
        assert accounts.authenticate("admin", PASSWORD, now=ready.clock()) is None
    # ... and no real source of the web login
    assert _login(ready, "admin", PASSWORD, "10.10.0.7").status_code == 200
    assert _login(ready, "admin", PASSWORD, "127.0.0.1").status_code == 200


def test_opcua_logons_with_a_source_count_for_that_source(ready: Web) -> None:
    with ready.app.app_context():
        for _ in range(accounts.FREE_FAILURES["pair"]):
            accounts.authenticate("admin", "wrong-one-here", source="10.10.0.8", now=ready.clock())
        now = ready.clock()
        assert accounts.authenticate("admin", PASSWORD, source="10.10.0.8", now=now) is None
        assert accounts.authenticate("admin", PASSWORD, source="10.10.0.9", now=now) == "admin"
    assert _login(ready, "admin", PASSWORD, "10.10.0.8").status_code == 429
    assert _login(ready, "admin", PASSWORD, "10.10.0.7").status_code == 200


@pytest.mark.parametrize("kind", sorted(accounts.FREE_FAILURES))
def test_lock_schedule(kind: str) -> None:
    """Each counter's back-off: free tries, then LOCK_BASE_S doubled per failure, capped."""
    free = accounts.FREE_FAILURES[kind]
    assert accounts._lock_for(kind, free - 1) == 0
    assert accounts._lock_for(kind, free) == accounts.LOCK_BASE_S
    assert accounts._lock_for(kind, free + 1) == 2 * accounts.LOCK_BASE_S
    assert accounts._lock_for(kind, free + 50) == accounts.LOCK_MAX_S
    assert accounts._lock_for(kind, 10**6) == accounts.LOCK_MAX_S


# -- what a failed login leaves in the audit log and the throttle table --------------------


def test_a_password_typed_as_the_user_name_is_not_stored(ready: Web) -> None:
    typed = "Hunter2-Secret-Typed-Here"
    assert _login(ready, typed, PASSWORD, "10.10.0.5").status_code == 401
    for _ in range(accounts.FREE_FAILURES["pair"]):
        _fail(ready, typed, "10.10.0.5")
    assert _login(ready, typed, PASSWORD, "10.10.0.5").status_code == 429  # throttled too
    rows = list(Audit.select().where(Audit.action == "login"))
    assert {(a.actor, a.result) for a in rows} == {
        ("unknown user", "failed"),
        ("unknown user", "throttled"),
    }
    for a in rows:
        for text in (a.actor, a.target, a.detail, a.source):
            assert typed.lower() not in text.lower()
    with ready.app.app_context():
        for row in accounts.LoginThrottle.select():
            assert typed.lower() not in row.key.lower()
    # a known name is still named: that is what an operator reads the audit for
    _fail(ready, "operator", "10.10.0.5")
    assert ("operator", "failed") in {(a.actor, a.result) for a in Audit.select()}


# -- pruning ----------------------------------------------------------------------------------


def test_throttle_rows_are_pruned(ready: Web) -> None:
    for i in range(20):
        _fail(ready, f"someone{i}", f"10.10.1.{i}")
    with ready.app.app_context():
        assert accounts.LoginThrottle.select().count() >= 40
    ready.clock.advance(accounts.LOCK_MAX_S + accounts.FORGET_AFTER_S + 1)
    assert _login(ready, "viewer", PASSWORD, "10.10.0.1").status_code == 200
    with ready.app.app_context():
        assert accounts.LoginThrottle.select().count() == 0


def test_throttle_rows_of_wrong_tokens_are_pruned_without_any_login(ready: Web) -> None:
    """A unit used by scripts only: nobody logs in, yet the rows of wrong tokens (and wrong
    setup codes) from every address that ever tried one go once forgotten."""
    for i in range(20):
        r = ready.client().get(
            "/api/status",
            headers={"Authorization": "Bearer apl_not-a-token"},
            environ_base={"REMOTE_ADDR": f"10.10.2.{i}"},
        )
        assert r.status_code == 401
    with ready.app.app_context():
        assert accounts.LoginThrottle.select().count() == 20
    ready.clock.advance(accounts.LOCK_MAX_S + accounts.FORGET_AFTER_S + 1)
    r = ready.client().get(
        "/api/status",
        headers={"Authorization": "Bearer apl_not-a-token"},
        environ_base={"REMOTE_ADDR": "10.10.3.1"},
    )
    assert r.status_code == 401
    with ready.app.app_context():
        assert [t.key for t in accounts.LoginThrottle.select()] == ["addr:10.10.3.1"]


def test_a_count_not_yet_forgotten_is_not_pruned(ready: Web) -> None:
    src = "10.10.0.50"
    for _ in range(accounts.FREE_FAILURES["pair"] + 6):
        assert _fail(ready, "admin", src).status_code == 401
        ready.clock.advance(accounts.LOCK_MAX_S + 1)
    ready.clock.advance(accounts.FORGET_AFTER_S / 2)
    assert _login(ready, "viewer", PASSWORD, "10.10.0.1").status_code == 200  # prunes
    # the count survived: one more failure locks at once, for the longest time
    assert _fail(ready, "admin", src).status_code == 401
    r = _login(ready, "admin", PASSWORD, src)
    assert r.status_code == 429 and int(r.headers["Retry-After"]) > accounts.LOCK_MAX_S / 2


def test_ended_sessions_are_pruned(ready: Web) -> None:
    for name in ("viewer", "operator"):
        ready.login(name)
    with ready.app.app_context():
        assert accounts.WebSession.select().count() == 2
    ready.clock.advance(31 * 60)  # past the idle timeout, nobody came back
    ready.login("admin")
    with ready.app.app_context():
        assert [s.user for s in accounts.WebSession.select()] == ["admin"]


def test_a_password_sent_as_a_bearer_token_is_not_stored(ready: Web) -> None:
    typed = "Hunter2-Secret-Typed-Here"
    c = ready.client()
    r = c.get("/api/status", headers={"Authorization": f"Bearer {typed}"})
    assert r.status_code == 401
    r = c.get("/api/status", headers={"Authorization": "Bearer apl_abcdefghijklmnop"})
    assert r.status_code == 401
    rows = list(Audit.select().where(Audit.action == "token.invalid").order_by(Audit.id))
    assert [a.target for a in rows] == ["not an appliance token", "token abcdefgh"]
    for a in rows:
        assert "hunter2" not in f"{a.actor} {a.target} {a.detail}".lower()


# -- the figures are the configuration's (web.lockout, IEC 62443-4-2 CR 1.11) ------------


def test_the_lockout_figures_come_from_the_running_configuration(ready: Web) -> None:
    doc = factory.base()
    doc["web"] = {"lockout": {"free_failures": 2, "lock_seconds": 10, "lock_max_seconds": 15}}
    c = ready.login("admin")
    h = ready.h(c)
    assert c.put("/api/config/draft", json=doc, headers=h).status_code == 200
    assert c.post("/api/config/commit", json={}, headers=h).status_code == 200
    src = "10.10.0.52"
    assert [_fail(ready, "admin", src).status_code for _ in range(2)] == [401, 401]
    r = _login(ready, "admin", PASSWORD, src)  # locked after 2, not after 5
    assert r.status_code == 429
    assert 1 <= int(r.headers["Retry-After"]) <= 10
    ready.clock.advance(11)
    assert _fail(ready, "admin", src).status_code == 401  # locks for 2 x 10, capped at 15
    r = _login(ready, "admin", PASSWORD, src)
    assert r.status_code == 429 and 10 < int(r.headers["Retry-After"]) <= 15
    ready.clock.advance(16)
    assert _login(ready, "admin", PASSWORD, src).status_code == 200
    assert accounts.policy().free["pair"] == 2


def test_without_a_revision_the_default_figures_hold(ready: Web) -> None:
    assert accounts.policy() == accounts.DEFAULT_POLICY
    assert "lockout" not in factory.base().get("web", {})


def test_a_longest_lock_shorter_than_the_first_is_refused_at_the_section() -> None:
    from appliance.config.load import validate_data
    from appliance.errors import ConfigInvalid

    doc = factory.base()
    doc["web"] = {"lockout": {"lock_seconds": 600, "lock_max_seconds": 60}}
    with pytest.raises(ConfigInvalid) as e:
        validate_data(doc)
    assert [(p, m) for p, m, _ in e.value.errors] == [
        ("web.lockout", "lock_max_seconds must be at least lock_seconds")
    ]
