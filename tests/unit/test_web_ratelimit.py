"""The API's rate limit per source and per token (IEC 62443-4-2 CR 7.1, issue 16)."""

from __future__ import annotations

from typing import Any

import pytest

from appliance.config.model import Config
from appliance.errors import ConfigInvalid
from appliance.state.db import Event
from appliance.tokenbucket import Limiter

from . import factory
from .webkit import Web

IT_HOST, OTHER = "10.10.0.66", "10.10.0.7"


def test_a_bucket_allows_the_burst_then_the_rate() -> None:
    lim = Limiter(rate=2.0, burst=3)
    assert [lim.check(("a",), 100.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert lim.check(("a",), 100.0) == pytest.approx(0.5)  # one more in half a second
    assert lim.check(("b",), 100.0) == 0.0  # another key has its own bucket
    assert lim.check(("a",), 100.5) == 0.0
    assert lim.check(("a",), 100.5) > 0
    assert lim.check(("a",), 200.0) == 0.0  # refilled, never above the burst:
    assert [lim.check(("a",), 200.0) for _ in range(3)][-1] > 0


def test_a_refused_request_takes_nothing_and_a_clock_going_back_refills_nothing() -> None:
    lim = Limiter(rate=1.0, burst=1)
    assert lim.check(("a",), 10.0) == 0.0
    for _ in range(50):  # hammering while refused does not push the wait further out
        assert lim.check(("a",), 10.5) == pytest.approx(0.5)
    assert lim.check(("a",), 11.0) == 0.0
    assert lim.check(("a",), 5.0) > 0  # the clock went back: no free tokens


def test_many_keys_forget_the_idle_ones_first() -> None:
    lim = Limiter(rate=1.0, burst=1, keys_max=10)
    for n in range(10):
        lim.check((f"k{n}",), float(n))
    lim.check(("new",), 20.0)
    assert len(lim) <= 10
    assert lim.check(("k9",), 20.0) == 0.0  # still known, and refilled


def _commit(web: Web, rate: dict[str, Any]) -> None:
    doc = factory.base()
    doc.setdefault("web", {})["rate_limit"] = rate
    c = web.login("admin")
    h = web.h(c)
    assert c.put("/api/config/draft", json=doc, headers=h).status_code == 200
    assert c.post("/api/config/commit", json={}, headers=h).status_code == 200


def _get(web: Web, addr: str, token: str | None = None) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return web.client().get("/api/status", headers=headers, environ_base={"REMOTE_ADDR": addr})


def test_one_source_over_its_rate_gets_429_and_others_go_on(ready: Web) -> None:
    _commit(ready, {"per_source": 1, "burst": 5})
    ready.clock.advance(10)  # the figures are read again
    codes = [_get(ready, IT_HOST).status_code for _ in range(8)]
    assert codes[:5] == [401] * 5 and codes[5:] == [429] * 3, codes
    r = _get(ready, IT_HOST)
    assert r.status_code == 429
    assert r.headers["Retry-After"] == "1"
    assert r.get_json()["error"].startswith("too many requests")
    assert _get(ready, OTHER).status_code == 401  # another address is not held
    assert _get(ready, "127.0.0.1").status_code == 401  # nor the unit's own processes
    ready.clock.advance(1)
    assert _get(ready, IT_HOST).status_code == 401
    events = list(Event.select().where(Event.kind == "security.rate_limited"))
    assert len(events) == 1, "one event a minute per source, not one per refusal"
    assert IT_HOST in events[0].message


def test_one_token_over_its_rate_is_held_while_another_goes_on(ready: Web) -> None:
    _commit(ready, {"per_bearer": 1, "per_source": 1000, "burst": 3})
    ready.clock.advance(10)

    def get(token: str) -> int:
        ready.clock.advance(0.01)  # the address's bucket refills, a token's hardly
        return int(_get(ready, IT_HOST, token).status_code)

    a = [get("tok-a") for _ in range(5)]
    assert a == [401, 401, 401, 429, 429], a
    assert get("tok-b") == 401  # same address, other token


def test_the_defaults_let_a_ui_and_a_poller_through(ready: Web) -> None:
    assert Config().web.rate_limit.per_source >= 20 and Config().web.rate_limit.burst >= 100
    assert "rate_limit" not in Config().canonical()["web"]  # old documents keep their hash
    codes = {_get(ready, IT_HOST).status_code for _ in range(100)}
    assert codes == {401}


@pytest.mark.parametrize(
    ("rate", "path"),
    [({"per_source": 0}, "web.rate_limit.per_source"), ({"burst": 0}, "web.rate_limit.burst")],
)
def test_bad_figures_are_refused_at_their_field(rate: dict[str, Any], path: str) -> None:
    doc = factory.base()
    doc["web"] = {"rate_limit": rate}
    with pytest.raises(ConfigInvalid) as e:
        from appliance.config.load import validate_data

        validate_data(doc)
    assert path in [p for p, _m, _l in e.value.errors]
