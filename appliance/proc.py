"""The one way we run subprocesses: an argv list, a clean environment, logged.

`run` runs a command to its end and captures its output; `spawn` starts a child
that the caller keeps (a role, the HTTPS server) and `stop` ends one: SIGTERM,
a grace period, then SIGKILL, and always reaped, so no zombie and no orphan
holding a port is left behind. `stop_all` does the same for several children at
once, within one grace period.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from typing import Any

from appliance.errors import ApplianceError

log = logging.getLogger(__name__)

# Popen arguments `spawn` refuses: a shell string is what the argv list avoids, and
# preexec_fn runs Python between fork and exec, which is unsafe in a threaded process.
_REFUSED = ("shell", "preexec_fn")
# What a child keeps of our environment (and every APPLIANCE_* variable): where to find
# programs and Python, the locale, and what our own children read besides: where SQLite
# and the SQL worker put temporary files (field/api.py), the zone of local times (syslog
# lines, journalctl in diagnostics), the CA store the fleet and webhook clients trust
# (ssl.create_default_context).
_KEEP_ENV = (
    *("PATH", "LANG", "LC_ALL", "HOME", "TERM", "PYTHONPATH", "VIRTUAL_ENV"),
    *("TMPDIR", "TZ", "SSL_CERT_FILE", "SSL_CERT_DIR"),
)
# After SIGKILL: how long to wait for the kernel to end the child (one stuck in an
# uninterruptible sleep may take longer; `stop` then gives up and says so).
KILL_WAIT_S = 5.0


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k in _KEEP_ENV or k.startswith("APPLIANCE_")}
    env.setdefault("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
    if extra:
        env.update(extra)
    return env


def run(
    argv: Sequence[str],
    *,
    check: bool = True,
    input: str | None = None,
    timeout: float | None = 60,
    env: dict[str, str] | None = None,
    error: type[ApplianceError] = ApplianceError,
) -> subprocess.CompletedProcess[str]:
    """Run argv, capture text output; a failure raises `error` with stderr's last line.

    A program that is not there or does not answer in time raises `error` too, from
    the FileNotFoundError or TimeoutExpired (its `__cause__`), for a caller that
    tells the two apart."""
    log.debug("run: %s", " ".join(argv))
    try:
        cp = subprocess.run(
            list(argv),
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=clean_env(env),
            check=False,
        )
    except FileNotFoundError as e:
        raise error(f"{argv[0]}: command not found") from e
    except subprocess.TimeoutExpired as e:
        raise error(f"{argv[0]}: no answer within {timeout} s") from e
    if check and cp.returncode != 0:
        detail = (cp.stderr.strip() or cp.stdout.strip()).splitlines()
        last = detail[-1] if detail else f"exit status {cp.returncode}"
        raise error(f"{' '.join(argv[:4])}: {last}")
    return cp


def spawn(
    argv: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    exact_env: bool = False,
    error: type[ApplianceError] = ApplianceError,
    **popen_kwargs: Any,
) -> subprocess.Popen[bytes]:
    """Start argv (a list, never a shell string) with `clean_env(env)` and hand back the
    child, which the caller ends with `stop`. With `exact_env` the child gets `env` and
    nothing of ours (a sandboxed worker that must not see PYTHONPATH or APPLIANCE_*).

    `popen_kwargs` go to Popen as they are (stdin/stdout/stderr, cwd, start_new_session,
    close_fds ...), except `shell` and `preexec_fn`, which raise TypeError (see
    `_REFUSED`). A program that is not there raises `error` naming it: by default the
    base class (500), as a missing program is the unit's fault, not the asker's."""
    refused = sorted(k for k in popen_kwargs if k in _REFUSED)
    if refused:
        raise TypeError(f"spawn() does not take {', '.join(refused)}")
    log.debug("spawn: %s", " ".join(argv))
    try:
        child_env = dict(env or {}) if exact_env else clean_env(env)
        child = subprocess.Popen(list(argv), env=child_env, **popen_kwargs)
    except FileNotFoundError as e:
        raise error(f"{argv[0]}: command not found") from e
    log.debug("spawned pid %d: %s", child.pid, argv[0])
    return child


def _send(child: subprocess.Popen[Any], sig: int) -> None:
    # Popen does not signal a child it has reaped; one that exited since is not an error
    with contextlib.suppress(ProcessLookupError):
        child.send_signal(sig)


def stop_all(
    children: Sequence[subprocess.Popen[Any]],
    grace: float,
    *,
    sig: int | None = signal.SIGTERM,
) -> list[int | None]:
    """End every child: `sig` to each (None: send nothing, let them finish on their own),
    up to `grace` seconds in all for them to exit, then SIGKILL to those still running;
    each is reaped. Already exited children are only reaped, so calling it twice is
    harmless.

    Returns each child's exit status, as Popen gives it (negative: the signal that ended
    it); None for one still there `KILL_WAIT_S` after SIGKILL (stuck in the kernel)."""
    running = [c for c in children if c.poll() is None]
    if sig is not None:
        for child in running:
            _send(child, sig)
    if sig != signal.SIGKILL:
        deadline = time.monotonic() + grace
        for child in running:
            try:
                child.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("pid %d did not stop in %g s: killing it", child.pid, grace)
                _send(child, signal.SIGKILL)
    for child in running:
        try:
            child.wait(KILL_WAIT_S)
        except subprocess.TimeoutExpired:
            log.error("pid %d is still there %g s after SIGKILL", child.pid, KILL_WAIT_S)
    return [c.returncode for c in children]


def stop(
    child: subprocess.Popen[Any], grace: float, *, sig: int | None = signal.SIGTERM
) -> int | None:
    """End one child as `stop_all` does: `sig` (SIGTERM), `grace` seconds, SIGKILL, reaped.
    Its exit status; None only if it outlived SIGKILL."""
    return stop_all([child], grace, sig=sig)[0]
