"""The `appliance` command as a person uses it: exit codes, one-line errors, no traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "examples" / "demo.yaml"


def run(
    *args: str, data: Path | None = None, input: str | None = None
) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
    if data is not None:
        env["APPLIANCE_DATA_DIR"] = str(data / "data")
        env["APPLIANCE_RUN_DIR"] = str(data / "run")
    return subprocess.run(
        [sys.executable, "-m", "appliance", *args],
        capture_output=True,
        text=True,
        env=env,
        input=input,
        timeout=60,
        cwd=REPO,
    )


def one_line_error(cp: subprocess.CompletedProcess, code: int, *needles: str) -> str:
    assert cp.returncode == code, (cp.returncode, cp.stdout, cp.stderr)
    assert "Traceback" not in cp.stderr
    line = cp.stderr.strip()
    assert line.startswith("appliance: "), line
    for needle in needles:
        assert needle in line, line
    return line


def test_validate_demo_config() -> None:
    cp = run("config", "validate", str(DEMO))
    assert cp.returncode == 0, cp.stderr
    assert "valid (3 interfaces, 1 conduits" in cp.stdout


def test_validate_reports_path_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(DEMO.read_text().replace("services: [modbus]", "services: [modbus, tcp/0]"))
    cp = run("config", "validate", str(bad))
    line = one_line_error(cp, 2, "conduits[0].services[1]", "1-65535")
    assert f"{bad}:" in line and ":30:" in line  # file:line: path: message
    cp = run("config", "validate", "--json", str(bad))
    assert cp.returncode == 2
    err = json.loads(cp.stdout)["errors"][0]
    assert err["path"] == "conduits[0].services[1]" and err["line"] == 30


def test_validate_unknown_key_suggests(tmp_path: Path) -> None:
    bad = tmp_path / "typo.yaml"
    bad.write_text(
        DEMO.read_text().replace("addresses: [10.10.0.1/24]", "adresses: [10.10.0.1/24]")
    )
    one_line_error(
        run("config", "validate", str(bad)), 2, "interfaces[0].adresses", "did you mean 'addresses'"
    )


def test_validate_not_yaml_and_missing_file(tmp_path: Path) -> None:
    junk = tmp_path / "junk.yaml"
    junk.write_text("interfaces: [\n  - : :\n")
    one_line_error(run("config", "validate", str(junk)), 2, "not valid YAML")
    one_line_error(run("config", "validate", str(tmp_path / "nope.yaml")), 2, "no such file")


def test_revision_workflow_without_daemon(tmp_path: Path) -> None:
    assert "no revisions yet" in run("config", "log", data=tmp_path).stdout
    one_line_error(run("config", "commit", data=tmp_path), 3, "no draft revision")
    cp = run("config", "import", str(DEMO), "-m", "first", data=tmp_path)
    assert cp.returncode == 0 and "revision 1 stored as draft" in cp.stdout, cp.stderr
    cp = run("config", "commit", data=tmp_path)
    assert cp.returncode == 0, cp.stderr
    assert "net role is not running" in cp.stdout
    one_line_error(run("config", "confirm", data=tmp_path), 4, "confirmed once applied")
    # the revision waits for the net role; a second commit is refused meanwhile
    changed = tmp_path / "changed.yaml"
    changed.write_text(DEMO.read_text().replace("services: [modbus]", "services: [modbus, ping]"))
    assert run("config", "import", str(changed), data=tmp_path).returncode == 0
    one_line_error(run("config", "commit", data=tmp_path), 4, "revision 1 is pending")
    cp = run("config", "diff", "1", "2", data=tmp_path)
    assert cp.returncode == 0 and "~ conduit scada-modbus: services" in cp.stdout
    assert "+    - ping" in cp.stdout.replace("+  - ping", "+    - ping")
    exported = run("config", "export", "2", data=tmp_path).stdout
    assert exported == changed.read_text()
    audit = json.loads(run("audit", "list", "--json", "-n", "1", data=tmp_path).stdout)
    assert audit[0]["action"] == "config.export" and audit[0]["target"] == "revision 2"
    log = run("config", "log", "--json", data=tmp_path)
    states = {r["id"]: r["state"] for r in json.loads(log.stdout)}
    assert states == {1: "pending", 2: "draft"}
    one_line_error(run("config", "export", "9", data=tmp_path), 3, "no revision 9")


def test_status_without_daemon(tmp_path: Path) -> None:
    cp = run("status", data=tmp_path)
    assert cp.returncode == 0 and "NOT RUNNING" in cp.stdout
    data = json.loads(run("status", "--json", data=tmp_path).stdout)
    assert data["net"]["alive"] is False and data["running"] is None
    assert data["health"]["state"] in ("booting", "fault")  # no net role: never "ok"


def test_unknown_role_and_bad_data_dir(tmp_path: Path) -> None:
    one_line_error(run("run", "--roles", "bogus", data=tmp_path), 1, "unknown role 'bogus'")
    blocker = tmp_path / "file"
    blocker.write_text("")
    cp = run("config", "log", "--data-dir", str(blocker / "sub"))
    assert cp.returncode != 0 and "Traceback" not in cp.stderr


def test_net_role_refuses_the_host_namespace(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run in-process (never as a daemon here): the guard must refuse the host's namespace."""
    from appliance import daemon
    from appliance.errors import PermissionDenied

    assert daemon.named_netns() is None  # pytest runs in the machine's own namespace
    monkeypatch.delenv("APPLIANCE_OWNS_HOST", raising=False)
    with pytest.raises(PermissionDenied, match="machine's own network namespace"):
        daemon.guard_netns()


