"""Requests between processes: one JSON line over a role's UNIX socket, one JSON answer.

Roles never call each other's internals. A role that accepts requests (the field
role: point writes; the agent: identify) serves `<run_dir>/<role>.sock`; the CLI
and the web role call it. The socket is 0660 so only root and the appliance group
can ask. Answers are `{"ok": true, "result": ...}` or `{"ok": false, "error": "...",
"code": "..."}`; a caller gets the error as an ApplianceError of the same code.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
import os
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from appliance.errors import ApplianceError, NotFound, Timeout

log = logging.getLogger(__name__)
MAX_REQUEST = 1 << 20

Handler = Callable[..., Any]


def socket_path(run_dir: Path, role: str) -> Path:
    return Path(run_dir) / f"{role}.sock"


class ControlServer:
    """Serves requests on a thread; each handler gets the request's params as keywords."""

    def __init__(self, path: Path, handlers: dict[str, Handler]) -> None:
        self.path = Path(path)
        self.handlers = handlers
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(str(self.path))
        os.chmod(self.path, 0o660)
        s.listen(16)
        s.settimeout(0.5)
        self._sock = s
        self._thread = threading.Thread(target=self._loop, name=f"control:{self.path.name}")
        self._thread.daemon = True
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=2)
        if self._sock:
            self._sock.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def _loop(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(30)
            try:
                line = _read_line(conn)
                answer = self.dispatch(json.loads(line))
            except (OSError, ValueError) as e:
                answer = {"ok": False, "error": f"bad request: {e}", "code": "invalid-request"}
            with contextlib.suppress(OSError):
                conn.sendall(json.dumps(answer, default=str).encode() + b"\n")

    def dispatch(self, request: Any) -> dict[str, Any]:
        if not isinstance(request, dict) or not isinstance(request.get("method"), str):
            return {
                "ok": False,
                "error": "a request is {method, params}",
                "code": "invalid-request",
            }
        handler = self.handlers.get(request["method"])
        if handler is None:
            return {"ok": False, "error": f"no method {request['method']!r}", "code": "not-found"}
        params = request.get("params") or {}
        if not isinstance(params, dict):
            return {"ok": False, "error": "params must be an object", "code": "invalid-request"}
        try:
            return {"ok": True, "result": handler(**params)}
        except ApplianceError as e:  # the field path crosses too (the API names it)
            return {"ok": False, "error": e.message, "code": e.code, "field": e.field}
        except TypeError as e:
            return {"ok": False, "error": f"bad parameters: {e}", "code": "invalid-request"}
        except Exception as e:  # a handler bug must not kill the role
            log.exception("control %s failed", request["method"])
            return {"ok": False, "error": f"internal error: {e}", "code": "error"}


def _read_line(conn: socket.socket) -> bytes:
    buf = bytearray()
    while not buf.endswith(b"\n"):
        chunk = conn.recv(65536)
        if not chunk:
            break
        buf += chunk
        if len(buf) > MAX_REQUEST:
            raise ValueError("request too large")
    return bytes(buf)


def call(path: Path, method: str, timeout: float = 10.0, **params: Any) -> Any:
    """Ask the role serving `path`; raises ApplianceError with the role's message."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        try:
            s.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError):
            role = Path(path).stem
            raise NotFound(f"the {role} role is not running (no {path})") from None
        s.sendall(json.dumps({"method": method, "params": params}).encode() + b"\n")
        line = _read_line(s)
    except TimeoutError:
        raise Timeout(f"no answer from {path} within {timeout:g} s") from None
    finally:
        s.close()
    try:
        answer = json.loads(line)
    except ValueError:
        raise ApplianceError(f"garbled answer from {path}") from None
    if not answer.get("ok"):
        code = answer.get("code", "error")
        field = answer.get("field") if isinstance(answer.get("field"), str) else None
        err = _error_class(code)(answer.get("error", "failed"), field=field)
        err.code = code  # kept even where no class of ours has it (e.g. device-error)
        raise err
    return answer.get("result")


def _error_class(code: str) -> type[ApplianceError]:
    """The ApplianceError subclass with this code, so exit codes survive the hop."""
    todo = [ApplianceError]
    while todo:
        cls = todo.pop()
        if cls.code == code and cls is not ApplianceError and _takes_message_and_field(cls):
            return cls
        todo.extend(cls.__subclasses__())
    return ApplianceError


def _takes_message_and_field(cls: type[ApplianceError]) -> bool:
    """Whether `cls(message, field=...)` builds one (Invalid does; DeviceError, which
    needs a kind first, does not)."""
    try:
        inspect.signature(cls).bind("message", field=None)
    except TypeError:
        return False
    return True
