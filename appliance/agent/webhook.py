"""Alarm changes (events of kind ``alarm.*``) POSTed as JSON to each configured webhook.

Each webhook has a cursor in the history DB (the last event delivered), so an
endpoint that was down gets what it missed, in order, once it is back. A
failed POST is retried with `backoff_delay` (2 s doubling up to 5 min, with
jitter); the backlog is bounded (`BACKLOG_MAX` alarm events per webhook: older
ones are skipped, counted and recorded as a ``webhook.dropped`` event). An
answer the endpoint will never change its mind about (400, 404, 410, 413, 422)
skips that one event. Every POST carries ``Idempotency-Key``, the same on every
retry of the same event, so a receiver can drop duplicates.

A bearer token goes over https:// only (validation refuses it with http://, and
the sender checks again for a document that skipped validation); so does a password in
the URL (`https://user:password@host/...`, sent as Basic auth) and a secret query value
(`?key=...`), which validation refuses with http:// too. The webhook is
named in status, events and logs by `shown_url`, without the credentials its URL
may carry (user:password@, ?key=..., a token in the path).

Body (``appliance-alarm/1``)::

    {"schema": "appliance-alarm/1", "unit": {"id", "name", "site"},
     "event": {"id", "at", "kind", "severity", "source", "message", "data"}}
"""

from __future__ import annotations

import base64
import json
import logging
import random
import ssl
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from appliance.agent.heartbeat import FleetError, post_json
from appliance.agent.outbox import backoff_delay, get_cursor, has_cursor, set_cursor
from appliance.agent.tlsutil import client_context
from appliance.config.agent import Webhook, basic_auth
from appliance.config.redact import redact_url
from appliance.errors import ApplianceError
from appliance.state.db import Event

log = logging.getLogger(__name__)

SCHEMA = "appliance-alarm/1"
KIND_PREFIX = "alarm."
BACKLOG_MAX = 1000
BATCH = 100
SKIP_STATUSES = (400, 404, 410, 413, 422)
BACKOFF_BASE, BACKOFF_CAP = 2.0, 300.0


def cursor_name(hook: Webhook) -> str:
    return f"webhook:{hook.url}"


def shown_url(hook: Webhook) -> str:
    """The webhook's URL as status, events and logs show it: no credentials."""
    return redact_url(hook.url, strict=True)


def idempotency_key(unit_id: str, url: str, event_id: int) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{unit_id}/{url}/{event_id}"))


def payload(unit: Mapping[str, Any], event: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "unit": {k: unit.get(k) for k in ("id", "name", "site")},
        "event": {
            k: event.get(k) for k in ("id", "at", "kind", "severity", "source", "message", "data")
        },
    }


def _alarm_events(after: int, limit: int) -> list[Event]:
    q = (
        Event.select()
        .where((Event.id > after) & Event.kind.startswith(KIND_PREFIX))
        .order_by(Event.id)
        .limit(limit)
    )
    return list(q)


