"""The daemon's log levels: --debug narrates our code and the protocol libraries, never
SQL statements with their parameters (peewee logs each one with its values at DEBUG: the
user name typed at a failed login, which may be a password, went to the journal and to
the diagnostics bundle). Run in a fresh interpreter: logging is configured once a process."""

from __future__ import annotations

import subprocess
import sys

import pytest

SCRIPT = """
import logging, sys
import peewee as pw
from appliance.daemon import setup_logging

setup_logging(debug=sys.argv[1] == "debug")
db = pw.SqliteDatabase(":memory:")
db.execute_sql("SELECT ?", ("hunter2-typed-as-a-user-name",))
logging.getLogger("appliance.web").debug("our debug line")
logging.getLogger("peewee").info("peewee info line")
logging.getLogger("pymodbus").debug("pymodbus debug line")
"""


def log_of(mode: str) -> str:
    cp = subprocess.run(
        [sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, timeout=60
    )
    assert cp.returncode == 0, cp.stderr
    return cp.stderr


@pytest.mark.parametrize("mode", ["debug", "normal"])
def test_sql_and_its_parameters_never_reach_the_log(mode: str) -> None:
    text = log_of(mode)
    assert "hunter2" not in text and "SELECT" not in text, text
    assert "peewee info line" in text  # peewee stays at INFO, not silenced


def test_debug_still_turns_on_our_debug_logs_and_the_protocol_libraries() -> None:
    text = log_of("debug")
    assert "our debug line" in text and "pymodbus debug line" in text, text
    text = log_of("normal")
    assert "our debug line" not in text and "pymodbus debug line" not in text, text
