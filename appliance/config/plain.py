"""Validation problems as plain sentences: the one place the CLI, the API and the UI share.

pydantic words its errors for programmers ("list should have at least 1 item after
validation, not 0", "input should be a valid integer"), and the standard library's
ipaddress adds its own ("... does not appear to be an IPv4 or IPv6 network"). A person
reading `conduits[2].services: ...` wants "give at least one service". `sentence(err)`
turns one pydantic error (a dict of `ValidationError.errors()`) into that sentence; the
path of the field is said by the caller, next to it. Messages our own validators raise
(`ValueError("...")`) are already plain: they lose pydantic's "Value error, " prefix and
any library detail in parentheses, nothing else.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Mapping
from typing import Any, get_args, get_origin

from pydantic import BaseModel

# Phrases of pydantic and of the libraries under it that must never reach a person: the
# unit test checks every message of many bad inputs against this list.
JARGON = (
    "validation",
    "pydantic",
    "does not appear to be",
    "should have at least",
    "should have at most",
    "string should",
    "input should",
    "value error",
    "dictionary or instance",
    "field required",
    "extra inputs",
    "unable to parse",
    "after validation",
)

# What a list field holds, for "give at least one ...".
_ITEMS = {
    "services": "service (e.g. modbus or tcp/8080)",
    "from": "IT host or network",
    "from_": "IT host or network",
    "to": "OT host or network",
    "addresses": "address",
    "tags": "tag",
    "interfaces": "interface",
    "unit_ids": "unit id",
    "function_codes": "function code",
    "ranges": "range",
    "members": "member",
    "ports": "port",
    "servers": "server",
}
_PLURAL = {"address": "addresses"}
# fields whose wrong value is never repeated back (the setup form's field is `code`)
_SECRET = re.compile(r"^code$|pass|secret|token|(^|_)key($|_)|psk|credential", re.IGNORECASE)
_GIVEN_MAX = 40  # characters of a wrong value repeated in the message


def sentence(err: Mapping[str, Any], root: type[BaseModel] | None = None) -> str:
    """One pydantic error as a plain sentence (lower case, no path: the caller names it).
    `root`: the model validated, so an unknown key can say which keys there are."""
    kind = str(err.get("type", ""))
    loc = tuple(err.get("loc") or ())
    ctx = err.get("ctx") or {}
    field = _field(loc)
    value = err.get("input")
    if kind == "missing":
        return "is required"
    if kind == "extra_forbidden":
        return _unknown_key(loc, root)
    if kind in ("value_error", "assertion_error"):
        return _own(str(ctx.get("error", err.get("msg", ""))), err)
    if kind in ("too_short", "too_long"):
        return _count(kind, field, ctx)
    if kind in ("string_too_short", "string_too_long"):
        return _length(kind, ctx)
    if kind in ("greater_than_equal", "less_than_equal", "greater_than", "less_than"):
        return _bound(kind, field, ctx, value)
    if kind in ("literal_error", "enum"):
        return f"must be {_choices(str(ctx.get('expected', '')))}{_not(field, value)}"
    if kind == "string_pattern_mismatch":
        return f"{_not_allowed(field, value)}"
    if kind == "finite_number":
        return f"must be a finite number{_not(field, value)}"
    if kind == "timezone_aware":
        return "needs a time zone, e.g. 2027-01-31T18:00:00Z"
    if kind.startswith(("datetime", "date_", "time_")) or kind in ("date_type", "time_type"):
        return f"must be a time like 2027-01-31T18:00:00Z{_not(field, value)}"
    typed = _TYPES.get(kind)
    if typed:
        return f"must be {typed}{_not(field, value)}"
    if kind in ("model_type", "model_attributes_type", "dataclass_type", "dict_type"):
        return f"must be a set of keys and values (a YAML mapping or JSON object){_not_kind(value)}"
    if kind.startswith("union_tag"):
        return "is not one of the kinds allowed here"
    return _fallback(str(err.get("msg", kind)))


_TYPES = {
    "string_type": "text",
    "string_unicode": "text",
    "string_not_ascii": "plain ASCII text",
    "int_type": "a whole number",
    "int_parsing": "a whole number",
    "int_from_float": "a whole number",
    "int_parsing_size": "a whole number of reasonable size",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "list_type": "a list",
    "tuple_type": "a list",
    "set_type": "a list",
    "frozen_set_type": "a list",
    "iterable_type": "a list",
    "none_required": "empty (null)",
    "url_parsing": "a URL like https://host/path",
    "url_type": "a URL like https://host/path",
    "url_scheme": "a URL with an allowed scheme",
    "uuid_parsing": "an id like 123e4567-e89b-12d3-a456-426614174000",
    "decimal_parsing": "a number",
}


def _field(loc: tuple[Any, ...]) -> str:
    """The last named part of the path (`services` of `conduits[0].services[1]`)."""
    return next((str(p) for p in reversed(loc) if not isinstance(p, int)), "")


def _shown(field: str, value: Any) -> str | None:
    """A wrong value as it may be repeated to the person, or None (secrets, long text)."""
    if _SECRET.search(field) or isinstance(value, Mapping | list | tuple) or value is None:
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    text = repr(value) if isinstance(value, str) else str(value).lower()
    return text if len(text) <= _GIVEN_MAX else None


def _not(field: str, value: Any) -> str:
    shown = _shown(field, value)
    return f", not {shown}" if shown is not None else _not_kind(value)


def _not_kind(value: Any) -> str:
    if isinstance(value, Mapping):
        return ", not a mapping"
    if isinstance(value, list | tuple):
        return ", not a list"
    if value is None:
        return ", not empty (null)"
    return ""


def _choices(expected: str) -> str:
    """pydantic's "'it', 'ot' or 'mgmt'" as "it, ot or mgmt" (one choice: itself)."""
    items = re.findall(r"'([^']*)'|(\S+)", expected.replace(" or ", ", "))
    names = [a or b.strip(",") for a, b in items if (a or b.strip(","))]
    if not names:
        return "one of the values allowed here"
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def _count(kind: str, field: str, ctx: Mapping[str, Any]) -> str:
    item = _ITEMS.get(field, "item")
    if kind == "too_short":
        n = int(ctx.get("min_length", 1))
        if n <= 1:
            return f"give at least one {item}"
        return f"give at least {n} {_plural(item)}"
    n = int(ctx.get("max_length", 0))
    return f"at most {n} {_plural(item) if n != 1 else item} here"


