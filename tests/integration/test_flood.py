"""A flood on one service does not stop forwarding or the other roles (IEC 62443-4-2
CR 7.1): with every role running in the lab, the IT host hammers the web API over 24
keep-alive HTTPS connections for a bounded time. Meanwhile SCADA's Modbus reads through
the conduit keep answering, the field role keeps polling at its rate, and the API's rate
limit answers the flood with 429 and one event; once the flood stops the API answers
again."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from typing import Any

from labkit import PLC1, PLC2, Appliance, config, modbus_read
from testkit import wait_for

from appliance.lab import demo

FLOOD_S = 8.0
THREADS = 24
POLL_S = 0.25

FLOOD = """
import http.client, json, ssl, sys, threading, time
host, seconds, n = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
counts, lock = {}, threading.Lock()
end = time.monotonic() + seconds

def run():
    conn = None
    while time.monotonic() < end:
        try:
            if conn is None:
                conn = http.client.HTTPSConnection(host, 443, context=ctx, timeout=5)
            conn.request("GET", "/api/status")
            r = conn.getresponse()
            r.read()
            code = str(r.status)
        except Exception as e:
            code, conn = type(e).__name__, None
        with lock:
            counts[code] = counts.get(code, 0) + 1

threads = [threading.Thread(target=run) for _ in range(n)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(json.dumps(counts), flush=True)
"""


def polls(app: Appliance, device: str) -> int:
    dev = ((app.live_state.read("field") or {}).get("devices") or {}).get(device) or {}
    return int(dev.get("polls") or 0)


def test_a_web_flood_leaves_forwarding_and_polling_alone(every_role: Appliance) -> None:
    app = every_role
    device = {
        "name": "plc2",
        "protocol": "modbus-tcp",
        "address": f"{PLC2}:502",
        "poll_interval": POLL_S,
        "tags": [{"name": "r0", "table": "holding", "address": 0, "publish": "every-poll"}],
    }
    app.commit(config(devices=[device], web={"listen_it": True}))
    wait_for(lambda: polls(app, "plc2") > 0, 20, "the field role to poll plc2")
    assert "registers" in modbus_read(app.spec, PLC1), "the conduit works before the flood"
    assert demo.probe_tcp(app.spec.ns_it, "10.10.0.1", 443, 2.0) == "open"

    argv = ["ip", "netns", "exec", app.spec.ns_it, sys.executable, "-c", FLOOD]
    argv += ["10.10.0.1", str(FLOOD_S), str(THREADS)]
    result: dict[str, Any] = {}

    def flood() -> None:
        cp = subprocess.run(argv, capture_output=True, text=True, timeout=FLOOD_S + 60)
        result.update(json.loads(cp.stdout.strip().splitlines()[-1]) if cp.stdout else {})
        result["stderr"] = cp.stderr[-2000:]

    before = polls(app, "plc2")
    started = time.monotonic()
    flooder = threading.Thread(target=flood)
    flooder.start()
    reads, slowest = [], 0.0
    time.sleep(1.0)  # the flood is under way
    while flooder.is_alive() and time.monotonic() - started < FLOOD_S - 1:
        t0 = time.monotonic()
        reads.append("registers" in modbus_read(app.spec, PLC1))
        slowest = max(slowest, time.monotonic() - t0)
    polled = polls(app, "plc2") - before
    elapsed = time.monotonic() - started
    flooder.join(FLOOD_S + 70)
    print(f"flood: {result}; conduit reads {sum(reads)}/{len(reads)} ok, slowest {slowest:.2f} s;"
          f" plc2 polled {polled} times in {elapsed:.1f} s")  # fmt: skip
    answered = sum(v for k, v in result.items() if k.isdigit())
    assert answered > 200, f"the flood did not reach the API: {result}"
    assert result.get("429", 0) > 0, f"the rate limit never answered: {result}"
    assert reads and all(reads), f"conduit reads failed during the flood: {reads}"
    assert slowest < 3.0, f"a conduit read took {slowest:.2f} s during the flood"
    # the field role kept (most of) its rate: 4 polls a second
    assert polled >= 0.6 * elapsed / POLL_S, f"plc2 polled {polled} times in {elapsed:.1f} s"
    kinds = [e["kind"] for e in app.events("security.rate_limited")]
    assert 1 <= len(kinds) <= 2, "one event a minute for the flooding address"
    time.sleep(2)  # the bucket refills: the API answers again
    assert demo.probe_tcp(app.spec.ns_it, "10.10.0.1", 443, 2.0) == "open"
