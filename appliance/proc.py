"""The one way we run subprocesses: an argv list, a clean environment, logged."""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Sequence

from appliance.errors import ApplianceError

log = logging.getLogger(__name__)

_KEEP_ENV = ("PATH", "LANG", "LC_ALL", "HOME", "TERM", "PYTHONPATH", "VIRTUAL_ENV")


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
    """Run argv, capture text output; a failure raises `error` with stderr's last line."""
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
    except FileNotFoundError:
        raise error(f"{argv[0]}: command not found")
    except subprocess.TimeoutExpired:
        raise error(f"{argv[0]}: no answer within {timeout} s")
    if check and cp.returncode != 0:
        detail = (cp.stderr.strip() or cp.stdout.strip()).splitlines()
        last = detail[-1] if detail else f"exit status {cp.returncode}"
        raise error(f"{' '.join(argv[:4])}: {last}")
    return cp
