"""The audit log's hash chain (IEC 62443-4-2 CR 2.8, 2.9, 3.9: audit records that show
when they were tampered with).

Every audit row carries `digest` = SHA-256 of the digest of the row before it (`GENESIS`
for the first) and of the row's own id and fields. A row changed afterwards, one removed
from the middle, or one inserted between two, no longer matches the chain from that row
on, and `verify` names the first row where it breaks. Rows cut off the end leave a shorter
chain that is still whole: the last row's id and digest (`Verdict.head`) are what an
outside record (the heartbeat, syslog, a printed report) compares against.

Pure: `link` and `verify` take plain values; `state.db.Store` writes the chain (and adds
it to a database written before it existed) and reads it back for `verify`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

GENESIS = "0" * 64
# The fields of an audit row the digest covers, in this order, after its id.
FIELDS = ("at", "actor", "source", "action", "target", "result", "detail")


def normalise(fields: Mapping[str, Any]) -> dict[str, Any]:
    """The fields as the database gives them back: `at` a float, the rest text."""
    return {k: float(fields[k]) if k == "at" else str(fields[k]) for k in FIELDS}


def link(prev: str, row_id: int, fields: Mapping[str, Any]) -> str:
    """The digest of row `row_id` with `fields` after the row whose digest is `prev`."""
    f = normalise(fields)
    body = json.dumps([row_id, *(f[k] for k in FIELDS)], ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(f"{prev}\n{body}".encode()).hexdigest()


@dataclass(frozen=True)
class Verdict:
    rows: int  # how many rows were read
    intact: bool
    head_id: int | None  # the last row's id and digest: what an outside record keeps
    head: str
    broken_at: int | None = None  # the first row that does not match the chain
    problem: str | None = None  # what is wrong there, in words

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def line(self) -> str:
        """One line for a person."""
        if not self.intact:
            return f"audit log: the chain breaks at row {self.broken_at}: {self.problem}"
        if not self.rows:
            return "audit log: empty"
        return (
            f"audit log: {self.rows} rows, chain intact "
            f"(last row {self.head_id}, digest {self.head[:16]})"
        )


def verify(
    rows: Iterable[tuple[int, Mapping[str, Any], str]], anchor: tuple[int, str] | None = None
) -> Verdict:
    """Check (id, fields, digest) rows in id order; stop at the first that breaks.

    `anchor`: the id and digest of the last row pruned (`Store.prune_audit`), from which
    the rows left go on; without one the chain starts at row 1 from `GENESIS`."""
    prev_id, prev = anchor if anchor else (0, GENESIS)
    count = 0
    for row_id, fields, digest in rows:
        count += 1
        if digest != link(prev, row_id, fields):
            if row_id > prev_id + 1:
                if row_id == prev_id + 2:
                    problem = f"row {prev_id + 1} before it was removed"
                else:
                    problem = f"rows {prev_id + 1}..{row_id - 1} before it were removed"
            elif row_id <= prev_id:
                problem = f"its id is not after row {prev_id}'s"
            else:
                problem = "it, or the row before it, was changed after it was written"
            return Verdict(count, False, prev_id or None, prev, row_id, problem)
        prev, prev_id = digest, row_id
    return Verdict(count, True, prev_id or None, prev)


def prune_upto(
    ages: Iterable[tuple[int, float]], rows: int, *, max_rows: int, keep_after: float
) -> int | None:
    """The id of the last row to prune so that at most 90 % of `max_rows` stay, among
    (id, at) in id order, never a row newer than `keep_after`; None: nothing to prune
    (within the quota, or every row that would go is still kept by its age)."""
    if rows <= max_rows:
        return None
    excess = rows - int(max_rows * 0.9)
    last = None
    for n, (row_id, at) in enumerate(ages, 1):
        if n > excess or at > keep_after:
            break
        last = row_id
    return last


# The audit actions whose failures are security events too (events go to syslog, the
# fleet and webhooks; the audit table stays on the unit): log-ons, refused requests and
# tokens, the setup code, password changes.
SECURITY_ACTIONS = frozenset({"login", "auth.denied", "token.invalid", "setup", "password.change"})
REPEAT_WINDOW_S = 60.0


class Repeats:
    """One security event per (action, actor, source) per `window` seconds: a client
    retrying every 100 ms makes one event a minute that says how many more there were,
    not a flood (the audit table still has every row)."""

    def __init__(self, window: float = REPEAT_WINDOW_S, keys_max: int = 10_000) -> None:
        self.window = window
        self.keys_max = keys_max
        self._last: dict[tuple[str, ...], float] = {}
        self._held: dict[tuple[str, ...], int] = {}

    def offer(self, key: tuple[str, ...], now: float) -> int | None:
        """None: held back (counted); else emit now, with this many held since the last."""
        last = self._last.get(key)
        if last is not None and now - last < self.window:
            self._held[key] = self._held.get(key, 0) + 1
            return None
        if len(self._last) >= self.keys_max:  # many sources: forget the oldest half
            for k in sorted(self._last, key=self._last.__getitem__)[: self.keys_max // 2]:
                self._last.pop(k, None)
                self._held.pop(k, None)
        self._last[key] = now
        return self._held.pop(key, 0)
