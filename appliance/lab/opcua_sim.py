"""Lab OPC UA server simulator: a typical field device with documented changing nodes.

Run as ``python -m appliance.lab.opcua_sim --listen 0.0.0.0 --port 4840``. It plays a PLC
with an embedded OPC UA server on the lab's OT side: anonymous access, security policy None
(as many field devices ship), endpoint ``opc.tcp://<listen>:<port>/``. The nodes live in
namespace ``urn:lab:plc``, which is namespace index 2 (index 1 is the server's own
application URI); ``nsu=urn:lab:plc;s=Counter`` names the same node without relying on the
index. Values change once per second; t is whole seconds since the simulator started.
SIGTERM or SIGINT stops it cleanly (exit status 0).

| node id | browse name | data type | value |
|---|---|---|---|
| ns=2;s=Temperature | Temperature | Float | 20 + 5 sin(2 pi t / 60), degC (EngineeringUnits) |
| ns=2;s=Counter | Counter | UInt32 | t: +1 per second |
| ns=2;s=Running | Running | Boolean | on for 10 s, off for 10 s, and so on (starts on) |
| ns=2;s=Batch | Batch | String | "BATCH-NNNN", NNNN = t // 60 + 1 (a new batch a minute) |
| ns=2;s=Setpoint | Setpoint | Double | writable by anyone (Double only), starts at 50.0 |

The nodes are components of the folder ``ns=2;s=PLC`` (browse path Objects/PLC).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import signal
import sys
import time
from datetime import UTC, datetime

from asyncua import Server, ua

log = logging.getLogger("opcua-sim")

NAMESPACE = "urn:lab:plc"
APPLICATION_URI = "urn:lab:plc:opcua-sim"
SETPOINT_START = 50.0


def values_at(t: int) -> dict[str, tuple[object, ua.VariantType]]:
    """The simulated (value, variant type) of each changing node `t` seconds after start."""
    return {
        "Temperature": (20 + 5 * math.sin(2 * math.pi * (t % 60) / 60), ua.VariantType.Float),
        "Counter": (t & 0xFFFFFFFF, ua.VariantType.UInt32),
        "Running": ((t // 10) % 2 == 0, ua.VariantType.Boolean),
        "Batch": (f"BATCH-{t // 60 + 1:04d}", ua.VariantType.String),
    }


async def build(listen: str, port: int) -> tuple[Server, int]:
    """An initialised (not yet started) server with the documented nodes; returns its ns index."""
    server = Server()
    await server.init()
    server.set_endpoint(f"opc.tcp://{listen}:{port}/")
    server.set_server_name("Lab PLC (OPC UA simulator)")
    await server.set_application_uri(APPLICATION_URI)
    server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
    server.set_identity_tokens([ua.AnonymousIdentityToken])
    idx = await server.register_namespace(NAMESPACE)
    folder = await server.nodes.objects.add_folder(
        ua.NodeId("PLC", idx), ua.QualifiedName("PLC", idx)
    )
    for name, (value, vtype) in values_at(0).items():
        var = await folder.add_variable(
            ua.NodeId(name, idx), ua.QualifiedName(name, idx), value, varianttype=vtype
        )
        if name == "Temperature":
            eu = ua.EUInformation(
                NamespaceUri="http://www.opcfoundation.org/UA/units/un/cefact",
                UnitId=4408652,  # "CEL"
                DisplayName=ua.LocalizedText("°C"),
                Description=ua.LocalizedText("degree Celsius"),
            )
            await var.add_property(
                ua.NodeId("Temperature.EngineeringUnits", idx),
                ua.QualifiedName("EngineeringUnits", 0),
                eu,
                varianttype=ua.VariantType.ExtensionObject,
                datatype=ua.NodeId(ua.ObjectIds.EUInformation),
            )
    setpoint = await folder.add_variable(
        ua.NodeId("Setpoint", idx),
        ua.QualifiedName("Setpoint", idx),
        SETPOINT_START,
        varianttype=ua.VariantType.Double,
    )
    await setpoint.set_writable(True)
    return server, idx


async def tick(server: Server, idx: int, started: float) -> None:
    """Write the changing values once per second, aligned to the start time."""
    while True:
        t = int(time.monotonic() - started)
        now = datetime.now(UTC)
        for name, (value, vtype) in values_at(t).items():
            dv = ua.DataValue(ua.Variant(value, vtype), SourceTimestamp=now, ServerTimestamp=now)
            await server.write_attribute_value(ua.NodeId(name, idx), dv)
        await asyncio.sleep(max(0.0, started + t + 1 - time.monotonic()))


async def serve(listen: str, port: int) -> None:
    """Run until SIGTERM or SIGINT, then stop the server."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server, idx = await build(listen, port)
    await server.start()
    ticker = asyncio.create_task(tick(server, idx, time.monotonic()))
    log.info("ready: opc.tcp://%s:%d/ namespace %s = ns=%d", listen, port, NAMESPACE, idx)
    try:
        await stop.wait()
    finally:
        ticker.cancel()
        try:
            await ticker
        except asyncio.CancelledError:
            pass
        await server.stop()
    log.info("stopped")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m appliance.lab.opcua_sim", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--listen", default="0.0.0.0", help="address to listen on (0.0.0.0)")
    parser.add_argument("--port", type=int, default=4840, help="TCP port (4840)")
    args = parser.parse_args(argv)
    if not 1 <= args.port <= 65535:
        parser.error(f"--port: must be 1-65535 (got {args.port})")
    logging.basicConfig(
        stream=sys.stdout, level=logging.INFO, format="%(asctime)s %(name)s: %(message)s"
    )
    logging.getLogger("asyncua").setLevel(logging.ERROR)
    try:
        asyncio.run(serve(args.listen, args.port))
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s", args.listen, args.port, exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
