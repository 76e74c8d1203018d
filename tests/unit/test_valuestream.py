"""The value stream between the field and opcua roles, over a real unix socket in tmp.

The writer (`ValueStream`) and the reader (`ValueReader`) are the ones the roles run;
no namespace and no role process are needed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from testkit import until

from appliance import valuestream
from appliance.valuestream import STREAM_BUFFER_MAX, ValueReader, ValueStream


class Sink:
    """What a reader handed on, in order."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, Any]] = []
        self.table: dict[str, list[Any]] = {}

    def snapshot(self, table: dict[str, list[Any]]) -> None:
        self.seen.append(("snapshot", table))
        self.table = dict(table)

    def values(self, table: dict[str, list[Any]]) -> None:
        self.seen.append(("values", table))
        self.table.update(table)

    def lost(self) -> None:
        self.seen.append(("lost", None))

    def kinds(self) -> list[str]:
        return [k for k, _ in self.seen]


def reader_for(path: Path, sink: Sink) -> ValueReader:
    return ValueReader(path, sink.snapshot, sink.values, sink.lost)


@contextlib.asynccontextmanager
async def serving_and_reading(
    path: Path, snapshot: Callable[[], dict[str, list[Any]]]
) -> AsyncIterator[tuple[ValueStream, Sink]]:
    """A started writer and a reader running against it; both ended on the way out
    (the reader only by cancelling: it never returns by itself)."""
    stream = ValueStream(path, snapshot)
    await stream.start()
    sink = Sink()
    task = asyncio.create_task(reader_for(path, sink).run())
    try:
        yield stream, sink
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        stream.stop()


# -- the wire format ------------------------------------------------------------------------


def test_lines_are_compact_json_and_decode_back() -> None:
    table = {"a.x": [1, "good", 10.0], "a.y": [None, "bad", None]}
    line = valuestream.encode("snapshot", table, t=5.0)
    assert line == b'{"snapshot":{"a.x":[1,"good",10.0],"a.y":[null,"bad",null]},"t":5.0}\n'
    assert valuestream.decode(line) == (True, table)
    changes = valuestream.encode("values", {"a.x": [2, "uncertain", 11.0]}, t=6.0)
    assert json.loads(changes) == {"values": {"a.x": [2, "uncertain", 11.0]}, "t": 6.0}
    assert valuestream.decode(changes) == (False, {"a.x": [2, "uncertain", 11.0]})
    odd = valuestream.encode("values", {"a.z": [Path("/x"), "good", None]}, t=1.0)
    assert valuestream.decode(odd) == (False, {"a.z": ["/x", "good", None]})  # default=str


@pytest.mark.parametrize(
    "line",
    [b"not json\n", b'{"values": {"p.a": 3}}\n', b"[1, 2]\n", b'{"snapshot": 5}\n',
     b'{"values": {"p.a": [1, 2, 3]}}\n', b"\xff\n"],
)  # fmt: skip
def test_a_line_that_is_not_one_is_an_error_to_decode_and_skipped_by_the_reader(
    line: bytes, tmp_path: Path
) -> None:
    with pytest.raises((ValueError, TypeError)):
        valuestream.decode(line)
    sink = Sink()
    reader_for(tmp_path / "s.sock", sink).handle(line)  # logged, never raises
    assert sink.seen == []


def test_the_socket_is_in_the_run_directory() -> None:
    assert valuestream.stream_path(Path("/run/appliance")) == Path(
        "/run/appliance/field-values.sock"
    )


# -- writer to reader -----------------------------------------------------------------------