@pytest.mark.parametrize("command", ["export", "diff", "commit", "rollback"])
def test_a_huge_revision_number_is_not_found(tmp_path: Path, command: str) -> None:
    # it was "internal error: OverflowError" (exit 70): no SQLite integer holds it
    assert run("config", "import", str(DEMO), data=tmp_path).returncode == 0
    cp = run("config", command, "1000000000000000000000000000000", data=tmp_path)
    one_line_error(cp, 3, "no revision 1000000000000000000000000000000")


@pytest.mark.parametrize("command", ["validate", "import"])
def test_a_missing_file_or_a_directory_is_exit_2(tmp_path: Path, command: str) -> None:
    cp = run("config", command, str(tmp_path / "nope.yaml"), data=tmp_path)
    one_line_error(cp, 2, f"{tmp_path / 'nope.yaml'}: no such file")
    cp = run("config", command, str(tmp_path), data=tmp_path)
    one_line_error(cp, 2, f"{tmp_path}: cannot read")


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "-1", "1e400", "0", "9.9", "86401", "x"])
def test_a_bad_confirm_window_is_one_line_naming_the_option(tmp_path: Path, value: str) -> None:
    # nan, inf and 1e400 were exit 4 (a Conflict), -1 a click usage text
    assert run("config", "import", str(DEMO), data=tmp_path).returncode == 0
    cp = run("config", "commit", "--no-wait", "--confirm-within", value, data=tmp_path)
    one_line_error(cp, 2, "--confirm-within: ", "10-86400")
    assert "pending" not in run("config", "log", data=tmp_path).stdout


def test_the_cli_confirm_window_is_the_revisions_one() -> None:
    from appliance.cli import CONFIRM_WINDOW_MAX_S
    from appliance.state.revisions import MAX_CONFIRM_WINDOW_S

    assert CONFIRM_WINDOW_MAX_S == MAX_CONFIRM_WINDOW_S


@pytest.mark.parametrize(
    ("at", "needle"),
    [("tomorrow", "--at: 'tomorrow' is not an ISO time"), ("2027-01-31T18:00", "--at: needs a")],
)
def test_a_bad_render_time_is_exit_2(at: str, needle: str) -> None:
    one_line_error(run("net", "render", str(DEMO), "--at", at), 2, needle)
