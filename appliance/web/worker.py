"""The web server's gunicorn worker: gthread with bounds on slow clients, and the unit's
security headers on the answers gunicorn writes itself (issue 18).

gunicorn's gthread worker hands a thread a connection as soon as it is accepted, and a
thread that has started on a request reads on with no time limit: a few dozen clients
that connect and then send a byte now and then (slowloris), or a body slowly, held every
thread of every worker, and the unit answered no one. `BoundedThreadWorker` changes that:

- a new connection waits on the poller, as gunicorn's kept-alive ones do, until it has
  sent something (and is closed after gunicorn's keepalive seconds if it never does), so
  a silent connection holds no thread;
- from the moment a thread takes a connection, the client has `READ_S` seconds for its
  TLS handshake, request line, headers and body (up to the app's `MAX_BODY`, read
  before the app runs: the app never waits on a client); a client slower than that,
  however little it sends at a time, has its connection cut by the worker's watchdog
  and the thread goes back to the pool;
- one address may have at most `PER_SOURCE` connections being read at once in a
  worker (a request of a well-behaved client is read in milliseconds); one more is
  closed unanswered, so one slow host holds at most half the threads, and the others
  are answered meanwhile;
- after that, each send of the answer may wait `SEND_S` seconds for a client that does
  not read.

gunicorn's own error answers (a malformed request line, 414, 431, a bad chunk) carry
`appliance.web.app.SECURITY_HEADERS` like every answer of the app (`write_error`), and
the Server header names no product. Both are set in gunicorn's modules when this module
is imported, which only the web server process does (`serve.py` names this worker).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import html
import io
import selectors
import socket
import threading
import time
from typing import Any

from gunicorn import util as gunicorn_util
from gunicorn.http import wsgi as gunicorn_wsgi
from gunicorn.workers import gthread

from appliance.web.app import MAX_BODY, SECURITY_HEADERS

READ_S = 10.0
PER_SOURCE = 4  # connections of one address a worker reads at once (a browser: ~6, quick)
SEND_S = 30.0
WATCH_EVERY_S = 0.25
SERVER = "appliance"


def write_error(sock: Any, status_int: int, reason: str, mesg: str) -> None:
    """gunicorn's error answer (its text escaped, as gunicorn does) with the unit's
    security headers and no cache."""
    body = (
        f"<!doctype html>\n<html><head><title>{html.escape(reason)}</title></head>"
        f"<body><h1>{html.escape(reason)}</h1><p>{html.escape(mesg)}</p></body></html>\n"
    )
    head = [
        f"HTTP/1.1 {status_int} {reason}",
        "Connection: close",
        "Content-Type: text/html; charset=utf-8",
        f"Content-Length: {len(body.encode())}",
        "Cache-Control: no-store",
        *(f"{k}: {v}" for k, v in SECURITY_HEADERS.items()),
    ]
    gunicorn_util.write_nonblock(sock, ("\r\n".join(head) + "\r\n\r\n" + body).encode())


gunicorn_util.write_error = write_error
gunicorn_wsgi.SERVER = SERVER


class ReadAhead:
    """A request body read before the app runs: those bytes first, then whatever is left
    in gunicorn's body (a chunked body over the limit: the app stops at MAX_BODY, and
    gunicorn drains or drops the rest as it does for any body the app left)."""

    def __init__(self, head: bytes, rest: Any) -> None:
        self._head = io.BytesIO(head)
        self._rest = rest

    @property
    def failed(self) -> bool:  # gunicorn asks before reusing the connection
        return bool(getattr(self._rest, "failed", False))

    def read(self, size: int | None = None) -> bytes:
        if size is None or size < 0:
            return self._head.read() + self._rest.read()
        data = self._head.read(size)
        if len(data) < size:
            data += self._rest.read(size - len(data))
        return data

    def readline(self, size: int | None = None) -> bytes:
        line = self._head.readline(-1 if size is None else size)
        if line.endswith(b"\n") or (size is not None and 0 <= size <= len(line)):
            return line
        return line + self._rest.readline(None if size is None else size - len(line))

    def readlines(self, hint: int | None = None) -> list[bytes]:
        return list(iter(self.readline, b""))

    def __iter__(self) -> Any:
        return iter(self.readline, b"")


def _content_length(req: Any) -> int | None:
    for name, value in req.headers:
        if name == "CONTENT-LENGTH":
            with contextlib.suppress(ValueError):
                return int(value)
    return None


class BoundedThreadWorker(gthread.ThreadWorker):  # type: ignore[misc]
    """See the module docstring."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._reading: dict[int, tuple[Any, float]] = {}  # id(conn) -> (conn, deadline)
        self._reading_lock = threading.Lock()

    def init_process(self) -> None:
        threading.Thread(target=self._watch, name="read deadlines", daemon=True).start()
        super().init_process()

    # -- a new connection waits on the poller until it sends something ------------------

    def accept(self, listener: Any) -> None:
        try:
            client, addr = listener.accept()
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        self.nr_conns += 1
        conn = gthread.TConn(self.cfg, client, addr, listener.getsockname())  # non-blocking
        conn.timeout = time.monotonic() + self.cfg.keepalive
        self.pending_conns.append(conn)
        self.poller.register(
            conn.sock,
            selectors.EVENT_READ,
            functools.partial(self.on_pending_socket_readable, conn),
        )

    # -- from then on, READ_S for the whole request --------------------------------------

    def handle(self, conn: Any) -> Any:
        source = conn.client[0] if conn.client else None
        with self._reading_lock:
            busy = sum(1 for c, _ in self._reading.values() if c.client and c.client[0] == source)
            if busy < PER_SOURCE:
                self._reading[id(conn)] = (conn, time.monotonic() + READ_S)
        if busy >= PER_SOURCE:
            self.log.warning(
                "a client (%s) has %d requests still arriving: one more closed", source, busy
            )
            return False  # gunicorn closes it
        try:
            return super().handle(conn)
        finally:
            with self._reading_lock:
                self._reading.pop(id(conn), None)

    def handle_request(self, req: Any, conn: Any) -> Any:
        length = _content_length(req)
        if req.body is not None and (length is None or length <= MAX_BODY):
            req.body = ReadAhead(req.body.read(MAX_BODY + 1), req.body)
        with self._reading_lock:
            self._reading.pop(id(conn), None)
        conn.sock.settimeout(SEND_S)
        return super().handle_request(req, conn)

    def _watch(self) -> None:
        while True:
            time.sleep(WATCH_EVERY_S)
            now = time.monotonic()
            with self._reading_lock:
                late = [c for c, deadline in self._reading.values() if deadline <= now]
                for conn in late:
                    self._reading.pop(id(conn), None)
                    self._cut(conn)

    def _cut(self, conn: Any) -> None:
        """End a connection whose request is late: its blocked read returns at once and
        gunicorn closes it (the socket object, so never a descriptor reused since)."""
        self.log.warning(
            "a client (%s) did not send its request within %.0f s: connection cut",
            conn.client[0] if conn.client else "?",
            READ_S,
        )
        with contextlib.suppress(OSError):
            socket.socket.shutdown(conn.sock, socket.SHUT_RDWR)
