"""Live state on /run (tmpfs): what each role observes now, and the wake-up doorbell.

Volatile by design: nothing here survives a reboot, and writing it costs no
flash. Each role owns one JSON file, replaced atomically (write + rename), so
readers never see half a file. A role is alive while it refreshes its file.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from appliance.roles import ALIVE_WITHIN_S


class LiveState:
    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)

    def ensure(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True, mode=0o755)

    def path(self, role: str) -> Path:
        return self.run_dir / f"{role}.json"

    def write(self, role: str, data: dict[str, Any]) -> None:
        self.ensure()
        target = self.path(role)
        tmp = target.with_suffix(f".tmp{os.getpid()}")
        payload = {**data, "pid": os.getpid(), "updated_at": time.time()}
        tmp.write_text(json.dumps(payload, sort_keys=True, default=str))
        os.replace(tmp, target)

    def read(self, role: str) -> dict[str, Any] | None:
        try:
            return json.loads(self.path(role).read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def alive(self, role: str, now: float | None = None) -> bool:
        data = self.read(role)
        if not data:
            return False
        now = time.time() if now is None else now
        if now - float(data.get("updated_at", 0)) > ALIVE_WITHIN_S:
            return False
        try:
            os.kill(int(data["pid"]), 0)
        except (ProcessLookupError, KeyError, ValueError):
            return False
        except PermissionError:
            pass  # exists, owned by another user
        return True

    # -- doorbell: a datagram that wakes a role's loop at once ----------------

    def doorbell_path(self, role: str) -> Path:
        return self.run_dir / f"{role}.bell"  # <role>.sock is the control socket

    def bind_doorbell(self, role: str) -> socket.socket:
        self.ensure()
        path = self.doorbell_path(role)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(str(path))
        sock.setblocking(False)
        return sock

    def watch_doorbell(self, role: str, loop: Any, wake: Any) -> socket.socket:
        """Bind `role`'s doorbell and call `wake()` from the asyncio `loop` at each ring
        (several rings in a row wake it once). Keep the returned socket; close it to stop."""
        bell = self.bind_doorbell(role)

        def ring() -> None:
            with contextlib.suppress(OSError):
                while bell.recv(64):
                    pass
            wake()

        loop.add_reader(bell.fileno(), ring)
        return bell

    def ring(self, *roles: str) -> bool:
        """Wake each role that listens; False if nobody was there (they poll anyway)."""
        woken = False
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            for role in roles:
                try:
                    sock.sendto(b"wake", str(self.doorbell_path(role)))
                    woken = True
                except OSError:
                    pass
        finally:
            sock.close()
        return woken
