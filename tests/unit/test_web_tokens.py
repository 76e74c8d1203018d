"""API tokens that cannot fill the config DB: at most MAX_LIVE_TOKENS live ones per user,
and the rows of tokens revoked or expired long ago are pruned (issue 18)."""

from __future__ import annotations

from appliance.state.db import Audit
from appliance.web import accounts

from .webkit import Web


def _make(web: Web, user: str, n: int, **kw: float) -> list[accounts.ApiToken]:
    with web.app.app_context():
        return [
            accounts.create_token(user, role=None, name=f"t{i}", now=web.clock(), **kw)[0]
            for i in range(n)
        ]


def test_a_user_has_at_most_max_live_tokens(ready: Web) -> None:
    """The outside review: a viewer's script made tokens in a loop, one row each, without
    end (the config DB is on the unit's flash, and GET /api/tokens lists them all)."""
    _make(ready, "viewer", accounts.MAX_LIVE_TOKENS)
    v = ready.login("viewer")
    r = v.post("/api/tokens", json={"name": "one more"}, headers=ready.h(v))
    assert r.status_code == 409
    assert r.json["field"] == "name" and "revoke one" in r.json["error"]
    assert not Audit.select().where(Audit.action == "token.create").exists()
    # another user is not held back by the viewer's tokens
    o = ready.login("operator")
    assert o.post("/api/tokens", json={"name": "mine"}, headers=ready.h(o)).status_code == 201
    # a revoked or expired token does not count
    first = v.get("/api/tokens").json[0]["id"]
    assert v.delete(f"/api/tokens/{first}", headers=ready.h(v)).status_code == 204
    r = v.post(
        "/api/tokens",
        json={"name": "short", "expires_at": ready.clock() + 60},
        headers=ready.h(v),
    )
    assert r.status_code == 201
    assert v.post("/api/tokens", json={"name": "x"}, headers=ready.h(v)).status_code == 409
    ready.clock.advance(61)
    assert v.post("/api/tokens", json={"name": "x"}, headers=ready.h(v)).status_code == 201


def test_409_is_in_the_openapi_document_of_token_creation(ready: Web) -> None:
    doc = ready.client().get("/api/openapi.json").json
    assert "409" in doc["paths"]["/api/tokens"]["post"]["responses"]


def test_tokens_revoked_or_expired_long_ago_are_pruned(ready: Web) -> None:
    with ready.app.app_context():
        old, old_secret = accounts.create_token(
            "operator", role=None, name="old", now=ready.clock()
        )
        child, child_secret = accounts.create_token(
            "operator", role=None, name="child", now=ready.clock(), parent=old.id
        )
        accounts.revoke_token(old.id, by="admin", now=ready.clock())
        [expiring] = _make(ready, "operator", 1, expires_at=ready.clock() + 60)
        [live] = _make(ready, "operator", 1)
    ready.clock.advance(accounts.TOKEN_KEEP_S - 1)
    _make(ready, "viewer", 1)  # prunes: nothing is old enough yet
    with ready.app.app_context():
        assert accounts.ApiToken.select().count() == 5
    ready.clock.advance(120)
    _make(ready, "viewer", 1)
    with ready.app.app_context():
        ids = {t.id for t in accounts.ApiToken.select()}
        assert old.id not in ids and child.id not in ids and expiring.id not in ids
        assert live.id in ids
        assert not accounts.TokenParent.select().where(accounts.TokenParent.token == child.id)
        for secret in (old_secret, child_secret):
            assert accounts.use_token(secret, source=None, now=ready.clock()) is None


def test_a_live_token_made_with_a_pruned_token_stays_dead(ready: Web) -> None:
    """Pruning the parent's row must not make its child a token of its own: the chain
    check finds the parent gone, and the child is refused."""
    with ready.app.app_context():
        parent, _ = accounts.create_token("operator", role=None, name="p", now=ready.clock())
        child, secret = accounts.create_token(
            "operator", role=None, name="c", now=ready.clock(), parent=parent.id
        )
        # revoked by hand, not through revoke_token: only the parent's row says so
        accounts.ApiToken.update(revoked_at=ready.clock()).where(
            accounts.ApiToken.id == parent.id
        ).execute()
    ready.clock.advance(accounts.TOKEN_KEEP_S + 1)
    _make(ready, "viewer", 1)
    with ready.app.app_context():
        assert accounts.ApiToken.get_or_none(accounts.ApiToken.id == parent.id) is None
        assert accounts.ApiToken.get_or_none(accounts.ApiToken.id == child.id) is not None
        assert accounts.use_token(secret, source=None, now=ready.clock()) is None
