"""RAUC's custom bootloader backend over systemd-boot's boot-counted loader entries.

RAUC 1.8 has no systemd-boot backend; system.conf names this one (`bootloader=custom`,
`bootloader-custom-backend=`), and RAUC runs it as::

    rauc-boot-handler get-primary                 -> prints the bootname booted next
    rauc-boot-handler set-primary BOOTNAME        -> that slot boots next, with 3 tries
    rauc-boot-handler get-state BOOTNAME          -> prints good or bad
    rauc-boot-handler set-state BOOTNAME good|bad
    rauc-boot-handler get-current                 -> the booted slot (rauc.slot= on the
                                                     kernel command line)
    rauc-boot-handler list                        -> every slot's entry, as JSON (not
                                                     RAUC's: for the fallback report)

Each slot has exactly one entry on the ESP, ``loader/entries/appliance-<bootname>*.conf``,
named the way systemd-boot counts boots: ``appliance-a+3.conf`` (3 tries left),
``appliance-a+1-2.conf`` (1 left, 2 done), ``appliance-a+0-3.conf`` (none left: bad),
``appliance-a.conf`` (blessed: good). systemd-boot boots the first entry of its order:
entries without tries left last, then the highest ``version`` line. There is no
``default`` in loader.conf (an entry named there boots even when its counter says bad), so
"primary" is purely this order: set-primary gives the slot a version above every other
entry's and a fresh counter; the entry it replaces keeps its blessed name and becomes the
fallback.

Who renames what: systemd-boot counts (``+3`` -> ``+2-1``), systemd-bless-boot blesses the
booted entry once boot-complete.target is reached (the health gate is ordered before it),
and this handler renames only when RAUC asks (install: ``set-state bad`` before writing a
slot, ``set-primary`` after; ``rauc status mark-*`` by hand). RAUC's own mark-good service
is not used, so there is one authority at boot.

Every change is one rename of one file (the content is rewritten, through a temporary file
renamed over it, before the name changes), so a power cut leaves the old or the new state,
never two entries for one slot. Exit 0 on success; 1 (one line on stderr) when the ESP does
not hold what it should; 2 for a wrong command line.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

PREFIX = "appliance-"
TRIES = 3
ENTRY_NAME = re.compile(r"^appliance-([a-z0-9]+)(?:\+(\d+)(?:-(\d+))?)?\.conf$")
VERSION_LINE = re.compile(r"^version[ \t]+(\S+)[ \t]*$", re.M)
DEFAULT_ESP = Path("/efi")
DEFAULT_CMDLINE = Path("/proc/cmdline")


class HandlerError(Exception):
    """The ESP does not hold what the handler needs (exit 1)."""


class UsageError(Exception):
    """A wrong command line (exit 2)."""


# --- the pure core: entry names and the boot order ------------------------------------------


@dataclass(frozen=True)
class Entry:
    """One slot's loader entry: its file name says the slot and its boot counter."""

    bootname: str
    tries_left: int | None  # None: no counter (blessed, or never counted)
    tries_done: int
    version: int

    @property
    def filename(self) -> str:
        return name_for(self.bootname, self.tries_left, self.tries_done)

    @property
    def bad(self) -> bool:
        return self.tries_left == 0


def name_for(bootname: str, tries_left: int | None, tries_done: int = 0) -> str:
    if tries_left is None:
        return f"{PREFIX}{bootname}.conf"
    done = f"-{tries_done}" if tries_done else ""
    return f"{PREFIX}{bootname}+{tries_left}{done}.conf"


def parse_name(filename: str) -> tuple[str, int | None, int] | None:
    """(bootname, tries left or None, tries done) of an entry's file name, None for a file
    that is not one of ours."""
    m = ENTRY_NAME.match(filename)
    if not m:
        return None
    left = None if m.group(2) is None else int(m.group(2))
    return m.group(1), left, int(m.group(3) or 0)


def parse_version(text: str) -> int:
    m = VERSION_LINE.search(text)
    if not m or not m.group(1).isdigit():
        return 0
    return int(m.group(1))


def with_version(text: str, version: int) -> str:
    """The entry's text with its version line set (added when it has none)."""
    if VERSION_LINE.search(text):
        return VERSION_LINE.sub(f"version {version}", text, count=1)
    return text.rstrip("\n") + f"\nversion {version}\n"


def boot_order(entries: Iterable[Entry]) -> list[Entry]:
    """systemd-boot's order for our entries (one sort-key, no machine-id): an entry without
    tries left goes last; then the highest version first; then the name."""
    return sorted(entries, key=lambda e: (e.bad, -e.version, e.bootname))


def primary(entries: Sequence[Entry]) -> Entry:
    if not entries:
        raise HandlerError("no appliance-*.conf loader entry on the ESP")
    return boot_order(entries)[0]


# --- the adapter: the ESP's loader/entries directory ----------------------------------------


