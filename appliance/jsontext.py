"""Untrusted JSON text in, plain data out: bounded size and depth, no NaN or Infinity.

Python's `json` accepts `NaN`, `Infinity` and `1e999` (which becomes infinity), and
recurses once per nesting level, so a body of a few kilobytes of `[[[[…` raises
RecursionError deep inside the decoder (a 500, not a 400). Every JSON document that
comes from outside the process (the web API's bodies, the fleet's heartbeats) goes
through `loads`, which refuses each of these with a `BadJson` that says why. It also
refuses a key that appears twice in one object: `json` keeps the last one silently, so
`{"seq": 1, …, "seq": 99999}` would mean what the last writer wanted, not what a reader
of the first key sees.

`shown(value)` is how a message quotes a value it got: a repr cut to 80 characters,
so a refusal never echoes a megabyte of input into a response or a log line; `clipped`
cuts a finished message that may hold such quotes.
"""

from __future__ import annotations

import json
import math
import re
import reprlib
from typing import Any

MAX_DEPTH = 32  # our documents nest 6 levels at most; 32 leaves room and stays far from C limits
MAX_BYTES = 4 * 1024 * 1024
SHOWN_MAX = 80  # characters of a value a message quotes


def _bounded_repr() -> reprlib.Repr:
    """reprlib's bounded repr: it never builds the repr of a whole large container."""
    r = reprlib.Repr()  # Python 3.11: the limits are attributes, not arguments
    r.maxlevel = 3
    r.maxdict = r.maxlist = r.maxtuple = r.maxset = r.maxfrozenset = r.maxdeque = 4
    r.maxstring = r.maxother = SHOWN_MAX
    r.maxlong = 40
    return r


_repr = _bounded_repr()


