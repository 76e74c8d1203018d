"""Configuration revisions: immutable documents and their life (draft → pending → confirmed).

    draft ──commit──▶ pending ──confirm (person, or the net role once applied
      │                  │        when no confirmation was asked for)──▶ confirmed
      │                  └─revert (deadline passed, apply failed, rollback)─▶ rolled-back
      └─a newer draft──▶ superseded          confirmed ──a newer one confirmed──▶ superseded

The deadline of a pending revision lives in the database, so a net role that
restarts inside the window still reverts on time. The CLI and the web role only
write intentions here; the net role applies them and writes back what happened.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from appliance.config.load import canonical_json, load_text, sha256_of, to_yaml
from appliance.config.model import Config
from appliance.errors import ApplyFailed, Conflict, Invalid, NotFound, Timeout
from appliance.state.db import Revision, Store
from appliance.state.live import LiveState

DRAFT, PENDING, CONFIRMED, ROLLED_BACK, SUPERSEDED = (
    "draft",
    "pending",
    "confirmed",
    "rolled-back",
    "superseded",
)
STATES = (DRAFT, PENDING, CONFIRMED, ROLLED_BACK, SUPERSEDED)

TRANSITIONS: dict[tuple[str, str], str] = {
    (DRAFT, "commit"): PENDING,
    (DRAFT, "supersede"): SUPERSEDED,
    (PENDING, "confirm"): CONFIRMED,
    (PENDING, "revert"): ROLLED_BACK,
    (CONFIRMED, "supersede"): SUPERSEDED,
}

MAX_CONFIRM_WINDOW_S = 24 * 3600


def next_state(state: str, action: str) -> str:
    """The state after `action`, or Conflict saying why it is not allowed."""
    try:
        return TRANSITIONS[(state, action)]
    except KeyError:
        raise Conflict(f"cannot {action} a revision that is {state}") from None


@dataclass(frozen=True)
class Outcome:
    revision: Revision
    message: str


def config_of(rev: Revision) -> Config:
    """The validated Config of a stored revision (stored documents were valid when stored).

    Only the model is validated again, not the document-wide checks: those depend
    on the time (an expired conduit may overlap its renewal), so re-running them
    without the import's `now` could refuse a revision that was valid when stored.
    """
    return Config.model_validate(json.loads(rev.document))


def _move(rev: Revision, action: str, now: float, reason: str = "") -> None:
    rev.state = next_state(rev.state, action)
    if reason:
        rev.reason = reason
    if rev.state in (ROLLED_BACK, SUPERSEDED):
        rev.ended_at = now
    rev.save()


def pending(store: Store) -> Revision | None:
    return Revision.select().where(Revision.state == PENDING).order_by(Revision.id.desc()).first()


def confirmed(store: Store) -> Revision | None:
    return Revision.select().where(Revision.state == CONFIRMED).order_by(Revision.id.desc()).first()


def latest_draft(store: Store) -> Revision | None:
    return Revision.select().where(Revision.state == DRAFT).order_by(Revision.id.desc()).first()


def desired(store: Store) -> Revision | None:
    """What the net role should hold now: the pending revision, else the confirmed one."""
    return pending(store) or confirmed(store)


MAX_REF = 2**62  # the largest revision number looked up (ids are SQLite integers)


def resolve(store: Store, ref: str | int | None, default: str = "running") -> Revision:
    """A revision by number or by name: running, pending, confirmed, draft."""
    ref = default if ref is None else ref
    # ASCII digits only (str.isdigit() takes "²", and int() reads an Arabic-Indic one as 1); ids are
    # SQLite integers, so a bigger number is no revision rather than an OverflowError
    if isinstance(ref, int) or (ref.isascii() and ref.isdigit()):
        number = int(ref)
        rev = Revision.get_or_none(Revision.id == number) if 1 <= number <= MAX_REF else None
        if rev is None:
            raise NotFound(f"no revision {ref}")
        return rev
    finders = {
        "running": desired,
        "pending": pending,
        "confirmed": confirmed,
        "draft": latest_draft,
    }
    if ref not in finders:
        raise NotFound(
            f"unknown revision {ref!r}: use a number, running, pending, confirmed, draft"
        )
    rev = finders[str(ref)](store)
    if rev is None:
        raise NotFound(f"there is no {ref} revision")
    return rev


def import_text(
    store: Store,
    text: str,
    *,
    author: str,
    comment: str = "",
    source: str | None = None,
    now: float,
) -> Outcome:
    """Validate a document and store it as the draft (older drafts are superseded)."""
    from datetime import UTC, datetime

    loaded = load_text(text, source, now=datetime.fromtimestamp(now, UTC))
    return _store_draft(
        store,
        loaded.config,
        text,
        author=author,
        comment=comment,
        now=now,
        warnings=loaded.warnings,
    )


def import_config(
    store: Store,
    config: Config,
    *,
    author: str,
    comment: str = "",
    now: float,
    rollback_of: int | None = None,
) -> Outcome:
    return _store_draft(
        store,
        config,
        to_yaml(config),
        author=author,
        comment=comment,
        now=now,
        rollback_of=rollback_of,
    )


def _store_draft(
    store: Store,
    config: Config,
    text: str,
    *,
    author: str,
    comment: str,
    now: float,
    warnings: list[str] | None = None,
    rollback_of: int | None = None,
) -> Outcome:
    with store.config.atomic():
        for old in Revision.select().where(Revision.state == DRAFT):
            _move(old, "supersede", now, f"replaced by a newer draft by {author}")
        rev = Revision.create(
            created_at=now,
            author=author,
            comment=comment,
            sha256=sha256_of(config),
            document=canonical_json(config),
            source=text,
            state=DRAFT,
            rollback_of=rollback_of,
        )
    store.event(
        "config.draft",
        f"revision {rev.id} stored as draft by {author}" + (f": {comment}" if comment else ""),
        source="config",
        data={"revision": rev.id, "sha256": rev.sha256, "warnings": warnings or []},
        at=now,
    )
    note = "".join(f"\nwarning: {w}" for w in warnings or [])
    return Outcome(rev, f"revision {rev.id} stored as draft ({rev.sha256[:12]}){note}")


def commit(
    store: Store,
    *,
    author: str,
    now: float,
    ref: str | int | None = None,
    confirm_within: float | None = None,
) -> Outcome:
    """Make the draft pending. With confirm_within, a person must confirm before the deadline."""
    if confirm_within is not None and not 10 <= confirm_within <= MAX_CONFIRM_WINDOW_S:
        # a bad value, not a state that forbids it (nan fails every comparison: refused)
        raise Invalid(
            f"must be a finite number of seconds, 10-{MAX_CONFIRM_WINDOW_S} "
            f"(got {confirm_within!r})",
            field="confirm_within",
        )
    with store.config.atomic():
        current = pending(store)
        if current is not None:
            raise Conflict(
                f"revision {current.id} is pending confirmation; confirm or roll it back first"
            )
        rev = resolve(store, ref, default="draft")
        rev.state = next_state(rev.state, "commit")
        rev.committed_at = now
        rev.committed_by = author
        rev.confirm_deadline = now + confirm_within if confirm_within else None
        rev.auto_confirm = confirm_within is None
        rev.reason = (
            f"waiting for confirmation within {confirm_within:g} s"
            if confirm_within
            else "waiting for the net role to apply it"
        )
        rev.save()
    store.event(
        "config.committed",
        f"revision {rev.id} committed by {author}"
        + (f", confirm within {confirm_within:g} s" if confirm_within else ""),
        source="config",
        data={"revision": rev.id, "sha256": rev.sha256, "confirm_within": confirm_within},
        at=now,
    )
    return Outcome(rev, f"revision {rev.id} committed")


def confirm(store: Store, *, author: str, now: float, automatic: bool = False) -> Outcome:
    """Confirm the pending revision; the previous confirmed one is superseded."""
    with store.config.atomic():
        rev = pending(store)
        if rev is None:
            raise Conflict("nothing is pending confirmation")
        if rev.confirm_deadline is not None and now > rev.confirm_deadline:
            raise Conflict(
                f"revision {rev.id} missed its confirmation deadline and is being reverted"
            )
        if automatic and not rev.auto_confirm:
            raise Conflict(f"revision {rev.id} waits for a person to confirm it")
        if not automatic and rev.auto_confirm:
            raise Conflict(
                f"revision {rev.id} asked for no confirmation: it is confirmed once applied"
            )
        old = confirmed(store)
        if old is not None:
            _move(old, "supersede", now, f"replaced by revision {rev.id}")
        _move(rev, "confirm", now, "applied" if automatic else f"confirmed by {author}")
        rev.confirmed_at = now
        rev.confirmed_by = author
        rev.save()
    store.event(
        "config.confirmed",
        f"revision {rev.id} is now the running configuration"
        + ("" if automatic else f" (confirmed by {author})"),
        source="config",
        data={"revision": rev.id, "sha256": rev.sha256},
        at=now,
    )
    return Outcome(rev, f"revision {rev.id} confirmed")


def revert_pending(store: Store, *, reason: str, now: float, severity: str = "warning") -> Outcome:
    """Roll back the pending revision; the net role then re-applies the confirmed one."""
    with store.config.atomic():
        rev = pending(store)
        if rev is None:
            raise Conflict("nothing is pending")
        _move(rev, "revert", now, reason)
    back = confirmed(store)
    to = f"revision {back.id}" if back else "the fail-closed ruleset"
    store.event(
        "config.reverted",
        f"revision {rev.id} rolled back ({reason}); returning to {to}",
        source="config",
        severity=severity,
        data={"revision": rev.id, "reason": reason, "to": back.id if back else None},
        at=now,
    )
    return Outcome(rev, f"revision {rev.id} rolled back; returning to {to}")


def expire_pending(store: Store, now: float) -> Outcome | None:
    """Revert a pending revision whose confirmation deadline has passed (net role)."""
    rev = pending(store)
    if rev is None or rev.confirm_deadline is None or now <= rev.confirm_deadline:
        return None
    return revert_pending(store, reason="not confirmed before its deadline", now=now)


def rollback(store: Store, *, author: str, now: float, ref: str | int | None = None) -> Outcome:
    """Without REV: drop the pending revision. With REV: commit a copy of REV's document."""
    if ref is None:
        if pending(store) is not None:
            return revert_pending(
                store, reason=f"rolled back by {author}", now=now, severity="info"
            )
        current = confirmed(store)
        if current is None:
            raise Conflict("nothing to roll back: no revision is running")
        previous = (
            Revision.select()
            .where(Revision.id < current.id, Revision.confirmed_at.is_null(False))
            .order_by(Revision.id.desc())
            .first()
        )
        if previous is None:
            raise Conflict(f"revision {current.id} is the first confirmed one; nothing before it")
        ref = previous.id
    target = resolve(store, ref)
    if target.state == DRAFT:
        raise Conflict(f"revision {target.id} is a draft; use `config commit {target.id}`")
    if pending(store) is not None:
        raise Conflict("a revision is pending confirmation; confirm or roll it back first")
    draft = import_config(
        store,
        config_of(target),
        author=author,
        now=now,
        comment=f"rollback to revision {target.id}",
        rollback_of=target.id,
    )
    commit(store, author=author, now=now, ref=draft.revision.id)
    rev = Revision.get_by_id(draft.revision.id)
    return Outcome(rev, f"revision {rev.id} (a copy of revision {target.id}) committed")


def history(store: Store, limit: int = 30) -> list[Revision]:
    return list(Revision.select().order_by(Revision.id.desc()).limit(limit))


def wait_applied(live: LiveState, rev_id: int, timeout: float = 20.0) -> Revision:
    """Wait until the net role runs revision `rev_id` (pending or confirmed) and return it.

    ApplyFailed when it was rolled back instead (refused by the kernel), Timeout
    when the net role did not get to it in time.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rev = Revision.get_by_id(rev_id)
        if rev.state == ROLLED_BACK:
            raise ApplyFailed(f"revision {rev_id} was not applied: {rev.reason}")
        applied = (live.read("net") or {}).get("applied") or {}
        if applied.get("revision") == rev_id and rev.state in (PENDING, CONFIRMED):
            return rev
        time.sleep(0.1)
    raise Timeout(f"the net role did not apply revision {rev_id} within {timeout:.0f} s")