class Esp:
    """The loader entries on a mounted ESP (the unit's /efi; a plain directory in tests)."""

    def __init__(self, root: Path) -> None:
        self.dir = root / "loader" / "entries"

    def entries(self) -> dict[str, Entry]:
        if not self.dir.is_dir():
            raise HandlerError(f"{self.dir} is missing: is the ESP mounted?")
        found: dict[str, Entry] = {}
        for path in sorted(self.dir.iterdir()):
            parsed = parse_name(path.name)
            if parsed is None:
                continue
            bootname, left, done = parsed
            if bootname in found:
                raise HandlerError(
                    f"two loader entries for slot {bootname}: {found[bootname].filename} "
                    f"and {path.name}"
                )
            found[bootname] = Entry(bootname, left, done, parse_version(path.read_text()))
        return found

    def entry(self, bootname: str) -> Entry:
        found = self.entries()
        if bootname not in found:
            have = ", ".join(sorted(found)) or "none"
            raise HandlerError(f"no loader entry for slot {bootname!r} (slots: {have})")
        return found[bootname]

    def rename(self, old: Entry, new: Entry) -> None:
        if old.filename != new.filename:
            os.rename(self.dir / old.filename, self.dir / new.filename)
            self._sync_dir()

    def set_version(self, entry: Entry, version: int) -> None:
        path = self.dir / entry.filename
        text = with_version(path.read_text(), version)
        tmp = self.dir / f".{entry.bootname}.tmp"
        with tmp.open("w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        self._sync_dir()

    def _sync_dir(self) -> None:
        fd = os.open(self.dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# --- the commands ---------------------------------------------------------------------------


def get_primary(esp: Esp) -> str:
    return primary(list(esp.entries().values())).bootname


def get_state(esp: Esp, bootname: str) -> str:
    return "bad" if esp.entry(bootname).bad else "good"


def set_state(esp: Esp, bootname: str, state: str) -> None:
    entry = esp.entry(bootname)
    if state == "good":  # blessed: no counter
        esp.rename(entry, Entry(bootname, None, 0, entry.version))
    else:  # no tries left: systemd-boot sorts it last and boots it only when nothing else is
        esp.rename(entry, Entry(bootname, 0, entry.tries_done, entry.version))


def set_primary(esp: Esp, bootname: str) -> None:
    found = esp.entries()
    if bootname not in found:
        esp.entry(bootname)  # raises, naming the slots there are
    entry = found[bootname]
    others = [e.version for n, e in found.items() if n != bootname]
    version = max(others, default=0) + 1
    if entry.version != version:
        # Bad first (sorted last whatever its version), so that a power cut between the
        # steps never leaves it first in the order without a counter.
        if not entry.bad:
            bad = Entry(bootname, 0, entry.tries_done, entry.version)
            esp.rename(entry, bad)
            entry = bad
        esp.set_version(entry, version)
        entry = Entry(bootname, entry.tries_left, entry.tries_done, version)
    esp.rename(entry, Entry(bootname, TRIES, 0, version))


def entries_from_json(text: str) -> dict[str, Entry]:
    """What `list` printed, back as entries."""
    return {
        n: Entry(n, e["tries_left"], int(e["tries_done"]), int(e["version"]))
        for n, e in json.loads(text).items()
    }


def get_current(cmdline: str) -> str:
    for word in cmdline.split():
        if word.startswith("rauc.slot="):
            return word.removeprefix("rauc.slot=")
    raise HandlerError("no rauc.slot= on the kernel command line: which slot booted is unknown")


def run(argv: Sequence[str], esp_root: Path, cmdline_path: Path) -> str | None:
    """One command; what it prints (None: nothing)."""
    if not argv:
        raise UsageError(
            "needs a command: get-primary, set-primary, get-state, set-state, get-current"
        )
    cmd, args = argv[0], list(argv[1:])
    arity = {
        "get-primary": 0, "get-current": 0, "list": 0,
        "set-primary": 1, "get-state": 1, "set-state": 2,
    }  # fmt: skip
    if cmd not in arity:
        raise UsageError(f"unknown command {cmd!r}")
    if len(args) != arity[cmd]:
        raise UsageError(f"{cmd} takes {arity[cmd]} argument(s), got {len(args)}")
    if args and not re.fullmatch(r"[a-z0-9]+", args[0]):
        raise UsageError(f"bad bootname {args[0]!r} (lower-case letters and digits)")
    esp = Esp(esp_root)
    if cmd == "get-primary":
        return get_primary(esp)
    if cmd == "list":
        return json.dumps(
            {n: dataclasses.asdict(e) | {"file": e.filename} for n, e in esp.entries().items()},
            sort_keys=True,
        )
    if cmd == "get-current":
        try:
            return get_current(cmdline_path.read_text())
        except OSError as e:
            raise HandlerError(f"cannot read {cmdline_path}: {e.strerror}") from None
    if cmd == "get-state":
        return get_state(esp, args[0])
    if cmd == "set-primary":
        set_primary(esp, args[0])
        return None
    if args[1] not in ("good", "bad"):
        raise UsageError(f"set-state takes good or bad, not {args[1]!r}")
    set_state(esp, args[0], args[1])
    return None


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    esp_root = Path(os.environ.get("APPLIANCE_ESP") or DEFAULT_ESP)
    cmdline = Path(os.environ.get("APPLIANCE_CMDLINE") or DEFAULT_CMDLINE)
    try:
        out = run(argv, esp_root, cmdline)
    except UsageError as e:
        print(f"rauc-boot-handler: {e}", file=sys.stderr)
        return 2
    except HandlerError as e:
        print(f"rauc-boot-handler: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # the ESP itself failed (read-only, gone): one line, not a traceback
        print(f"rauc-boot-handler: {e.filename or esp_root}: {e.strerror}", file=sys.stderr)
        return 1
    if out is not None:
        print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