class WebhookSender:
    def __init__(
        self,
        unit: Mapping[str, Any],
        *,
        event: Callable[..., Any],
        rand: Callable[[], float] = random.random,
        post: Callable[..., tuple[int, bytes]] = post_json,
    ) -> None:
        self.unit = dict(unit)
        self._event = event
        self._rand = rand
        self._post = post
        self.hooks: list[Webhook] = []
        self.status: dict[str, dict[str, Any]] = {}
        self._contexts: dict[str, ssl.SSLContext] = {}

    def configure(self, hooks: list[Webhook], unit: Mapping[str, Any], now: float) -> None:
        self.unit = dict(unit)
        self.hooks = list(hooks)
        self._contexts.clear()
        urls = {h.url for h in hooks}
        for url in list(self.status):
            if url not in urls:
                del self.status[url]
        for h in hooks:
            if not has_cursor(cursor_name(h)):  # a new webhook: from now on
                newest = Event.select(Event.id).order_by(Event.id.desc()).first()
                set_cursor(cursor_name(h), newest.id if newest else 0, now)
            self.status.setdefault(
                h.url,
                {
                    "url": shown_url(h),
                    "last_ok": None,
                    "last_error": None,
                    "sent": 0,
                    "dropped": 0,
                    "failures": 0,
                    "next_attempt": None,
                },
            )

    def _context(self, hook: Webhook) -> ssl.SSLContext | None:
        if not hook.url.startswith("https://"):
            return None
        if hook.url not in self._contexts:
            self._contexts[hook.url] = client_context(hook.ca_cert, field="webhooks.ca_cert")
        return self._contexts[hook.url]

    def deliver(self, now: float, stopping: Callable[[], bool] = lambda: False) -> int:
        sent = 0
        for hook in self.hooks:
            if stopping():
                break
            st = self.status[hook.url]
            if st["next_attempt"] is not None and now < st["next_attempt"]:
                continue
            sent += self._deliver_one(hook, st, now, stopping)
        return sent

    def _deliver_one(
        self, hook: Webhook, st: dict[str, Any], now: float, stopping: Callable[[], bool]
    ) -> int:
        name = cursor_name(hook)
        cursor = get_cursor(name)
        backlog = _alarm_events(cursor, BACKLOG_MAX + 1)
        if len(backlog) > BACKLOG_MAX:
            total = (
                Event.select()
                .where((Event.id > cursor) & Event.kind.startswith(KIND_PREFIX))
                .count()
            )
            skip = total - BACKLOG_MAX
            last_skipped = _alarm_events(cursor, skip)[-1].id
            set_cursor(name, last_skipped, now)
            cursor = last_skipped
            st["dropped"] += skip
            self._event(
                "webhook.dropped",
                f"webhook {shown_url(hook)}: {skip} old alarm change(s) skipped (backlog bound)",
                severity="warning",
                data={"url": shown_url(hook), "dropped": skip},
            )
        sent = 0
        while not stopping():
            rows = _alarm_events(cursor, BATCH)
            if not rows:
                break
            for ev in rows:
                if stopping():
                    return sent
                try:
                    status = self._post_event(hook, ev)
                except (FleetError, ApplianceError) as e:
                    self._failed(st, str(e), now)
                    return sent
                if 200 <= status < 300:
                    sent += 1
                    st["sent"] += 1
                    st["last_ok"] = now
                    st["last_error"] = None
                    st["failures"] = 0
                    st["next_attempt"] = None
                elif status in SKIP_STATUSES:
                    st["dropped"] += 1
                    st["last_error"] = f"HTTP {status}: event {ev.id} refused, skipped"
                    log.warning(
                        "webhook %s refused event %d (HTTP %d)", shown_url(hook), ev.id, status
                    )
                else:
                    self._failed(st, f"HTTP {status}", now)
                    return sent
                cursor = ev.id
                set_cursor(name, cursor, now)
        return sent

    def _post_event(self, hook: Webhook, ev: Event) -> int:
        headers = {"Idempotency-Key": idempotency_key(str(self.unit.get("id")), hook.url, ev.id)}
        if hook.token:
            if not hook.url.startswith("https://"):  # validation refuses it; never in clear
                raise ApplianceError(
                    f"webhook {shown_url(hook)}: a bearer token needs https://; not sent",
                    field="webhooks.token",
                )
            headers["Authorization"] = f"Bearer {hook.token}"
        elif (basic := basic_auth(hook.url)) is not None:
            if not hook.url.startswith("https://"):  # validation refuses it too
                raise ApplianceError(
                    f"webhook {shown_url(hook)}: a password in the URL needs https://; not sent",
                    field="webhooks.url",
                )
            pair = f"{basic[0]}:{basic[1]}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(pair).decode("ascii")
        body = json.dumps(payload(self.unit, ev.as_dict()), sort_keys=True).encode()
        status, _ = self._post(hook.url, body, headers, self._context(hook), hook.timeout)
        return status

    def _failed(self, st: dict[str, Any], error: str, now: float) -> None:
        st["failures"] += 1
        st["last_error"] = error
        delay = backoff_delay(st["failures"], BACKOFF_BASE, BACKOFF_CAP, self._rand())
        st["next_attempt"] = now + delay
        log.info("webhook %s failed (%s); retry in %.0f s", st["url"], error, delay)

    def live(self) -> list[dict[str, Any]]:
        return [dict(v) for _, v in sorted(self.status.items())]
