"""The value stream: the field role's changed values to the opcua role, over a unix socket.

Both halves and the wire format live here, so the two roles cannot drift apart:

- `ValueStream` (the field role) serves ``<run_dir>/field-values.sock`` (`STREAM_FILE`);
- `ValueReader` (the opcua role) reads it for ever, reconnecting with back-off.

Wire format, one JSON object per line (compact, non-JSON values as strings): a reader
gets ``{"snapshot": {name: [value, quality, source_time]}, "t": t}`` when it connects
(and again after a reconfiguration), then ``{"values": {...}, "t": t}`` with the tags
that changed: the changes of one loop iteration (a device's poll cycle) are one line,
one write per reader. Readers send nothing.

Nothing in the writer waits for a reader: one whose unsent buffer passes
`STREAM_BUFFER_MAX` is cut off, and gets a fresh snapshot when it reconnects. With no
reader connected nothing is collected at all. The reader takes lines up to
`LINE_LIMIT` (a snapshot of every tag is one line); a line that does not parse is
logged and skipped, the stream goes on.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

STREAM_FILE = "field-values.sock"  # in the run directory
STREAM_BUFFER_MAX = 1 << 20  # a reader this far behind is cut off (it gets a snapshot again)
LINE_LIMIT = 1 << 24  # a snapshot of every tag is one line
BACKOFF_FIRST_S = 0.2
BACKOFF_CAP_S = 2.0

# each half logs under its own role's name: the two run in different processes
_wlog = logging.getLogger("field.values")
_rlog = logging.getLogger("opcua.values")

Entry = list[Any]  # [value, quality, source_time]
Table = dict[str, Entry]


def stream_path(run_dir: Path) -> Path:
    """Where the field role serves the stream."""
    return run_dir / STREAM_FILE


# -- the wire format ----------------------------------------------------------------------


def encode(kind: str, table: Table, t: float | None = None) -> bytes:
    """One line: ``{kind: table, "t": t}``; kind is "snapshot" or "values"."""
    doc = {kind: table, "t": time.time() if t is None else t}
    return json.dumps(doc, separators=(",", ":"), default=str).encode() + b"\n"


def decode(line: bytes) -> tuple[bool, Table]:
    """(is a snapshot, entries) of one line; ValueError or TypeError when it is not one."""
    doc = json.loads(line)
    if not isinstance(doc, dict):
        raise TypeError(f"expected an object, got {type(doc).__name__}")
    if "snapshot" in doc:
        return True, _entries(doc["snapshot"])
    return False, _entries(doc.get("values") or {})


def _entries(raw: Any) -> Table:
    """`{name: [value, quality, source_time]}` from a stream line, checked (TypeError)."""
    if not isinstance(raw, dict):
        raise TypeError(f"expected an object of tags, got {type(raw).__name__}")
    out: Table = {}
    for name, entry in raw.items():
        if not (isinstance(entry, list) and len(entry) == 3 and isinstance(entry[1], str)):
            raise TypeError(f"{name}: expected [value, quality, source_time]")
        out[str(name)] = entry
    return out


# -- the writer: the field role -----------------------------------------------------------


class ValueStream:
    """The serving half (see the module docstring); call it from its event loop only."""

    def __init__(self, path: Path, snapshot: Callable[[], Table]) -> None:
        self.path = path
        self._snapshot = snapshot
        self.readers: list[asyncio.StreamWriter] = []
        self._pending: Table = {}
        self._scheduled = False
        self._server: asyncio.base_events.Server | None = None
        self.lines = 0
        self.cut_off = 0

    async def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.unlink(missing_ok=True)
        self._server = await asyncio.start_unix_server(self._accept, path=str(self.path))
        os.chmod(self.path, 0o660)

    def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for w in self.readers:
            w.transport.abort()
        self.readers.clear()
        self.path.unlink(missing_ok=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(encode("snapshot", self._snapshot()))
        self.readers.append(writer)
        _wlog.info("value stream: a reader connected (%d)", len(self.readers))
        try:
            while await reader.read(4096):  # readers send nothing; this waits for EOF
                pass
        except (ConnectionError, OSError):
            pass
        finally:
            if writer in self.readers:
                self.readers.remove(writer)
            writer.transport.abort()

    def change(self, name: str, value: Any, quality: str, source_time: float | None) -> None:
        """Queue one changed value; the loop's next turn sends everything queued."""
        self._pending[name] = [value, quality, source_time]
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def resnapshot(self) -> None:
        """Send every reader the whole table again (the tags changed)."""
        self._pending.clear()
        if self.readers:
            self._send(encode("snapshot", self._snapshot()))

    def _flush(self) -> None:
        self._scheduled = False
        batch, self._pending = self._pending, {}
        if batch and self.readers:
            self._send(encode("values", batch))

    def _send(self, line: bytes) -> None:
        self.lines += 1
        for w in list(self.readers):
            if w.is_closing() or w.transport.get_write_buffer_size() > STREAM_BUFFER_MAX:
                if not w.is_closing():
                    _wlog.warning("value stream: a reader fell behind; it gets a snapshot anew")
                    self.cut_off += 1
                self.readers.remove(w)
                w.transport.abort()
                continue
            w.write(line)


# -- the reader: the opcua role -----------------------------------------------------------


class ValueReader:
    """The reading half: connects to `path`, hands each line's entries on, reconnects.

    `on_snapshot(table)` for a snapshot (every tag), `on_values(table)` for a batch of
    changes, `on_lost()` each time a connection ends (the field role stopped or
    restarting: its values are stale from then on). `run()` returns only when cancelled.
    """

    def __init__(
        self,
        path: Path,
        on_snapshot: Callable[[Table], None],
        on_values: Callable[[Table], None],
        on_lost: Callable[[], None],
    ) -> None:
        self.path = path
        self.on_snapshot = on_snapshot
        self.on_values = on_values
        self.on_lost = on_lost

    async def run(self) -> None:
        """Read the stream for ever; reconnect with back-off (BACKOFF_FIRST_S doubling to
        BACKOFF_CAP_S while nobody answers)."""
        backoff = BACKOFF_FIRST_S
        while True:
            try:
                reader, writer = await asyncio.open_unix_connection(
                    str(self.path), limit=LINE_LIMIT
                )
            except OSError:
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_CAP_S)
                continue
            backoff = BACKOFF_FIRST_S
            _rlog.info("value stream: connected to the field role")
            try:
                while line := await reader.readline():
                    self.handle(line)
            except (OSError, ValueError) as e:  # a reset, or a line past LINE_LIMIT
                _rlog.warning("value stream: %s", e)
            finally:
                writer.transport.abort()
                self.on_lost()
            await asyncio.sleep(BACKOFF_FIRST_S)

    def handle(self, line: bytes) -> None:
        """One line of the stream; one that is not a snapshot or a batch of changes is
        logged and skipped (the stream goes on)."""
        try:
            snapshot, table = decode(line)
        except (ValueError, TypeError) as e:
            _rlog.warning("value stream: a line that does not parse, ignored: %s", e)
            return
        if snapshot:
            self.on_snapshot(table)
        else:
            self.on_values(table)
