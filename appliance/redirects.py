"""Where a login may send its user afterwards: a path on this site, never another site.

Used by the unit's web UI (appliance.web.ui) and the fleet receiver (appliance.fleet.app),
which both take a `next` target from the query string.

Checking the raw text is not enough, because a browser does not resolve the text it is
given: the WHATWG URL parser first strips leading and trailing C0 controls and spaces,
then removes every tab, CR and LF anywhere, and reads a backslash as a slash in http(s)
URLs. So `/\\t/evil.example` passes a "starts with one slash" check and lands on
`//evil.example`, another site. `safe_next` therefore refuses:

- any control character (C0, DEL, C1), any whitespace and any invisible format
  character (zero-width, bidi overrides), wherever it is;
- any backslash;
- anything that is not a path starting with exactly one `/` (so no `//host`, no
  `https:host`, no `javascript:`);
- the same after one percent-decoding (`/%2F/evil`, `/%5Cevil`, `/%09/evil`): a
  browser keeps `%2F` as it is and stays on this site, but a proxy or server that
  decodes the path would not, and no real page of ours starts with an encoded slash.

Whatever is refused becomes `/`. Non-ASCII characters in an accepted target are
percent-encoded (a Location header is ASCII).
"""

from __future__ import annotations

import unicodedata
from urllib.parse import quote, unquote, urlsplit

MAX_TARGET = 2048
_ASCII_PRINTABLE = "".join(chr(c) for c in range(0x21, 0x7F))


def _hostile_char(ch: str) -> bool:
    return ch.isspace() or ch == "\\" or unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp")


def _local_path(text: str) -> bool:
    if any(_hostile_char(ch) for ch in text):
        return False
    if not text.startswith("/") or text.startswith("//"):
        return False
    parts = urlsplit(text)
    return not parts.scheme and not parts.netloc


def safe_next(target: str | None, default: str = "/") -> str:
    """`target` if it is a path on this site (see the module doc), else `default`."""
    if not target or len(target) > MAX_TARGET:
        return default
    if not _local_path(target) or not _local_path(unquote(target)):
        return default
    return quote(target, safe=_ASCII_PRINTABLE)
