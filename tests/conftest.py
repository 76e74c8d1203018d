"""Settings for every test folder: hypothesis' profiles (see propkit), and no skip in CI.

CI runs as root on a machine that `scripts/setup-host --test` prepared, so everything a
test needs is there: a test that skips in CI (CI=true) hides a missing install step or a
broken fixture, and is reported as a failure with the reason it gave.
"""

from __future__ import annotations

import os
from typing import Any

import propkit  # noqa: F401  (registers and loads the hypothesis profile)
import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Any:
    outcome = yield
    report = outcome.get_result()
    if IN_CI and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, where every test must run: {reason}"
