"""The unit's time client (chrony) and resolver file, held by the net role from the revision.

chrony is Debian's kept NTP client. The unit's chrony reads its sources from
`<run_dir>/chrony/` (`sourcedir`, a drop-in the image ships); the net role writes
`appliance.sources` there, atomically, and asks chronyd to reload them over its command
socket (`chronyc reload sources`). It reads the state back with `chronyc -c sources` and
`-c tracking`: synchronised when a source is selected (`*`), its address, stratum and the
last measured offset. The command socket is `<run_dir>/chrony/chronyd.sock` when there is
one (the lab's chronyd, run in the unit's namespace), else chrony's own.

The resolver's file is `<run_dir>/resolv.conf` (the image links /etc/resolv.conf to it).

The text builders and parsers are pure; `Chrony` and `write_resolv_conf` do the I/O.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from appliance import proc
from appliance.config.netsvc import Dns, Time
from appliance.errors import ApplianceError

SOURCES_NAME = "appliance.sources"
CHRONY_SOCKET = Path("/run/chrony/chronyd.sock")
CHRONYC_TIMEOUT_S = 3.0


def sources_text(time: Time) -> str:
    """chrony's sources file for the document's NTP servers (`iburst`: a first sync in
    seconds, not minutes, after boot or a change)."""
    lines = ["# written by the appliance's net role from the running revision (time.ntp)"]
    lines += [f"server {server} iburst" for server in time.ntp]
    return "\n".join(lines) + "\n"


def resolv_conf_text(dns: Dns) -> str:
    lines = ["# written by the appliance's net role from the running revision (dns)"]
    lines += [f"nameserver {server}" for server in dns.servers]
    if dns.search:
        lines.append("search " + " ".join(dns.search))
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class TimeStatus:
    """What the time client says: in sync or not, from which source, how far off."""

    synchronised: bool
    source: str | None = None  # the selected server's address
    stratum: int | None = None
    offset_s: float | None = None  # the last measured offset of the clock (+: ahead)
    sources: int = 0  # how many sources chrony has
    reachable: int = 0  # how many of them answered lately
    error: str | None = None  # the client could not be asked (not installed, not running)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_status(sources_csv: str, tracking_csv: str) -> TimeStatus:
    """`chronyc -c -n sources` and `-c -n tracking` as a TimeStatus (pure).

    sources: mode, state, address, stratum, poll, reach (octal), ...; state `*` is the
    selected source. tracking: ref id, ref address, stratum, ref time, system offset,
    last offset, ..., leap status (last)."""
    rows = [line.split(",") for line in sources_csv.splitlines() if line.count(",") >= 5]
    selected = next((r for r in rows if r[1] == "*"), None)
    reachable = sum(1 for r in rows if _octal(r[5]) != 0)
    track = tracking_csv.strip().split(",")
    leap_ok = len(track) >= 14 and track[-1].strip() != "Not synchronised"
    if selected is None or not leap_ok:
        return TimeStatus(False, sources=len(rows), reachable=reachable)
    return TimeStatus(
        True,
        source=selected[2],
        stratum=_int(track[2]),
        offset_s=_float(track[5]),
        sources=len(rows),
        reachable=reachable,
    )


def _octal(text: str) -> int:
    try:
        return int(text, 8)
    except ValueError:
        return 0


def _int(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


def _float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def write_atomically(path: Path, text: str, mode: int = 0o644) -> bool:
    """Write `text` to `path` by a rename (a reader sees the old or the new file, never
    half of one); False when the file already says that."""
    try:
        if path.read_text() == text:
            return False
    except (FileNotFoundError, UnicodeDecodeError):
        pass
    if not path.parent.is_dir():  # readable by the client that reads it (chronyd: _chrony)
        path.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(path.parent, 0o755)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return True


class Chrony:
    """chrony as the net role uses it: hand it the sources, read its state."""

    def __init__(self, run_dir: Path, socket: Path | None = None) -> None:
        self.dir = run_dir / "chrony"
        own = self.dir / "chronyd.sock"
        self._socket = socket if socket is not None else (own if own.exists() else None)

    @property
    def socket(self) -> Path:
        own = self.dir / "chronyd.sock"
        if self._socket is None and own.exists():  # the lab's chronyd came after us
            self._socket = own
        return self._socket or CHRONY_SOCKET

    def _chronyc(self, *args: str) -> str:
        argv = ["chronyc", "-h", str(self.socket), "-n", *args]
        return proc.run(argv, timeout=CHRONYC_TIMEOUT_S, error=ApplianceError).stdout

    def configure(self, time: Time) -> bool:
        """Write the sources file and have chronyd reload it; True when it changed.
        ApplianceError when chronyd cannot be told (the file is written all the same,
        so chronyd takes it when it starts)."""
        path = self.dir / SOURCES_NAME
        had_servers = path.exists() and any(
            line.startswith("server ") for line in path.read_text().splitlines()
        )
        changed = write_atomically(path, sources_text(time))
        # no server before and none now (a unit that keeps no clock, or a first start
        # without NTP): nothing to tell chronyd, which may not even run (the lab)
        if changed and (time.ntp or had_servers):
            self._chronyc("reload", "sources")
        return changed

    def status(self) -> TimeStatus:
        try:
            return parse_status(self._chronyc("-c", "sources"), self._chronyc("-c", "tracking"))
        except ApplianceError as e:
            return TimeStatus(False, error=f"the time client does not answer: {e}")


def write_resolv_conf(run_dir: Path, dns: Dns) -> bool:
    """The resolver's file from the document; True when it changed."""
    return write_atomically(run_dir / "resolv.conf", resolv_conf_text(dns))


class NetServices:
    """The time client's sources and the resolver's file, as the net role holds them."""

    def __init__(self, run_dir: Path, chrony: Chrony | None = None) -> None:
        self.run_dir = run_dir
        self.chrony = chrony if chrony is not None else Chrony(run_dir)

    def apply(self, time: Time, dns: Dns) -> list[str]:
        """Hand both the document's settings; what changed. ApplianceError when chronyd
        could not be told (the rest is done)."""
        changes = []
        if write_resolv_conf(self.run_dir, dns):
            changes.append(f"resolver: {', '.join(dns.servers) or 'no DNS server'}")
        if self.chrony.configure(time):
            changes.append(f"time: NTP from {', '.join(time.ntp) or 'no server'}")
        return changes

    def time_status(self) -> TimeStatus:
        return self.chrony.status()