def test_writer_to_reader_snapshot_changes_loss_and_a_new_snapshot(tmp_path: Path) -> None:
    table = {"a.x": [1, "good", 10.0], "a.y": [None, "bad", None]}
    path = tmp_path / "run" / valuestream.STREAM_FILE

    def snapshot() -> dict[str, list[Any]]:
        return {k: list(v) for k, v in table.items()}

    async def body() -> None:
        async with serving_and_reading(path, snapshot) as (stream, sink):
            assert path.is_socket() and oct(path.stat().st_mode & 0o777) == "0o660"
            await until(lambda: sink.kinds() == ["snapshot"], 5, "the first snapshot")
            assert sink.table == table
            await until(lambda: len(stream.readers) == 1, 5, "the reader registered")
            stream.change("a.x", 2, "good", 11.0)
            stream.change("a.y", 3.5, "uncertain", 12.0)
            await until(lambda: len(sink.seen) == 2, 5, "the changes")
            assert sink.seen[1] == (
                "values",
                {"a.x": [2, "good", 11.0], "a.y": [3.5, "uncertain", 12.0]},
            )  # one loop turn, one line
            table["a.z"] = [True, "good", 13.0]
            stream.resnapshot()  # the tags changed: the whole table again
            await until(lambda: len(sink.seen) == 3, 5, "the new snapshot")
            assert sink.seen[2] == ("snapshot", table)
            stream.stop()  # the field role stops: the reader is told
            await until(lambda: sink.kinds()[-1:] == ["lost"], 5, "the loss")
            await asyncio.sleep(0.3)  # the reader retries meanwhile; nobody answers
            assert sink.kinds().count("lost") == 1
            await stream.start()  # back: a snapshot again, without being asked
            await until(lambda: sink.kinds()[-1:] == ["snapshot"], 5, "a snapshot after")
            assert sink.table == table

    asyncio.run(asyncio.wait_for(body(), 30))


def test_a_snapshot_past_the_line_limit_ends_the_connection_not_the_reader(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(valuestream, "LINE_LIMIT", 1024)
    big = {f"d.t{i}": [i, "good", float(i)] for i in range(200)}
    small = {"d.t0": [0, "good", 0.0]}
    tables = [big, small]

    async def body() -> None:
        async with serving_and_reading(tmp_path / "s.sock", lambda: tables[0]) as (_, sink):
            await until(lambda: "lost" in sink.kinds(), 5, "the connection dropped")
            assert "snapshot" not in sink.kinds()
            tables.pop(0)
            await until(lambda: "snapshot" in sink.kinds(), 5, "a snapshot that fits")
            assert sink.table == small

    asyncio.run(asyncio.wait_for(body(), 30))


def test_value_stream_snapshot_batches_and_a_slow_reader(tmp_path: Path) -> None:
    table = {"a.x": [1, "good", 10.0], "a.y": [None, "bad", None]}

    async def body() -> None:
        stream = ValueStream(
            tmp_path / "field-values.sock", lambda: {k: list(v) for k, v in table.items()}
        )
        await stream.start()
        assert stream.readers == []
        stream.change("a.x", 0, "good", 1.0)  # nobody listening: nothing kept
        await asyncio.sleep(0)
        assert stream.lines == 0
        reader, writer = await asyncio.open_unix_connection(str(stream.path), limit=1 << 24)
        snap = json.loads(await asyncio.wait_for(reader.readline(), 5))
        assert snap["snapshot"] == table
        await until(lambda: asyncio.sleep(0, len(stream.readers) == 1), 5, "reader registered")
        # the changes of one loop turn are one line
        stream.change("a.x", 2, "good", 11.0)
        stream.change("a.y", 3.5, "uncertain", 11.0)
        stream.change("a.x", 4, "good", 12.0)
        line = json.loads(await asyncio.wait_for(reader.readline(), 5))
        assert line["values"] == {"a.x": [4, "good", 12.0], "a.y": [3.5, "uncertain", 11.0]}
        assert stream.lines == 1
        writer.close()
        await until(lambda: asyncio.sleep(0, not stream.readers), 5, "the reader gone")
        # a reader that stops reading is cut off once its buffer is full; change() never waits
        slow = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        slow.connect(str(stream.path))  # and never reads
        await until(lambda: asyncio.sleep(0, len(stream.readers) == 1), 5, "slow reader in")
        big = "x" * 4096
        t0 = time.monotonic()
        for i in range(4 * STREAM_BUFFER_MAX // 4096):
            stream.change("a.x", big + str(i), "good", float(i))
            await asyncio.sleep(0)
            if not stream.readers:
                break
        assert stream.readers == [] and stream.cut_off == 1
        assert time.monotonic() - t0 < 30
        slow.close()
        # it reconnects and starts over from a snapshot
        reader, writer = await asyncio.open_unix_connection(str(stream.path), limit=1 << 24)
        assert "snapshot" in json.loads(await asyncio.wait_for(reader.readline(), 5))
        stream.stop()
        assert await asyncio.wait_for(reader.read(), 5) == b""  # the role stopped: EOF
        writer.close()
        assert not stream.path.exists()

    asyncio.run(body())