def shown(value: Any, limit: int = SHOWN_MAX) -> str:
    """`value` as a message quotes it: its repr, at most `limit` characters, cut ones
    ending in `...` (the repr of a 600-event list or a 100 kB string is not a message)."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 10**60:
        # str() of an int past 4300 digits raises; its size is what a reader needs
        text = f"an integer of about {int(value.bit_length() * 0.30103) + 1} digits"
    else:
        text = _repr.repr(value)
    return text if len(text) <= limit else text[: max(0, limit - 3)] + "..."


class BadJson(ValueError):
    """The text is not JSON we accept; `str()` is one line a person can read.

    When a value is to blame (a NaN or Infinity, a number out of range, a key twice in one
    object), `path` is where it is (`["tokens", 0, "expires_at"]`, `[]` for the top) and
    `literal` the number as written (None for a repeated key); else both are None (not
    UTF-8, too deep, not JSON). They are found when asked for, by a second pass over the
    text, so a refusal nobody names costs one pass."""

    def __init__(self, message: str, text: str | None = None) -> None:
        super().__init__(message)
        self._text = text
        self._where: tuple[list[str | int], str | None] | None = None

    def _found(self) -> tuple[list[str | int], str | None] | None:
        if self._text is not None:
            self._where, self._text = _where(self._text), None
        return self._where

    @property
    def path(self) -> list[str | int] | None:
        found = self._found()
        return found[0] if found else None

    @property
    def literal(self) -> str | None:
        found = self._found()
        return found[1] if found else None


def _constant(name: str) -> Any:
    raise BadJson(f"{name} is not a JSON number")


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise BadJson(f"the number {text[:40]} is out of range")
    return value


MAX_INT_DIGITS = 4300  # Python's own limit for int(str) (sys.get_int_max_str_digits)


class _Bad:
    """Stands for the number that made `loads` refuse the text (in `_where`'s pass)."""

    def __init__(self, literal: str) -> None:
        self.literal = literal


class _Twice:
    """Stands for an object in which `key` appears twice (in `_where`'s pass)."""

    def __init__(self, key: str, pairs: list[tuple[str, Any]]) -> None:
        self.key = key
        self.pairs = pairs


_REPEATED = object()  # where the repeated key is, in `_where`'s walk


def _marked_object(pairs: list[tuple[str, Any]]) -> Any:
    out = dict(pairs)
    if len(out) == len(pairs):
        return out
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            return _Twice(key, pairs)
        seen.add(key)
    return out


def _where(text: str) -> tuple[list[str | int], str | None] | None:
    """(path, the number as written or None for a repeated key) of the first value `loads`
    refuses in `text` (a NaN, a number out of range, a key twice in one object): a second
    pass that puts markers in their place, run only after a refusal; None when the text
    fails for another reason."""
    try:
        data = json.loads(
            text,
            parse_constant=_Bad,
            parse_float=lambda t: 0 if math.isfinite(float(t)) else _Bad(t),
            parse_int=lambda t: _Bad(t) if len(t) - t.startswith("-") > MAX_INT_DIGITS else 0,
            object_pairs_hook=_marked_object,
        )
    except (ValueError, RecursionError):
        return None
    # depth-first in document order, without recursion (the depth is bounded, but cheap)
    stack: list[tuple[Any, list[str | int]]] = [(data, [])]
    while stack:
        value, path = stack.pop()
        if isinstance(value, _Bad):
            return path, value.literal
        if isinstance(value, _Twice):
            before = []
            for key, item in value.pairs:
                if key == value.key:
                    break
                before.append((item, [*path, key]))
            stack.append((_REPEATED, [*path, value.key]))  # after what comes before it
            stack.extend(reversed(before))
        elif value is _REPEATED:
            return path, None
        elif isinstance(value, dict):
            stack.extend((item, [*path, key]) for key, item in reversed(value.items()))
        elif isinstance(value, list):
            stack.extend((item, [*path, i]) for i, item in reversed(list(enumerate(value))))
    return None


_LONG_WORD = re.compile(rf"\S{{{SHOWN_MAX + 1},}}")


def clipped(text: str, limit: int = 300) -> str:
    """A message that may quote input (a path with a 100 kB key, a repr of a value) cut to
    size: each run of more than 80 non-blank characters to 80, then the whole to `limit`."""
    if len(text) <= SHOWN_MAX:
        return text
    # the last character stays: the closing quote or bracket of what was quoted
    text = _LONG_WORD.sub(lambda m: m.group()[: SHOWN_MAX - 4] + "..." + m.group()[-1], text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object as a dict, or BadJson when a key appears twice (linear: one dict,
    and a set only when the dict came out shorter than the pairs)."""
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise BadJson(f"key {shown(key)} appears twice")
            seen.add(key)
    return out


def depth_of(text: str) -> int:
    """How deeply `[`/`{` nest in `text`, outside strings (linear, no recursion)."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def loads(raw: bytes | str, *, max_depth: int = MAX_DEPTH, max_bytes: int = MAX_BYTES) -> Any:
    """The data in `raw`, or BadJson: not UTF-8, too large, nested deeper than
    `max_depth`, a NaN/Infinity, a number out of float range or of more than
    MAX_INT_DIGITS digits, a key twice in one object (these three with the `path` of the
    value), or not JSON."""
    if len(raw) > max_bytes:
        raise BadJson(f"is larger than {max_bytes} bytes")
    if isinstance(raw, bytes):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise BadJson("is not UTF-8") from None
    else:
        text = raw
    if depth_of(text) > max_depth:
        raise BadJson(f"nests deeper than {max_depth} levels")
    try:
        return json.loads(
            text,
            parse_constant=_constant,
            parse_float=_float,
            object_pairs_hook=_object,
        )
    except BadJson as e:
        raise BadJson(str(e), text) from None
    except ValueError as e:
        if "integer string conversion" not in str(e):
            raise BadJson(f"is not valid JSON ({e})") from None
        # int()'s own message advises sys.set_int_max_str_digits(): not one for a client
        raise BadJson(
            f"a number of more than {MAX_INT_DIGITS} digits is out of range", text
        ) from None
    except RecursionError as e:
        raise BadJson(f"is not valid JSON ({e})") from None
