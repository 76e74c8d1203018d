"""Lab Modbus RTU simulator: slave devices with the PLC register map on one serial line.

Run as ``python -m appliance.lab.rtu --port .lab/tty-rtu-dev --unit 1 --unit 2``. In the lab
the line is one end of a ``socat`` pty pair; the appliance opens the other end
(``<lab root>/tty-rtu-app``) as if it were a USB-RS485 adapter. Line settings default to
19200 baud 8N1. (Modbus RTU's usual default is 8E1, but a Linux pty may refuse even
parity: tcsetattr fails with EINVAL when a port already set to even parity is opened
again, as seen on 6.x kernels; a pty ignores the line settings anyway.)

Each ``--unit`` is one slave on the bus, answering only its own unit id; a request for any
other id (or the broadcast id 0) gets no answer, as on a real RS-485 line. Every unit has
the register map of the lab PLCs (see ``appliance.lab.plc``), with its name registers
(holding 20..27) saying "LAB-RTU-NN", NN being the unit id:

| table | address | type | value |
|---|---|---|---|
| holding | 0 | uint16 | counter: +1 per second, wraps at 65536 |
| holding | 1 | int16 | sine: round(1000 sin(2 pi t / 60)) |
| holding | 2, 3, 4 | uint16 | fixed 1234, 5678, 42 |
| holding | 10..11 | float32, 10 = high word | temperature: 20 + 5 sin(2 pi t / 60) |
| holding | 20..27 | ASCII, 2 chars/register | "LAB-RTU-NN", high byte first, NUL padded |
| holding | 30 | uint16 | step: 0 for 10 s, then 100 for 10 s, and so on |
| holding | 40..49 | uint16 | setpoints: writable (FC 6/16), read back as written |
| input | 0..31 | as holding | mirror of holding 0..31 |
| coil | 0..7 | bit | walking bit: coil (t mod 8) on, the others off; not writable |
| coil | 8..15 | bit | writable (FC 5/15), start off |
| discrete input | 0..7 | bit | fixed 1 0 1 0 0 1 0 1 |
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
import time

from pymodbus.constants import ExcCodes
from pymodbus.exceptions import NoSuchIdException
from pymodbus.framer import FramerType
from pymodbus.server import ModbusSerialServer
from pymodbus.simulator import SimDevice
from pymodbus.simulator.simcore import SimCore

from appliance.lab.plc import Plc, ticker

log = logging.getLogger("rtu")

BAUD = 19200
PARITY = "N"
STOP_BITS = 1


class Bus(SimCore):
    """The slaves on one line: a request for a unit id nobody has is not answered.

    pymodbus' own store answers an unknown id from device 0 (or fails the request);
    on a serial bus the right behaviour is silence, which the server gives for
    NoSuchIdException when `ignore_missing_devices` is set.
    """

    def __init__(self, devices: list[SimDevice]) -> None:
        super().__init__(devices)

    def _check(self, device_id: int) -> None:
        if device_id not in self.devices:
            raise NoSuchIdException(f"no unit {device_id} on this line")

    async def async_getValues(
        self, device_id: int, func_code: int, address: int, count: int = 1
    ) -> list[int] | list[bool] | ExcCodes:
        self._check(device_id)
        return await super().async_getValues(device_id, func_code, address, count)

    async def async_setValues(
        self, device_id: int, func_code: int, address: int, values: list[int] | list[bool]
    ) -> ExcCodes | None:
        self._check(device_id)
        return await super().async_setValues(device_id, func_code, address, values)


def units_for(ids: list[int], port: str) -> list[Plc]:
    """One simulated slave per unit id, named LAB-RTU-NN."""
    return [Plc(uid, port, name=f"LAB-RTU-{uid:02d}") for uid in ids]


async def serve(port: str, ids: list[int], baud: int, parity: str, stop_bits: int) -> None:
    """Serve the units on the serial line until SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    units = units_for(ids, port)
    devices = [unit.device(device_id=unit.index) for unit in units]
    server = ModbusSerialServer(
        devices,
        framer=FramerType.RTU,
        port=port,
        baudrate=baud,
        parity=parity,
        stopbits=stop_bits,
        bytesize=8,
        ignore_missing_devices=True,
    )
    server.context = Bus(devices)
    try:
        try:
            await server.serve_forever(background=True)
        except RuntimeError:
            raise OSError(f"cannot open serial port {port}")
        tick = asyncio.create_task(ticker(units, time.monotonic()))
        settings = f"{baud} 8{parity}{stop_bits}"
        log.info("ready: units %s on %s (%s)", ", ".join(map(str, ids)), port, settings)
        await stop.wait()
        tick.cancel()
    finally:
        await server.shutdown()
    log.info("stopped")


def _unit(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"unit id {text!r}: not a whole number") from None
    if not 1 <= value <= 247:
        raise argparse.ArgumentTypeError(f"unit id {value}: between 1 and 247")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m appliance.lab.rtu", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--port", required=True, help="serial device (the pty's device end)")
    parser.add_argument(
        "--unit", type=_unit, action="append", help="a slave's unit id (default: 1)"
    )
    parser.add_argument("--baud", type=int, default=BAUD, help=f"baud rate ({BAUD})")
    parser.add_argument("--parity", choices=["N", "E", "O"], default=PARITY)
    parser.add_argument("--stop-bits", type=int, choices=[1, 2], default=STOP_BITS)
    args = parser.parse_args(argv)
    ids = sorted(set(args.unit or [1]))
    logging.basicConfig(
        stream=sys.stdout, level=logging.INFO, format="%(asctime)s %(name)s: %(message)s"
    )
    logging.getLogger("pymodbus").setLevel(logging.ERROR)
    try:
        asyncio.run(serve(args.port, ids, args.baud, args.parity, args.stop_bits))
    except OSError as exc:
        log.error("%s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
