"""Identify a port: blink its link LED so an installer finds the socket (what `ethtool -p`
does: the kernel's ETHTOOL_PHYS_ID request, here without the ethtool binary).

The request blocks for as long as the LED blinks, so it runs on a thread of its own; a
driver that cannot blink (veth, most virtual NICs) refuses at once, and that refusal is
the caller's answer. The socket is opened in the calling process's network namespace:
the net role's, never another.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import socket
import struct
import threading
import time
from collections.abc import Callable

from appliance.errors import ApplianceError, Conflict

SIOCETHTOOL = 0x8946
ETHTOOL_PHYS_ID = 0x1C
IFNAMSIZ = 16
IFREQ_SIZE = 40
REFUSAL_WAIT_S = 0.3  # a driver without set_phys_id answers EOPNOTSUPP well within this
IDENTIFY_DEFAULT_S = 15  # how long a port blinks when nobody says
IDENTIFY_MAX_S = 300


def phys_id(name: str, seconds: int) -> None:
    """ETHTOOL_PHYS_ID on `name` for `seconds`: returns when the LED stops (OSError if not)."""
    value = ctypes.create_string_buffer(struct.pack("=II", ETHTOOL_PHYS_ID, seconds))
    # struct ifreq: the name, then a union (40 bytes in all) whose ifr_data points at `value`
    ifreq = struct.pack(
        f"{IFNAMSIZ}sP{IFREQ_SIZE - IFNAMSIZ - struct.calcsize('P')}x",
        name.encode()[: IFNAMSIZ - 1],
        ctypes.addressof(value),
    )
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        fcntl.ioctl(s.fileno(), SIOCETHTOOL, ifreq)


class PortBlinker:
    """Blinks ports' LEDs, one request per port at a time. `ioctl` is `phys_id` (a fake in
    unit tests)."""

    def __init__(
        self,
        ioctl: Callable[[str, int], None] = phys_id,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ioctl = ioctl
        self.clock = clock
        self._busy: dict[str, float] = {}
        self._lock = threading.Lock()

    def blink(self, name: str, seconds: int) -> None:
        """Start blinking `name` for `seconds`; Conflict if it is blinking already or its
        driver cannot, ApplianceError for another refusal."""
        with self._lock:
            if self._busy.get(name, 0.0) > self.clock():
                raise Conflict(f"{name} is blinking already", field="port")
            self._busy[name] = self.clock() + seconds
        failed: list[OSError] = []
        done = threading.Event()

        def run() -> None:
            try:
                self.ioctl(name, seconds)
            except OSError as e:
                failed.append(e)
            finally:
                with self._lock:
                    self._busy.pop(name, None)
                done.set()

        threading.Thread(target=run, name=f"identify:{name}", daemon=True).start()
        done.wait(REFUSAL_WAIT_S)
        if failed:
            raise refusal(name, failed[0])


def refusal(name: str, e: OSError) -> ApplianceError:
    if e.errno == errno.EOPNOTSUPP:
        return Conflict(
            f"{name} cannot blink its LED: its driver does not support it", field="port"
        )
    if e.errno == errno.ENODEV:
        return Conflict(f"{name} is gone", field="port")
    return ApplianceError(f"{name}: the kernel refused to blink its LED: {e.strerror}")
