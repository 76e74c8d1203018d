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


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('{"seq": 1, "x": 2, "seq": 99999}', "seq"),
        ('{"a": {"b": 1, "b": 2}}', "b"),
        ('[{"ok": 1}, {"k": 1, "k": 1}]', "k"),
        ('{"a": 1, "\\u0061": 2}', "a"),  # the same key, spelled two ways
    ],
)
def test_a_duplicate_key_is_refused_naming_it(text: str, key: str) -> None:
    with pytest.raises(BadJson) as exc:
        jsontext.loads(text)
    assert str(exc.value) == f"key {key!r} appears twice"


def test_keys_may_repeat_in_different_objects() -> None:
    assert jsontext.loads('[{"a": 1}, {"a": 2, "b": {"a": 3}}]') == [
        {"a": 1},
        {"a": 2, "b": {"a": 3}},
    ]


def test_a_long_duplicate_key_is_shown_shortened() -> None:
    key = "k" * 100_000
    with pytest.raises(BadJson) as exc:
        jsontext.loads(f'{{"{key}": 1, "{key}": 2}}')
    assert len(str(exc.value)) < 120 and str(exc.value).endswith("appears twice")


def test_the_duplicate_check_is_linear() -> None:
    n = 200_000
    body = "{" + ", ".join(f'"k{i}": {i}' for i in range(n)) + ', "k0": 0}'
    t0 = time.perf_counter()
    with pytest.raises(BadJson, match="key 'k0' appears twice"):
        jsontext.loads(body)
    assert time.perf_counter() - t0 < 2.0


@pytest.mark.parametrize(
    ("value", "limit", "expected"),
    [
        ("abc", 80, "'abc'"),
        ("x" * 100, 10, "'xxxxxx..."),
        (list(range(10_000)), 20, "[0, 1, 2, 3, ...]"),
        ({"k" * 1000: "v" * 1000}, 30, None),
        (10**4000, 40, "an integer of about 4001 digits"),
    ],
    ids=["short", "long-string", "long-list", "long-dict", "huge-int"],
)
def test_shown_cuts_any_value_to_the_limit(value: object, limit: int, expected: str | None) -> None:
    text = jsontext.shown(value, limit)
    assert len(text) <= limit
    if expected is not None:
        assert text == expected
    else:
        assert text.endswith("...")


def test_shown_is_quick_on_a_huge_value() -> None:
    value = [{"message": "m" * 1000} for _ in range(20_000)]
    t0 = time.perf_counter()
    assert len(jsontext.shown(value)) <= 80
    assert time.perf_counter() - t0 < 0.1


def test_clipped_cuts_long_words_and_long_text() -> None:
    text = "interfaces[0].name: '" + "x" * 100_000 + "' is not a valid interface name"
    out = jsontext.clipped(text)
    assert len(out) < 200 and out.endswith("' is not a valid interface name")
    assert out.startswith("interfaces[0].name: 'xxx")
    spaced = "a " * 100_000
    assert len(jsontext.clipped(spaced, 300)) == 300
    assert jsontext.clipped("short and sweet") == "short and sweet"


@pytest.mark.parametrize(
    ("text", "path"),
    [
        ('{"name": "t", "expires_at": NaN}', ["expires_at"]),
        ('{"a": [1, {"b": Infinity}]}', ["a", 1, "b"]),
        ('{"a": {"b": 1e400}}', ["a", "b"]),
        ("[0, -1e999]", [1]),
        ("NaN", []),
        ('{"x": 1, "a": {"k": 1, "k": 2}}', ["a", "k"]),
        ('{"a": {"k": NaN, "k": 2}}', ["a", "k"]),  # the first trouble in the text
        ('{"a": 1, "b": [' + "9" * 5000 + "]}", ["b", 0]),
    ],
)
def test_a_refused_value_comes_with_its_path(text: str, path: list[str | int]) -> None:
    with pytest.raises(BadJson) as exc:
        jsontext.loads(text)
    assert exc.value.path == path


@pytest.mark.parametrize("text", ['{"a": ', b'"\xff"', "[" * 40 + "]" * 40])
def test_other_refusals_have_no_path(text: str | bytes) -> None:
    with pytest.raises(BadJson) as exc:
        jsontext.loads(text)
    assert exc.value.path is None


def test_an_integer_too_long_for_python_is_refused_in_our_words() -> None:
    # json's own error advises sys.set_int_max_str_digits(): not a message for a client
    with pytest.raises(BadJson) as exc:
        jsontext.loads('{"limit": ' + "9" * 5000 + "}")
    assert str(exc.value) == "a number of more than 4300 digits is out of range"
    assert exc.value.path == ["limit"]
    assert jsontext.loads("-" + "9" * 4300) == -int("9" * 4300)
