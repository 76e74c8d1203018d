"""Building blocks shared by every section's models (kept apart to avoid import cycles).

Free text in a configuration ends up in the UI, the heartbeat, syslog lines, HTTP
requests and SQLite rows, so it is one of a few string types here: no control (Cc) or
format (Cf) characters, no lone surrogates, and a length cap. Only text meant to hold
several lines (descriptions, the login banner, PEM blocks) may contain tab and newline.

Numbers and booleans are strict (a boolean is not a number, a string is not a boolean):
YAML and JSON give real ints, floats and booleans, and lax coercion let `version: true`
hash the same as `version: 1`.
"""

from __future__ import annotations

import ipaddress
import math
import re
import unicodedata
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    StringConstraints,
)
from pydantic import Strict as _StrictFlag

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,47}$")
_LABEL = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")


@dataclass(frozen=True)
class Finding:
    """An error or a warning about a document, with the path it concerns: the config check
    and each section's own cross-document check (`config.field.check_field`) make them."""

    path: str
    message: str


class Strict(BaseModel):
    """Unknown keys are errors; models are immutable once validated."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def check_name(v: str, what: str) -> str:
    if not NAME_RE.fullmatch(v):  # fullmatch: `$` alone lets a trailing newline through
        raise ValueError(
            f"{what} {v!r} must be 1-48 characters of a-z, 0-9, '-' and '_', starting "
            "with a letter or digit"
        )
    return v


def _refuse_controls(v: str, multiline: bool) -> str:
    for i, ch in enumerate(v):
        if multiline and ch in "\t\n":
            continue
        cat = unicodedata.category(ch)
        if cat in ("Cc", "Cf", "Cs") or (not multiline and cat in ("Zl", "Zp")):
            kind = {"Cf": "format", "Cs": "surrogate"}.get(cat, "control")
            lines = "" if multiline else "; this text is one line"
            raise ValueError(
                f"contains the {kind} character U+{ord(ch):04X} at position {i + 1}{lines}"
            )
    return v


def _one_line(v: str) -> str:
    return _refuse_controls(v, multiline=False)


def _lines(v: str) -> str:
    return _refuse_controls(v, multiline=True)


# One line: names, owners, hosts, paths, node ids, secrets, URLs.
Line = Annotated[str, StringConstraints(max_length=256), AfterValidator(_one_line)]
Secret = Annotated[str, StringConstraints(max_length=1024), AfterValidator(_one_line)]
UrlText = Annotated[str, StringConstraints(max_length=2048), AfterValidator(_one_line)]
# Several lines: descriptions, reasons, the login banner.
Text = Annotated[str, StringConstraints(max_length=2000), AfterValidator(_lines)]
# PEM text (a certificate chain) or a file path.
Pem = Annotated[str, StringConstraints(max_length=65536), AfterValidator(_lines)]


def refuse_bool(v: Any) -> Any:
    if isinstance(v, bool):
        raise ValueError(f"must be a number, not {str(v).lower()}")
    return v


def not_finite(v: float) -> str | None:
    """What is wrong with `v` as a scale, offset or limit, or None when it is a finite number:
    NaN and infinity pass a float type, but no scaling or comparison means anything with them."""
    return None if math.isfinite(v) else f"must be a finite number, not {v}"


def refuse_not_finite(v: Any) -> Any:
    """Before a float's bounds: `.nan` said "less than or equal to 60" (NaN fails every
    comparison) and `.inf` passed a lone `ge=0`; both are one error saying what is wrong."""
    if isinstance(v, float) and (problem := not_finite(v)):
        raise ValueError(problem)
    return v


# Strict numbers: a boolean, a string or (for Int) a float is refused; an int is a fine Float.
# Every Float is finite (YAML's .nan, .inf and 1e999 are refused before the bounds).
Int = Annotated[int, BeforeValidator(refuse_bool), _StrictFlag()]
Float = Annotated[
    float, BeforeValidator(refuse_not_finite), BeforeValidator(refuse_bool), _StrictFlag()
]
Bool = Annotated[bool, _StrictFlag()]


def _finite(v: float) -> float:
    if problem := not_finite(v):
        raise ValueError(problem)
    return v


# On a float field: `scale: Annotated[Float, Finite]` refuses NaN and infinity.
Finite = AfterValidator(_finite)


def _version(v: Any) -> Any:
    if type(v) is not int:
        raise ValueError(f"must be the number 1, not {v!r}")
    return v


Version = Annotated[Literal[1], BeforeValidator(_version)]


def check_host(host: str) -> str:
    """A DNS name (RFC 1123 labels) or an IP address; ValueError saying which it is not."""
    text = host.strip()
    try:
        ipaddress.ip_address(text)
        return text
    except ValueError:
        pass
    name = text[:-1] if text.endswith(".") else text
    labels = name.split(".")
    if (
        not name
        or len(name) > 253
        or not all(_LABEL.match(label) for label in labels)
        or labels[-1].isdigit()  # 300.1.1.1 is a bad address, not a name
    ):
        raise ValueError(f"{text!r} is not a host name or IP address")
    return text
