"""appliance.update.boot, RAUC's custom backend, on a fake ESP: every command and every
transition a unit goes through (install, good boot, three failed boots and the fallback)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from appliance.update import boot

ENTRY = """title Appliance (slot {slot})
sort-key appliance
version {version}
linux /appliance/{slot}/vmlinuz
initrd /appliance/{slot}/initrd.img
options root=PARTUUID=x ro rauc.slot={slot}
"""


def make_esp(tmp_path: Path, **entries: tuple[str, int]) -> Path:
    """An ESP with one entry per slot: slot=(file name suffix, version)."""
    d = tmp_path / "esp" / "loader" / "entries"
    d.mkdir(parents=True)
    for slot, (suffix, version) in entries.items():
        (d / f"appliance-{slot}{suffix}.conf").write_text(ENTRY.format(slot=slot, version=version))
    (d / "other.conf").write_text("title not ours\n")
    return tmp_path / "esp"


def names(esp: Path) -> list[str]:
    return sorted(p.name for p in (esp / "loader" / "entries").iterdir() if p.name != "other.conf")


def handler(esp: Path, *argv: str, cmdline: str = "") -> tuple[int, str, str]:
    """The handler as RAUC runs it: a process, its exit status, stdout and stderr."""
    cmd = esp.parent / "cmdline"
    cmd.write_text(cmdline)
    cp = subprocess.run(
        [sys.executable, "-m", "appliance.update.boot", *argv],
        capture_output=True,
        text=True,
        env={"APPLIANCE_ESP": str(esp), "APPLIANCE_CMDLINE": str(cmd), "PATH": "/usr/bin:/bin"},
        timeout=30,
    )
    return cp.returncode, cp.stdout.strip(), cp.stderr.strip()


def call(esp: Path, *argv: str, cmdline: str = "") -> str | None:
    """The same in-process (fast), for the transitions."""
    cmd = esp.parent / "cmdline"
    cmd.write_text(cmdline)
    return boot.run(list(argv), esp, cmd)


def firmware_boot(esp: Path) -> str:
    """What systemd-boot does at power-on: boot the first entry of its order and count the
    try if the entry has a counter (+L-D -> +(L-1)-(D+1)). Returns the booted slot."""
    e = boot.primary(list(boot.Esp(esp).entries().values()))
    if e.tries_left:
        counted = boot.Entry(e.bootname, e.tries_left - 1, e.tries_done + 1, e.version)
        boot.Esp(esp).rename(e, counted)
    return e.bootname


def bless(esp: Path, bootname: str) -> None:
    """What systemd-bless-boot does after boot-complete.target: drop the counter."""
    e = boot.Esp(esp).entry(bootname)
    if e.tries_left is not None:
        boot.Esp(esp).rename(e, boot.Entry(bootname, None, 0, e.version))


# --- names and order (pure) -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "parsed"),
    [
        ("appliance-a+3.conf", ("a", 3, 0)),
        ("appliance-a+2-1.conf", ("a", 2, 1)),
        ("appliance-b+0-3.conf", ("b", 0, 3)),
        ("appliance-b.conf", ("b", None, 0)),
        ("appliance-a+3.conf.tmp", None),
        ("other.conf", None),
        ("appliance-A+3.conf", None),
    ],
)
def test_entry_names_parse(name: str, parsed: tuple | None) -> None:
    assert boot.parse_name(name) == parsed
    if parsed:
        assert boot.name_for(*parsed) == name


def test_the_order_puts_bad_entries_last_then_the_highest_version_first() -> None:
    a = boot.Entry("a", None, 0, 2)
    b = boot.Entry("b", 3, 0, 3)
    assert [e.bootname for e in boot.boot_order([a, b])] == ["b", "a"]
    b_bad = boot.Entry("b", 0, 3, 3)
    assert [e.bootname for e in boot.boot_order([a, b_bad])] == ["a", "b"]
    assert boot.with_version("title x\nversion 7\n", 9) == "title x\nversion 9\n"
    assert boot.with_version("title x\n", 4) == "title x\nversion 4\n"


# --- each command, as a process -------------------------------------------------------------


def test_get_primary_and_get_state_as_built(tmp_path: Path) -> None:
    esp = make_esp(tmp_path, a=("+3", 2), b=("+3", 1))
    assert handler(esp, "get-primary") == (0, "a", "")
    assert handler(esp, "get-state", "a") == (0, "good", "")
    assert handler(esp, "get-state", "b") == (0, "good", "")


def test_set_primary_gives_the_slot_the_highest_version_and_three_tries(tmp_path: Path) -> None:
    esp = make_esp(tmp_path, a=("", 2), b=("+0", 1))
    assert handler(esp, "set-primary", "b") == (0, "", "")
    assert names(esp) == ["appliance-a.conf", "appliance-b+3.conf"]
    assert "version 3\n" in (esp / "loader/entries/appliance-b+3.conf").read_text()
    assert handler(esp, "get-primary")[1] == "b"
    assert not list((esp / "loader/entries").glob(".*")), "a temporary file was left"


def test_set_primary_on_a_blessed_slot_counts_it_again(tmp_path: Path) -> None:
    esp = make_esp(tmp_path, a=("", 5), b=("", 4))
    assert handler(esp, "set-primary", "b")[0] == 0
    assert names(esp) == ["appliance-a.conf", "appliance-b+3.conf"]
    assert handler(esp, "get-primary")[1] == "b"
    # already primary: the version stays, the counter is fresh
    assert handler(esp, "set-primary", "b")[0] == 0
    assert "version 6\n" in (esp / "loader/entries/appliance-b+3.conf").read_text()


def test_set_state_bad_and_good(tmp_path: Path) -> None:
    esp = make_esp(tmp_path, a=("", 2), b=("+1-2", 1))
    assert handler(esp, "set-state", "b", "bad") == (0, "", "")
    assert names(esp) == ["appliance-a.conf", "appliance-b+0-2.conf"]
    assert handler(esp, "get-state", "b")[1] == "bad"
    assert handler(esp, "set-state", "b", "good")[0] == 0
    assert names(esp) == ["appliance-a.conf", "appliance-b.conf"]
    assert handler(esp, "get-state", "b")[1] == "good"


def test_get_current_reads_the_kernel_command_line(tmp_path: Path) -> None:
    esp = make_esp(tmp_path, a=("", 2), b=("", 1))
    assert handler(esp, "get-current", cmdline="root=PARTUUID=x ro rauc.slot=b quiet\n") == (
        0, "b", "",
    )  # fmt: skip
    rc, out, err = handler(esp, "get-current", cmdline="root=/dev/vda2 ro\n")
    assert (rc, out) == (1, "")
    assert err == (
        "rauc-boot-handler: no rauc.slot= on the kernel command line: which slot booted is unknown"
    )


@pytest.mark.parametrize(
    ("argv", "rc", "message"),
    [
        ((), 2, "needs a command"),
        (("reboot",), 2, "unknown command 'reboot'"),
        (("set-primary",), 2, "set-primary takes 1 argument(s), got 0"),
        (("set-state", "a", "maybe"), 2, "set-state takes good or bad, not 'maybe'"),
        (("get-state", "../x"), 2, "bad bootname '../x'"),
        (("get-state", "c"), 1, "no loader entry for slot 'c' (slots: a, b)"),
        (("set-primary", "c"), 1, "no loader entry for slot 'c' (slots: a, b)"),
    ],
)
def test_bad_input_is_one_line_and_changes_nothing(
    tmp_path: Path, argv: tuple[str, ...], rc: int, message: str
) -> None:
    esp = make_esp(tmp_path, a=("", 2), b=("+3", 1))
    before = names(esp)
    got_rc, out, err = handler(esp, *argv)
    assert (got_rc, out) == (rc, "")
    assert err.startswith("rauc-boot-handler: ") and message in err and "\n" not in err, err
    assert names(esp) == before


def test_an_esp_that_is_not_mounted_or_holds_two_entries_for_a_slot(tmp_path: Path) -> None:
    rc, _, err = handler(tmp_path / "nothing", "get-primary")
    assert rc == 1 and "is missing: is the ESP mounted?" in err
    esp = make_esp(tmp_path, a=("", 2), b=("+3", 1))
    (esp / "loader/entries/appliance-a+3.conf").write_text(ENTRY.format(slot="a", version=2))
    rc, _, err = handler(esp, "get-primary")
    assert rc == 1
    assert err == (
        "rauc-boot-handler: two loader entries for slot a: appliance-a+3.conf and appliance-a.conf"
    )


def test_no_entries_at_all(tmp_path: Path) -> None:
    esp = make_esp(tmp_path)
    rc, _, err = handler(esp, "get-primary")
    assert (rc, err) == (1, "rauc-boot-handler: no appliance-*.conf loader entry on the ESP")


# --- the transitions of a unit's life -------------------------------------------------------


def test_first_boot_blesses_slot_a_and_b_keeps_its_tries(tmp_path: Path) -> None:
    esp = make_esp(tmp_path, a=("+3", 2), b=("+3", 1))
    assert firmware_boot(esp) == "a"
    assert names(esp) == ["appliance-a+2-1.conf", "appliance-b+3.conf"]
    bless(esp, "a")
    assert names(esp) == ["appliance-a.conf", "appliance-b+3.conf"]
    assert firmware_boot(esp) == "a"  # blessed: no counting any more


def install(esp: Path, booted: str) -> str:
    """What `rauc install` does with this backend: the other slot is marked bad, written,
    then made primary."""
    target = {"a": "b", "b": "a"}[booted]
    assert call(esp, "get-current", cmdline=f"ro rauc.slot={booted}") == booted
    call(esp, "set-state", target, "bad")
    assert call(esp, "get-primary") == booted, "a slot being written must never boot"
    call(esp, "set-primary", target)
    return target


def test_an_update_that_boots_well_is_blessed_and_stays(tmp_path: Path) -> None:
    esp = make_esp(tmp_path, a=("", 2), b=("+3", 1))
    assert install(esp, "a") == "b"
    assert names(esp) == ["appliance-a.conf", "appliance-b+3.conf"]
    assert firmware_boot(esp) == "b"
    assert names(esp) == ["appliance-a.conf", "appliance-b+2-1.conf"]
    bless(esp, "b")
    assert names(esp) == ["appliance-a.conf", "appliance-b.conf"]
    assert [firmware_boot(esp) for _ in range(3)] == ["b", "b", "b"]
    # and the next update goes back to a, above b
    assert install(esp, "b") == "a"
    assert firmware_boot(esp) == "a"


def test_an_update_that_never_gets_healthy_falls_back_after_three_tries(tmp_path: Path) -> None:
    esp = make_esp(tmp_path, a=("", 2), b=("+3", 1))
    install(esp, "a")
    booted = [firmware_boot(esp) for _ in range(3)]  # the gate fails each time: no bless
    assert booted == ["b", "b", "b"]
    assert names(esp) == ["appliance-a.conf", "appliance-b+0-3.conf"]
    assert call(esp, "get-state", "b") == "bad"
    assert call(esp, "get-primary") == "a"
    assert [firmware_boot(esp) for _ in range(2)] == ["a", "a"], "the fallback holds"
    assert names(esp) == ["appliance-a.conf", "appliance-b+0-3.conf"]


def test_an_update_that_fails_once_and_then_boots_is_kept(tmp_path: Path) -> None:
    esp = make_esp(tmp_path, a=("", 2), b=("+3", 1))
    install(esp, "a")
    assert firmware_boot(esp) == "b"  # no bless (a power cut during the gate, say)
    assert firmware_boot(esp) == "b"
    bless(esp, "b")
    assert names(esp) == ["appliance-a.conf", "appliance-b.conf"]
    assert call(esp, "get-primary") == "b"


def test_an_install_interrupted_after_marking_bad_boots_the_old_slot(tmp_path: Path) -> None:
    """Power cut while the other slot is written: it is bad, the booted slot stays first."""
    esp = make_esp(tmp_path, a=("", 2), b=("", 3))
    call(esp, "set-state", "a", "bad")
    assert firmware_boot(esp) == "b"
    assert names(esp) == ["appliance-a+0.conf", "appliance-b.conf"]


@pytest.mark.parametrize("steps", [0, 1, 2])
def test_set_primary_interrupted_between_its_steps_never_boots_an_uncounted_new_slot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, steps: int
) -> None:
    """set-primary on a blessed slot: bad first, the version, then the counter; a power cut
    after any step boots the old primary or the new slot with a counter."""
    esp = make_esp(tmp_path, a=("", 5), b=("", 4))
    done = [0]

    def cut(orig):
        def step(self, *args):
            if done[0] == steps:
                raise KeyboardInterrupt  # the power goes
            done[0] += 1
            return orig(self, *args)

        return step

    monkeypatch.setattr(boot.Esp, "rename", cut(boot.Esp.rename))
    monkeypatch.setattr(boot.Esp, "set_version", cut(boot.Esp.set_version))
    with pytest.raises(KeyboardInterrupt):
        boot.set_primary(boot.Esp(esp), "b")
    monkeypatch.undo()
    first = boot.primary(list(boot.Esp(esp).entries().values()))
    assert first.bootname == "a" or first.tries_left, names(esp)
