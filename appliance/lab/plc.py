"""Lab PLC simulator: Modbus TCP servers with live registers, plus one non-Modbus service.

Run as ``python -m appliance.lab.plc --bind 192.168.50.10 --bind 192.168.50.11``: one asyncio
process serves every bind address. PLC number NN is the position of its ``--bind`` (01 for
the first). ``--slow 192.168.50.19`` adds a PLC with the same map that waits ``--slow-delay``
seconds (0.8) before it answers each Modbus request (reads and writes alike; a client that
gives up sooner and asks again gets the late answer to its earlier request, as from a real
slow device); its name registers say "LAB-PLC-SLOW". Each PLC has a Modbus TCP server (port
502, ``--port``) and a plain TCP "other service" (port 8080, ``--other-port``) that writes
``other-service <addr>`` and a newline on connect, then reads until the client closes.
Values change once per second; t is seconds since start. Any unit id is answered (1 and
0 are the documented ones; pymodbus' device 0 is its catch-all). Writes outside the
writable areas answer exception 02 (illegal data address). Read device identification
(43/14) answers vendor "appliance lab", product code "LAB-PLC", revision "1.0" (the
basic objects) and product name "lab PLC simulator".

| table | address | type | value |
|---|---|---|---|
| holding | 0 | uint16 | counter: +1 per second, wraps at 65536 |
| holding | 1 | int16 | sine: round(1000 sin(2 pi t / 60)) |
| holding | 2, 3, 4 | uint16 | fixed 1234, 5678, 42 |
| holding | 10..11 | float32, 10 = high word | temperature: 20 + 5 sin(2 pi t / 60) |
| holding | 20..27 | ASCII, 2 chars/register | "LAB-PLC-NN", high byte first, NUL padded |
| holding | 30 | uint16 | step: 0 for 10 s, then 100 for 10 s, and so on |
| holding | 5..9, 12..19, 28, 29, 31 | uint16 | 0 |
| holding | 40..49 | uint16 | setpoints: writable (FC 6/16), read back as written, start at 0 |
| input | 0..31 | as holding | mirror of holding 0..31 |
| coil | 0..7 | bit | walking bit: coil (t mod 8) on, the others off; not writable |
| coil | 8..15 | bit | writable (FC 5/15), start off |
| discrete input | 0..7 | bit | fixed 1 0 1 0 0 1 0 1 (inputs 0, 2, 5, 7 on) |
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import signal
import struct
import sys
import time
from dataclasses import dataclass, field

from pymodbus import ModbusDeviceIdentification
from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

log = logging.getLogger("plc")

MIRRORED = 32  # holding 0..31, mirrored by input registers 0..31
SETPOINTS = range(40, 50)
DISCRETE_INPUTS = [True, False, True, False, False, True, False, True]
_COIL_WRITES = {5, 15}
_READS = {1, 2, 3, 4}
SLOW_DELAY = 0.8  # seconds the slow PLC waits before each answer
SLOW_NAME = "LAB-PLC-SLOW"
IDENTITY = {  # read device identification (43/14): the objects by id
    0: "appliance lab",  # vendor name
    1: "LAB-PLC",  # product code
    2: "1.0",  # major minor revision
    4: "lab PLC simulator",  # product name
}


def holding_registers(index: int, t: int, name: str | None = None) -> list[int]:
    """The 32 dynamic holding registers of PLC number `index` at `t` seconds after start
    (`name` replaces "LAB-PLC-NN" in registers 20..27, e.g. for the slow PLC)."""
    phase = 2 * math.pi * (t % 60) / 60
    regs = [0] * MIRRORED
    regs[0] = t & 0xFFFF
    regs[1] = round(1000 * math.sin(phase)) & 0xFFFF
    regs[2:5] = [1234, 5678, 42]
    regs[10:12] = struct.unpack(">HH", struct.pack(">f", 20 + 5 * math.sin(phase)))
    label = (name or f"LAB-PLC-{index:02d}").encode("ascii")[:16].ljust(16, b"\0")
    regs[20:28] = struct.unpack(">8H", label)
    regs[30] = 100 if (t // 10) % 2 else 0
    return regs


def walking_bit(t: int) -> int:
    """Coils 0..7 as the low byte of a register: bit (t mod 8) set."""
    return 1 << (t % 8)


@dataclass
class Plc:
    """One simulated PLC: its state and the pymodbus device that serves it."""

    index: int
    address: str
    delay: float = 0.0  # seconds to wait before answering each request (the slow PLC)
    name: str | None = None
    t: int = 0
    holding: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.tick(0)

    def tick(self, t: int) -> None:
        self.t = t
        self.holding = holding_registers(self.index, t, self.name)

    async def action(
        self,
        function_code: int,
        _start: int,
        address: int,
        _count: int,
        registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        """Refresh the block pymodbus is about to read or write from the current state."""
        if self.delay and (function_code in _READS or set_values is not None):
            await asyncio.sleep(self.delay)  # once per request: a write's read-back is free
        if function_code in {1, 5, 15}:
            if function_code in _COIL_WRITES and set_values is not None and address < 8:
                return ExcCodes.ILLEGAL_ADDRESS
            registers[0] = (registers[0] & 0xFF00) | walking_bit(self.t)
        elif function_code != 2:
            registers[0:MIRRORED] = self.holding
        return None

    def device(self, device_id: int = 0) -> SimDevice:
        """Separate blocks: coils, discrete inputs, holding and input registers.

        Device id 0 is pymodbus' catch-all (any unit id); a serial slave uses its own id."""
        regs = DataType.REGISTERS
        return SimDevice(
            id=device_id,
            simdata=(
                [SimData(0, values=[False] * 16, datatype=DataType.BITS)],
                [SimData(0, values=DISCRETE_INPUTS + [False] * 8, datatype=DataType.BITS)],
                [
                    SimData(0, values=[0] * MIRRORED, datatype=regs, readonly=True),
                    SimData(SETPOINTS.start, values=[0] * len(SETPOINTS), datatype=regs),
                ],
                [SimData(0, values=[0] * MIRRORED, datatype=regs, readonly=True)],
            ),
            action=self.action,
        )