def _plural(item: str) -> str:
    head, sep, tail = item.partition(" (")
    many = _PLURAL.get(head, head + "s")
    return f"{many}{sep}{tail}" if sep else many


def _length(kind: str, ctx: Mapping[str, Any]) -> str:
    if kind == "string_too_short":
        n = int(ctx.get("min_length", 1))
        return "may not be empty" if n <= 1 else f"needs at least {n} characters"
    n = int(ctx.get("max_length", 0))
    return f"is too long: at most {n} characters"


def _bound(kind: str, field: str, ctx: Mapping[str, Any], value: Any) -> str:
    if "port" in field and kind in ("greater_than_equal", "less_than_equal"):
        return _port_sentence(value)
    word, key = {
        "greater_than_equal": ("at least", "ge"),
        "less_than_equal": ("at most", "le"),
        "greater_than": ("more than", "gt"),
        "less_than": ("less than", "lt"),
    }[kind]
    return f"must be {word} {_num(ctx.get(key))}{_not(field, value)}"


def _port_sentence(value: Any) -> str:
    shown = _num(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
    return f"{shown} is not a port: ports are 1-65535" if shown else "ports are 1-65535"


def _num(v: Any) -> str:
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def _not_allowed(field: str, value: Any) -> str:
    shown = _shown(field, value)
    what = f"{shown} " if shown else ""
    if field in ("a", "b", "revision"):
        return f"{what}is not a revision: give a number, draft, running, pending or confirmed"
    return f"{what}is not written as this field allows"


# Our own validators' words, with the library detail some carry in parentheses dropped and
# the port sentence made the same everywhere ("port must be 1-65535 (got 0)" of services).
_LIB_DETAIL = re.compile(
    r"\s*\((?:[^()]*?does not appear to be[^()]*|[^()]*?Expected \d+ octets[^()]*"
    r"|[^()]*?not permitted in[^()]*|[^()]*?invalid literal[^()]*)\)"
)
_PORT_GOT = re.compile(r"\bport must be 1-65535 \(got (-?\d+)\)")


def _own(msg: str, err: Mapping[str, Any]) -> str:
    for prefix in ("Value error, ", "Assertion failed, "):
        msg = msg.removeprefix(prefix)
    msg = _LIB_DETAIL.sub("", msg)
    msg = _PORT_GOT.sub(lambda m: f"{m.group(1)} is not a port: ports are 1-65535", msg)
    return _fallback(msg) if msg else "is not valid here"


def _fallback(msg: str) -> str:
    """Any other text: pydantic's own leading words made plain, first letter lower case."""
    for old, new in (
        ("Input should be ", "must be "),
        ("input should be ", "must be "),
        ("String should ", "must "),
        ("Value error, ", ""),
    ):
        msg = msg.replace(old, new)
    msg = msg.replace(" after validation", "")
    return msg[:1].lower() + msg[1:] if msg else "is not valid here"


def _unknown_key(loc: tuple[Any, ...], root: type[BaseModel] | None) -> str:
    key = str(loc[-1]) if loc else ""
    model = model_at(root, loc[:-1]) if root is not None else None
    if model is None:
        return "unknown key"
    allowed = [f.alias or n for n, f in model.model_fields.items()]
    close = difflib.get_close_matches(key, allowed, n=1)
    hint = f"did you mean {close[0]!r}?" if close else f"allowed: {', '.join(allowed)}"
    return f"unknown key ({hint})"


def model_at(root: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The model class found by walking `loc` from `root` (for 'did you mean')."""
    current: Any = root
    for part in loc:
        if isinstance(part, int):
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        fld = next(
            (f for n, f in current.model_fields.items() if (f.alias or n) == part),
            None,
        )
        if fld is None:
            return None
        current = fld.annotation
        while get_origin(current) is not None or get_args(current):
            args = [a for a in get_args(current) if a is not type(None)]
            if not args:
                break
            current = args[0]
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None
