"""Untrusted JSON text in, plain data out: bounded size and depth, no NaN or Infinity.

Python's `json` accepts `NaN`, `Infinity` and `1e999` (which becomes infinity), and
recurses once per nesting level, so a body of a few kilobytes of `[[[[…` raises
RecursionError deep inside the decoder (a 500, not a 400). Every JSON document that
comes from outside the process (the web API's bodies, the fleet's heartbeats) goes
through `loads`, which refuses each of these with a `BadJson` that says why.
"""

from __future__ import annotations

import json
import math
from typing import Any

MAX_DEPTH = 32  # our documents nest 6 levels at most; 32 leaves room and stays far from C limits
MAX_BYTES = 4 * 1024 * 1024


class BadJson(ValueError):
    """The text is not JSON we accept; `str()` is one line a person can read."""


def _constant(name: str) -> Any:
    raise BadJson(f"{name} is not a JSON number")


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise BadJson(f"the number {text[:40]} is out of range")
    return value


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
    `max_depth`, a NaN/Infinity or a number out of float range, or not JSON."""
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
        return json.loads(text, parse_constant=_constant, parse_float=_float)
    except BadJson:
        raise
    except (ValueError, RecursionError) as e:
        raise BadJson(f"is not valid JSON ({e})") from None
