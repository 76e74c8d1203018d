"""/metrics in the Prometheus text format, built per scrape from the roles' live documents.

A fresh `CollectorRegistry` per scrape with one custom collector: nothing is
kept between scrapes, so a tag or conduit that disappears stops being reported.
Access: any API token (Bearer), a logged-in session, or a client address in the
configuration's `web.metrics_allow` networks.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Iterator
from typing import Any

from flask import Blueprint, Response, jsonify, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from appliance.agent.health import PRECEDENCE
from appliance.roles import ROLE_NAMES
from appliance.web.api import ROUTES, RouteDoc, error_body
from appliance.web.auth import principal
from appliance.web.context import WebContext, ctx

bp = Blueprint("metrics", __name__)

HEALTH_STATES = PRECEDENCE


def _num(v: Any) -> float | None:
    if isinstance(v, bool):
        return 1.0 if v else 0.0
    if isinstance(v, int | float) and math.isfinite(float(v)):
        return float(v)
    return None


class LiveCollector:
    """Turns the live documents (net, field, agent) into metric families."""

    def __init__(
        self,
        docs: dict[str, dict[str, Any] | None],
        health: dict[str, Any] | None,
        alive: dict[str, bool],
        cert_not_after: float | None,
    ) -> None:
        self.docs = docs
        self.health = health
        self.alive = alive
        self.cert_not_after = cert_not_after

    def collect(self) -> Iterator[Metric]:
        net = self.docs.get("net") or {}
        field = self.docs.get("field") or {}

        up = GaugeMetricFamily("appliance_role_up", "1 while the role reports", labels=["role"])
        for role, ok in sorted(self.alive.items()):
            up.add_metric([role], 1.0 if ok else 0.0)
        yield up

        if self.health:
            h = GaugeMetricFamily(
                "appliance_health_state",
                "1 for the unit's current health state",
                labels=["state"],
            )
            for state in HEALTH_STATES:
                h.add_metric([state], 1.0 if self.health.get("state") == state else 0.0)
            yield h

        applied = net.get("applied") or {}
        if applied.get("revision") is not None:
            rev = GaugeMetricFamily(
                "appliance_revision", "the applied revision number", labels=["state"]
            )
            rev.add_metric([str(applied.get("state") or "")], float(applied["revision"]))
            yield rev

        links = GaugeMetricFamily(
            "appliance_link_up", "1 when the NIC is present and up", labels=["link", "role"]
        )
        for lk in net.get("links") or []:
            ok = bool(lk.get("present")) and str(lk.get("oper", "")).upper() == "UP"
            links.add_metric([str(lk.get("name")), str(lk.get("role"))], 1.0 if ok else 0.0)
        yield links

        packets = CounterMetricFamily(
            "appliance_conduit_packets", "packets a conduit passed", labels=["conduit"]
        )
        octets = CounterMetricFamily(
            "appliance_conduit_bytes", "bytes a conduit passed", labels=["conduit"]
        )
        for name, c in sorted((net.get("conduits") or {}).items()):
            packets.add_metric([name], float(c.get("packets", 0) or 0))
            octets.add_metric([name], float(c.get("bytes", 0) or 0))
        yield packets
        yield octets

        dp = CounterMetricFamily(
            "appliance_dropped_packets", "packets dropped (no conduit)", labels=["direction"]
        )
        db = CounterMetricFamily(
            "appliance_dropped_bytes", "bytes dropped (no conduit)", labels=["direction"]
        )
        for name, d in sorted((net.get("drops") or {}).items()):
            label = name.removeprefix("drop_")
            dp.add_metric([label], float((d or {}).get("packets", 0) or 0))
            db.add_metric([label], float((d or {}).get("bytes", 0) or 0))
        yield dp
        yield db

        dev = GaugeMetricFamily(
            "appliance_device_up", "1 while the device answers polls", labels=["device", "protocol"]
        )
        errors = CounterMetricFamily("appliance_device_errors", "failed polls", labels=["device"])
        for name, d in sorted((field.get("devices") or {}).items()):
            dev.add_metric(
                [name, str(d.get("protocol", ""))], 1.0 if d.get("state") == "ok" else 0.0
            )
            errors.add_metric([name], float(d.get("error_count", 0) or 0))
        yield dev
        yield errors

        values = GaugeMetricFamily(
            "appliance_tag_value", "a numeric tag's live value", labels=["device", "tag"]
        )
        good = GaugeMetricFamily(
            "appliance_tag_quality_good", "1 while the value is good", labels=["device", "tag"]
        )
        for full, t in sorted((field.get("tags") or {}).items()):
            device, _, tag = full.partition(".")
            device = str(t.get("device") or device)
            good.add_metric([device, tag], 1.0 if t.get("quality") == "good" else 0.0)
            v = _num(t.get("value"))
            if v is not None:
                values.add_metric([device, tag], v)
        yield values
        yield good

        alarms = GaugeMetricFamily(
            "appliance_alarms_active", "active alarms by severity", labels=["severity"]
        )
        counts = (field.get("alarms") or {}).get("counts") or {}
        for sev in ("critical", "warning"):
            alarms.add_metric([sev], float(counts.get(sev, 0) or 0))
        yield alarms

        hist = field.get("history") or {}
        if hist:
            q = GaugeMetricFamily("appliance_history_queued", "samples waiting to be stored")
            q.add_metric([], float(hist.get("queued", 0) or 0))
            yield q
            w = CounterMetricFamily("appliance_history_written", "samples stored")
            w.add_metric([], float(hist.get("written", 0) or 0))
            yield w

        if self.cert_not_after is not None:
            cert = GaugeMetricFamily(
                "appliance_cert_not_after_seconds", "when the HTTPS certificate expires (epoch)"
            )
            cert.add_metric([], self.cert_not_after)
            yield cert


def allowed_address(addr: str | None, networks: list[str]) -> bool:
    if not addr or not networks:
        return False
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        return False
    for net in networks:
        try:
            if ip in ipaddress.ip_network(net, strict=False):
                return True
        except ValueError:
            continue
    return False


def scrape(c: WebContext) -> bytes:
    from appliance.web.views.system import cert_facts, health_now

    now = c.now()
    docs = {r: c.live.read(r) for r in ("net", "field", "agent")}
    _, not_after = cert_facts(c)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(
        LiveCollector(
            docs, health_now(c, now), {r: c.live.alive(r, now) for r in ROLE_NAMES}, not_after
        )  # type: ignore[arg-type]
    )
    return generate_latest(registry)


def metrics() -> Any:
    c = ctx()
    p = principal()
    if p is None and not allowed_address(request.remote_addr, c.config().web.metrics_allow):
        resp = jsonify(
            error_body(
                "a token (Authorization: Bearer) or an allowed address "
                "(web.metrics_allow) is needed"
            )
        )
        resp.status_code = 401
        return resp
    return Response(
        scrape(c),
        mimetype=CONTENT_TYPE_LATEST.split(";")[0],
        headers={"Content-Type": CONTENT_TYPE_LATEST},
    )


metrics.required_role = None  # type: ignore[attr-defined]
bp.add_url_rule("/metrics", "metrics", metrics, methods=["GET"])
ROUTES.append(
    RouteDoc(
        path="/metrics",
        method="GET",
        role=None,
        summary="Prometheus metrics (token of any role, a session, or web.metrics_allow)",
        description=__doc__.split("\n\n", 1)[1].strip(),
        body=None,
        body_types=(),
        query=None,
        response={"type": "string"},
        status=200,
        content="text/plain",
        errors=(401, 429),
        tag="metrics",
    )
)
