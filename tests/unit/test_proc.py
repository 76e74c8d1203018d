"""The subprocess runner on real children: a clean environment, and a stop that always ends
and reaps the child (SIGTERM, then SIGKILL for one that ignores it)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from appliance import proc
from appliance.errors import ApplianceError, LabError

# A child that ignores SIGTERM and says so once the handler is in place (before that, a
# SIGTERM would end it, and the kill path would go untested).
STUBBORN = (
    "import signal, sys, time\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "print('ready', flush=True)\n"
    "time.sleep(60)\n"
)


def stubborn() -> subprocess.Popen[bytes]:
    child = proc.spawn([sys.executable, "-c", STUBBORN], stdout=subprocess.PIPE)
    assert child.stdout is not None
    assert child.stdout.readline() == b"ready\n"
    return child


def reaped(pid: int) -> bool:
    """No zombie left: the pid is no child of ours any more."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True
    return False


def test_spawn_gives_the_child_a_clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SECRET_TOKEN", "s3cret")
    monkeypatch.setenv("APPLIANCE_DATA_DIR", "/tmp/data")
    child = proc.spawn(
        [sys.executable, "-c", "import json, os; print(json.dumps(dict(os.environ)))"],
        env={"EXTRA": "1"},
        stdout=subprocess.PIPE,
    )
    out, _ = child.communicate(timeout=30)
    env = json.loads(out)
    assert "SECRET_TOKEN" not in env
    assert env["APPLIANCE_DATA_DIR"] == "/tmp/data"
    assert env["EXTRA"] == "1"
    assert env["PATH"]
    assert child.returncode == 0


def test_spawn_passes_popen_arguments(tmp_path: Path) -> None:
    child = proc.spawn(
        [sys.executable, "-c", "import os; print(os.getcwd(), os.getsid(0) == os.getpid())"],
        cwd=tmp_path,
        start_new_session=True,
        stdout=subprocess.PIPE,
        text=True,
    )
    out, _ = child.communicate(timeout=30)
    assert out.split() == [str(tmp_path), "True"]


def test_spawn_of_a_missing_program_names_it() -> None:
    with pytest.raises(ApplianceError, match="no-such-program: command not found") as exc:
        proc.spawn(["no-such-program", "--flag"])
    assert type(exc.value) is ApplianceError
    assert isinstance(exc.value.__cause__, FileNotFoundError)
    with pytest.raises(LabError, match="no-such-program"):
        proc.spawn(["no-such-program"], error=LabError)


@pytest.mark.parametrize("kwarg", ["shell", "preexec_fn"])
def test_spawn_refuses_a_shell_and_preexec_fn(kwarg: str) -> None:
    value = {"shell": True, "preexec_fn": os.getpid}[kwarg]
    with pytest.raises(TypeError, match=kwarg):
        proc.spawn(["true"], **{kwarg: value})  # type: ignore[arg-type]


def test_stop_terminates_and_reaps() -> None:
    child = proc.spawn(["sleep", "60"])
    started = time.monotonic()
    assert proc.stop(child, grace=10) == -signal.SIGTERM
    assert time.monotonic() - started < 5  # SIGTERM was enough: no wait for the grace
    assert reaped(child.pid)


def test_stop_kills_a_child_that_ignores_sigterm() -> None:
    child = stubborn()
    started = time.monotonic()
    assert proc.stop(child, grace=0.5) == -signal.SIGKILL
    elapsed = time.monotonic() - started
    assert 0.5 <= elapsed < 0.5 + proc.KILL_WAIT_S
    assert reaped(child.pid)
    assert child.stdout is not None
    child.stdout.close()


def test_stop_is_idempotent_on_an_exited_child() -> None:
    child = proc.spawn([sys.executable, "-c", "raise SystemExit(3)"])
    child.wait(30)
    assert proc.stop(child, grace=1) == 3
    assert proc.stop(child, grace=1) == 3
    running = proc.spawn(["sleep", "60"])
    assert proc.stop(running, grace=5) == -signal.SIGTERM
    assert proc.stop(running, grace=5) == -signal.SIGTERM  # not signalled again


def test_stop_without_a_signal_waits_for_the_child_to_finish() -> None:
    child = proc.spawn(
        [sys.executable, "-c", "import sys; sys.stdin.read(); raise SystemExit(4)"],
        stdin=subprocess.PIPE,
    )
    assert child.stdin is not None
    child.stdin.close()  # it ends by itself once its input does
    assert proc.stop(child, grace=30, sig=None) == 4


def test_stop_with_sigkill_does_not_wait_for_the_grace() -> None:
    child = stubborn()
    started = time.monotonic()
    assert proc.stop(child, grace=30, sig=signal.SIGKILL) == -signal.SIGKILL
    assert time.monotonic() - started < proc.KILL_WAIT_S
    assert child.stdout is not None
    child.stdout.close()


def test_stop_all_shares_one_grace_period() -> None:
    children = [stubborn(), stubborn(), proc.spawn(["sleep", "60"])]
    started = time.monotonic()
    codes = proc.stop_all(children, grace=1.0)
    elapsed = time.monotonic() - started
    assert codes == [-signal.SIGKILL, -signal.SIGKILL, -signal.SIGTERM]
    assert 1.0 <= elapsed < 1.9  # one grace for all: one each would be 2 s and more
    assert all(reaped(c.pid) for c in children)
    for c in children[:2]:
        assert c.stdout is not None
        c.stdout.close()


def test_run_says_why_a_program_did_not_run() -> None:
    with pytest.raises(ApplianceError, match="command not found") as missing:
        proc.run(["no-such-program"])
    assert isinstance(missing.value.__cause__, FileNotFoundError)
    with pytest.raises(ApplianceError, match="no answer within") as slow:
        proc.run(["sleep", "10"], timeout=0.2)
    assert isinstance(slow.value.__cause__, subprocess.TimeoutExpired)


def test_run_gives_the_child_a_clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SECRET_TOKEN", "s3cret")
    cp = proc.run([sys.executable, "-c", "import os; print(os.environ.get('SECRET_TOKEN'))"])
    assert cp.stdout.strip() == "None"


def test_clean_env_hands_on_only_the_named_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "Europe/Berlin")
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.setenv("SECRET_TOKEN", "s3cret")
    env = proc.clean_env()
    assert env["TZ"] == "Europe/Berlin"
    assert "SSL_CERT_FILE" not in env and "SECRET_TOKEN" not in env
    assert proc.clean_env({"SECRET_TOKEN": "given"})["SECRET_TOKEN"] == "given"


def test_spawn_with_exact_env_hands_the_child_nothing_of_ours(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("APPLIANCE_SECRET_HINT", "x")
    monkeypatch.setenv("PYTHONPATH", "/nowhere")
    code = "import json, os; print(json.dumps(dict(os.environ)))"
    child = proc.spawn(
        [sys.executable, "-I", "-c", code],
        env={"ONLY": "this"},
        exact_env=True,
        stdout=subprocess.PIPE,
    )
    out, _ = child.communicate(timeout=30)
    seen = json.loads(out)
    seen.pop("LC_CTYPE", None)  # Python itself may set it for a C locale (PEP 538)
    assert seen == {"ONLY": "this"}
