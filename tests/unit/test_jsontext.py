"""Untrusted JSON: depth, size, NaN/Infinity and out-of-range numbers are refused, linearly."""

from __future__ import annotations

import time

import pytest

from appliance import jsontext
from appliance.jsontext import BadJson


def test_ordinary_documents_pass() -> None:
    assert jsontext.loads(b'{"a": [1, 2.5, "x[{", {"b": null}]}') == {
        "a": [1, 2.5, "x[{", {"b": None}]
    }
    assert jsontext.loads('"\\"[[["') == '"[[['


@pytest.mark.parametrize("text", ["NaN", "[Infinity]", '{"x": -Infinity}', "1e999", "[-1e400]"])
def test_nan_infinity_and_overflowing_numbers_are_refused(text: str) -> None:
    with pytest.raises(BadJson):
        jsontext.loads(text)


def test_deep_nesting_is_refused_quickly() -> None:
    body = "[" * 200_000 + "]" * 200_000
    t0 = time.perf_counter()
    with pytest.raises(BadJson, match="nests deeper than 32"):
        jsontext.loads(body)
    assert time.perf_counter() - t0 < 1.0
    assert jsontext.loads("[" * 32 + "]" * 32) is not None


def test_size_and_encoding() -> None:
    with pytest.raises(BadJson, match="larger than 10 bytes"):
        jsontext.loads(b"[" + b"1," * 10 + b"1]", max_bytes=10)
    with pytest.raises(BadJson, match="not UTF-8"):
        jsontext.loads(b'"\xff"')
    with pytest.raises(BadJson, match="not valid JSON"):
        jsontext.loads(b"{")
