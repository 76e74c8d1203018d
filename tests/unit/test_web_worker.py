"""The web server's worker (appliance.web.worker) without a server: gunicorn's own error
answers carry the unit's headers, a body read ahead reads on as gunicorn's would, and the
server runs this worker (the slow-client bounds themselves: tests/integration/test_web_probe.py)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from appliance.paths import Paths
from appliance.web import serve, worker
from appliance.web.app import SECURITY_HEADERS


class Sock:
    def __init__(self) -> None:
        self.sent = b""

    def sendall(self, data: bytes) -> None:
        self.sent += data

    def send(self, data: bytes) -> int:
        self.sent += data
        return len(data)

    def gettimeout(self) -> float | None:
        return None

    def setblocking(self, flag: bool) -> None:
        pass


def test_gunicorns_error_answer_has_the_units_headers_and_escapes() -> None:
    import gunicorn.util

    assert gunicorn.util.write_error is worker.write_error  # what gunicorn's workers call
    s = Sock()
    worker.write_error(s, 400, "Bad Request", "Invalid Method '<script>'")
    head, _, body = s.sent.decode().partition("\r\n\r\n")
    lines = head.split("\r\n")
    assert lines[0] == "HTTP/1.1 400 Bad Request"
    headers = dict(line.split(": ", 1) for line in lines[1:])
    for k, v in SECURITY_HEADERS.items():
        assert headers[k] == v
    assert headers["Cache-Control"] == "no-store"
    assert int(headers["Content-Length"]) == len(body.encode())
    assert "<script>" not in body and "&lt;script&gt;" in body


def test_the_server_names_no_product() -> None:
    from gunicorn.http import wsgi

    assert wsgi.SERVER == "appliance"


class Body:
    """gunicorn's Body as the app sees it (read, readline)."""

    def __init__(self, data: bytes) -> None:
        self._b = io.BytesIO(data)
        self.failed = False

    def read(self, size: int | None = None) -> bytes:
        return self._b.read(-1 if size is None else size)

    def readline(self, size: int | None = None) -> bytes:
        return self._b.readline(-1 if size is None else size)


def test_a_body_read_ahead_reads_on_like_the_original() -> None:
    data = b"line one\nline two\nthree"
    for cut in (0, 3, 9, len(data)):
        rest = Body(data[cut:])
        r = worker.ReadAhead(data[:cut], rest)
        assert r.read() == data
        r = worker.ReadAhead(data[:cut], Body(data[cut:]))
        assert [r.read(4), r.read(4)] == [data[:4], data[4:8]]
        r = worker.ReadAhead(data[:cut], Body(data[cut:]))
        assert list(r) == [b"line one\n", b"line two\n", b"three"]
        r = worker.ReadAhead(data[:cut], Body(data[cut:]))
        assert r.readline(3) == b"lin"
    rest = Body(b"")
    rest.failed = True
    assert worker.ReadAhead(b"", rest).failed  # gunicorn will not reuse the connection


def test_content_length_from_gunicorns_headers() -> None:
    class Req:
        headers: Any = [("HOST", "x"), ("CONTENT-LENGTH", "12")]

    assert worker._content_length(Req()) == 12
    Req.headers = [("HOST", "x")]
    assert worker._content_length(Req()) is None


def test_the_server_runs_the_bounded_worker(tmp_path: Path) -> None:
    app = serve._gunicorn_app(Paths(tmp_path, tmp_path), ["127.0.0.1:1"], "c", "k")
    assert app.cfg.worker_class is worker.BoundedThreadWorker