async def other_service(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Say which address answered, then read until the client closes."""
    local = writer.get_extra_info("sockname")[0]
    peer = writer.get_extra_info("peername")
    log.info("other-service %s: connection from %s:%s", local, peer[0], peer[1])
    try:
        writer.write(f"other-service {local}\n".encode())
        await writer.drain()
        while await reader.read(4096):
            pass
    except OSError:
        pass
    finally:
        writer.close()


async def ticker(plcs: list[Plc], started: float) -> None:
    """Advance every PLC once per second, aligned to the start time."""
    while True:
        t = int(time.monotonic() - started)
        for plc in plcs:
            plc.tick(t)
        await asyncio.sleep(started + t + 1 - time.monotonic())


async def serve(
    binds: list[str],
    port: int,
    other_port: int,
    slow: list[str] | None = None,
    slow_delay: float = SLOW_DELAY,
) -> None:
    """Start every server, run until SIGTERM or SIGINT, then close them."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    plcs = [Plc(i + 1, addr) for i, addr in enumerate(binds)]
    plcs += [
        Plc(len(binds) + i + 1, addr, delay=slow_delay, name=SLOW_NAME)
        for i, addr in enumerate(slow or [])
    ]
    modbus: list[ModbusTcpServer] = []
    others: list[asyncio.Server] = []
    try:
        for plc in plcs:
            server = ModbusTcpServer(
                plc.device(),
                address=(plc.address, port),
                identity=ModbusDeviceIdentification(info=IDENTITY),
            )
            modbus.append(server)
            try:
                await server.serve_forever(background=True)
            except RuntimeError:
                raise OSError(f"cannot listen on {plc.address}:{port}")
            others.append(await asyncio.start_server(other_service, plc.address, other_port))
            log.info(
                "PLC %02d on %s: modbus :%d, other :%d%s",
                plc.index,
                plc.address,
                port,
                other_port,
                f", answers after {plc.delay:g} s" if plc.delay else "",
            )
        tick = asyncio.create_task(ticker(plcs, time.monotonic()))
        log.info("ready: %d PLC(s)", len(plcs))
        await stop.wait()
        tick.cancel()
    finally:
        for other in others:
            other.close()
        for server in modbus:
            await server.shutdown()
    log.info("stopped")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m appliance.lab.plc", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--bind", action="append", required=True, help="address of one PLC")
    parser.add_argument(
        "--slow", action="append", default=[], help="address of a PLC that answers slowly"
    )
    parser.add_argument(
        "--slow-delay", type=float, default=SLOW_DELAY, help="seconds per answer (0.8)"
    )
    parser.add_argument("--port", type=int, default=502, help="Modbus TCP port (502)")
    parser.add_argument("--other-port", type=int, default=8080, help="other service (8080)")
    args = parser.parse_args(argv)
    logging.basicConfig(
        stream=sys.stdout, level=logging.INFO, format="%(asctime)s %(name)s: %(message)s"
    )
    logging.getLogger("pymodbus").setLevel(logging.ERROR)
    try:
        asyncio.run(serve(args.bind, args.port, args.other_port, args.slow, args.slow_delay))
    except OSError as exc:
        log.error("%s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
