"""Modbus TCP and RTU links over pymodbus' async clients: the one place pymodbus is imported.

A `ModbusLink` is one connection (a TCP socket to a device, or a serial line that
several RTU devices share); `read` and the writes take the unit id per call. Every
library, asyncio and OS exception becomes one domain error here and nowhere else:
`DeviceError(kind, message)` with `kind`

- ``timeout``: no answer within the timeout;
- ``refused``: the connection (or the serial port) could not be opened;
- ``disconnected``: the connection was lost, or is not open;
- ``exception``: the device answered with a Modbus exception (`exception_code`);
- ``garbled``: bytes came back but not the answer asked for (bad frame, wrong length,
  wrong transaction id, wrong function).

The link does no retries and no reconnects of its own (pymodbus' are turned off):
the poller decides when to retry and when to reconnect, with its own back-off.
Each request runs under pymodbus' own transaction lock; the poller adds the bus lock
and the inter-frame gap on top.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Sequence
from typing import Any, Literal

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException
from pymodbus.framer import FramerType

from appliance.errors import DeviceError

ErrorKind = Literal["timeout", "refused", "disconnected", "exception", "garbled"]

EXCEPTION_NAMES: dict[int, str] = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "server device failure",
    5: "acknowledge",
    6: "server device busy",
    8: "memory parity error",
    10: "gateway path unavailable",
    11: "gateway target device failed to respond",
}
ILLEGAL_DATA_ADDRESS = 2

_READ_FC = {"coil": 1, "discrete": 2, "holding": 3, "input": 4}


def exception_text(code: int) -> str:
    return f"exception {code} ({EXCEPTION_NAMES.get(code, 'unknown')})"


class ModbusLink:
    """One Modbus connection (TCP socket or serial line) behind the domain error.

    Build it with `tcp_link` or `rtu_link`. `connect()` opens it (DeviceError refused or
    timeout), `read(unit, table, start, count)` returns the registers (ints) or bits
    (bools, exactly `count`), `write_coil` / `write_registers` write, `close()` drops the
    connection. `requests` counts requests sent (for the benchmark and the live state).
    """

    def __init__(self, client: Any, name: str, timeout: float, tcp: bool = True) -> None:
        self.client = client
        self.tcp = tcp
        self.name = name
        self.timeout = timeout
        self.requests = 0
        self._rx = 0  # bytes received since the current request was sent
        self._connect_error: BaseException | None = None
        ctx = client.ctx
        create = ctx.call_create

        async def remember_error() -> Any:
            try:
                return await create()
            except BaseException as e:  # kept to tell "refused" from "timeout"
                self._connect_error = e
                raise

        ctx.call_create = remember_error
        # pymodbus drops a TCP connection after a few unanswered requests; the poller
        # decides that instead (and so reports a timeout as a timeout)
        ctx.max_until_disconnect = ctx.count_until_disconnect = 1 << 30
        ctx.trace_packet = self._trace_packet
        ctx.trace_connect = self._trace_connect

    # -- pymodbus hooks ---------------------------------------------------------------

    def _trace_packet(self, sending: bool, data: bytes) -> bytes:
        if sending:
            return data
        self._rx += len(data)
        if self.tcp and len(data) >= 4 and data[2:4] != b"\0\0":
            # Not an MBAP header (protocol id 0): pymodbus would wait for the timeout;
            # fail the request now, the poller starts a fresh connection.
            future = getattr(self.client.ctx, "response_future", None)
            if future is not None and not future.done():
                future.set_exception(ModbusIOException("not a Modbus TCP frame"))
            return b""
        return data

    def _trace_connect(self, connected: bool) -> None:
        if connected:
            return
        # A lost connection fails the pending request now instead of at its timeout.
        future = getattr(self.client.ctx, "response_future", None)
        if future is not None and not future.done():
            future.set_exception(ConnectionException("connection lost"))

    # -- connection -------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return bool(self.client.connected)

    async def connect(self) -> None:
        if self.connected:
            return
        self._connect_error = None
        started = time.monotonic()
        try:
            ok = await asyncio.wait_for(self.client.connect(), self.timeout + 1.0)
        except (TimeoutError, OSError, ModbusException) as e:
            self.close()
            raise DeviceError("timeout", f"{self.name}: connect: {e or 'timed out'}") from None
        if ok and self.connected:
            return
        err = self._connect_error
        self.close()
        # pymodbus cancels its own connect at its timeout: a CancelledError is no answer
        # (a host that is not there: ARP goes unanswered), not a refusal
        if isinstance(err, TimeoutError | asyncio.CancelledError) or (
            err is None and time.monotonic() - started >= self.timeout * 0.9
        ):
            raise DeviceError(
                "timeout", f"{self.name}: no answer to connect within {self.timeout:g} s"
            )
        if isinstance(err, OSError) and err.errno:
            # asyncio's text is "Connect call failed (addr)" whatever the cause: the
            # errno says refused (111), no route (113), unreachable (101) ...
            reason = os.strerror(err.errno)
        elif err is not None:
            reason = getattr(err, "strerror", None) or str(err) or type(err).__name__
        else:
            reason = "refused or unreachable"
        raise DeviceError("refused", f"{self.name}: cannot connect: {reason}")

    def close(self) -> None:
        try:
            self.client.close()
        except Exception:  # closing a half-open transport must never fail the caller
            pass

    # -- requests ---------------------------------------------------------------------

    def set_timeout(self, timeout: float) -> None:
        """The answer timeout of the next requests (devices on one line may differ)."""
        self.timeout = timeout
        self.client.ctx.comm_params.timeout_connect = timeout

    async def _execute(self, what: str, call: Callable[[], Any]) -> Any:
        if not self.connected:
            raise DeviceError("disconnected", f"{self.name}: not connected")
        self._rx = 0
        self.requests += 1
        try:
            rsp = await asyncio.wait_for(call(), self.timeout + 1.0)
        except asyncio.CancelledError:
            raise
        except TimeoutError:
            raise self._no_answer(what) from None
        except ConnectionException as e:
            raise DeviceError("disconnected", f"{self.name}: {what}: {e.string}") from None
        except ModbusIOException as e:
            if "No response" in e.string:
                raise self._no_answer(what) from None
            raise DeviceError("garbled", f"{self.name}: {what}: {e.string}") from None
        except ModbusException as e:
            raise DeviceError("garbled", f"{self.name}: {what}: {e.string}") from None
        except OSError as e:
            raise DeviceError("disconnected", f"{self.name}: {what}: {e.strerror or e}") from None
        except Exception as e:  # malformed frames make pymodbus' decoders raise anything
            raise DeviceError("garbled", f"{self.name}: {what}: {type(e).__name__}: {e}") from None
        if rsp is None:
            raise DeviceError("garbled", f"{self.name}: {what}: empty answer")
        if rsp.isError():
            code = int(getattr(rsp, "exception_code", 0) or 0)
            raise DeviceError(
                "exception", f"{self.name}: {what}: {exception_text(code)}", exception_code=code
            )
        return rsp

    def _no_answer(self, what: str) -> DeviceError:
        if self._rx:
            return DeviceError(
                "garbled",
                f"{self.name}: {what}: {self._rx} bytes came back but no valid answer "
                "(wrong transaction id, unit or frame)",
            )
        return DeviceError("timeout", f"{self.name}: {what}: no answer within {self.timeout:g} s")

    async def read(self, unit: int, table: str, start: int, count: int) -> Sequence[int | bool]:
        """`count` registers (ints 0-65535) or bits (bools) of `table` from `start`."""
        c = self.client
        fn = {
            "coil": c.read_coils,
            "discrete": c.read_discrete_inputs,
            "holding": c.read_holding_registers,
            "input": c.read_input_registers,
        }[table]
        what = f"read {table} {start}+{count}"
        rsp = await self._execute(what, lambda: fn(start, count=count, device_id=unit))
        if getattr(rsp, "function_code", None) != _READ_FC[table]:
            raise DeviceError(
                "garbled", f"{self.name}: {what}: answer is function {rsp.function_code}"
            )
        if table in ("coil", "discrete"):
            bits = rsp.bits
            # bits come in whole bytes: the answer may carry up to 7 padding bits
            if len(bits) < count or len(bits) >= count + 8:
                raise DeviceError("garbled", f"{self.name}: {what}: answer has {len(bits)} bits")
            return bits[:count]
        regs = rsp.registers
        if len(regs) != count:
            raise DeviceError("garbled", f"{self.name}: {what}: answer has {len(regs)} registers")
        return regs

    async def write_coil(self, unit: int, address: int, value: bool) -> None:
        await self._execute(
            f"write coil {address}",
            lambda: self.client.write_coil(address, bool(value), device_id=unit),
        )

    async def write_registers(self, unit: int, address: int, values: Sequence[int]) -> None:
        """FC 6 for one register, FC 16 for several."""
        if len(values) == 1:
            await self._execute(
                f"write holding {address}",
                lambda: self.client.write_register(address, int(values[0]), device_id=unit),
            )
            return
        await self._execute(
            f"write holding {address}+{len(values)}",
            lambda: self.client.write_registers(address, list(values), device_id=unit),
        )


def tcp_link(host: str, port: int, timeout: float, name: str | None = None) -> ModbusLink:
    """A link to a Modbus TCP device (not connected yet)."""
    client = AsyncModbusTcpClient(
        host, port=port, timeout=timeout, retries=0, reconnect_delay=0, name=name or host
    )
    return ModbusLink(client, name or f"{host}:{port}", timeout)


def rtu_link(
    port: str,
    *,
    baud: int,
    parity: str,
    stop_bits: int,
    data_bits: int,
    timeout: float,
) -> ModbusLink:
    """A link over one serial line (Modbus RTU framing), shared by its devices."""
    client = AsyncModbusSerialClient(
        port,
        framer=FramerType.RTU,
        baudrate=baud,
        parity=parity,
        stopbits=stop_bits,
        bytesize=data_bits,
        timeout=timeout,
        retries=0,
        reconnect_delay=0,
        name=port,
    )
    return ModbusLink(client, port, timeout, tcp=False)
