"""Configuration revisions: the state machine, import, commit, confirm, revert, rollback."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from appliance.config.load import load_text, sha256_of
from appliance.errors import ConfigInvalid, Conflict, Invalid, NotFound
from appliance.state import revisions as revs
from appliance.state.db import Event, Revision, Store

from .factory import NOW, base, conduit

T0 = NOW.timestamp()  # the clock every test starts from

# -- the state machine ------------------------------------------------------

ALLOWED = {
    ("draft", "commit"): "pending",
    ("draft", "supersede"): "superseded",
    ("pending", "confirm"): "confirmed",
    ("pending", "revert"): "rolled-back",
    ("confirmed", "supersede"): "superseded",
}
ACTIONS = ("commit", "confirm", "revert", "supersede")


@pytest.mark.parametrize("state", revs.STATES)
@pytest.mark.parametrize("action", ACTIONS)
def test_next_state(state: str, action: str) -> None:
    if (state, action) in ALLOWED:
        assert revs.next_state(state, action) == ALLOWED[(state, action)]
    else:
        with pytest.raises(Conflict, match=f"^cannot {action} a revision that is {state}$"):
            revs.next_state(state, action)


def test_end_states_are_final() -> None:
    for state in ("rolled-back", "superseded"):
        for action in ACTIONS:
            with pytest.raises(Conflict):
                revs.next_state(state, action)


# -- helpers ----------------------------------------------------------------


def text(**changes: Any) -> str:
    data = base()
    data.update(changes)
    return yaml.safe_dump(data, sort_keys=False)


def with_service(service: str) -> str:
    data = base()
    data["conduits"][0]["services"] = [service]
    return yaml.safe_dump(data, sort_keys=False)


def kinds(store: Store) -> list[str]:
    return [e.kind for e in reversed(store.events(limit=100))]


def fresh(rev: Revision) -> Revision:
    return Revision.get_by_id(rev.id)


def running(store: Store, source: str, at: float) -> Revision:
    """Import, commit and confirm a document; returns the confirmed revision."""
    rev = revs.import_text(store, source, author="alice", now=at).revision
    revs.commit(store, author="alice", now=at + 1)
    revs.confirm(store, author="net", now=at + 2, automatic=True)
    return fresh(rev)


# -- import -----------------------------------------------------------------


def test_import_stores_a_draft(store: Store) -> None:
    src = "# comment kept\n" + text()
    out = revs.import_text(store, src, author="alice", comment="first", source="a.yaml", now=T0)
    rev = fresh(out.revision)
    assert rev.state == "draft"
    assert (rev.author, rev.comment, rev.created_at) == ("alice", "first", T0)
    assert rev.source == src
    config = load_text(src).config
    assert rev.sha256 == sha256_of(config)
    assert revs.config_of(rev) == config
    assert out.message == f"revision {rev.id} stored as draft ({rev.sha256[:12]})"
    [event] = store.events()
    assert (event.kind, event.source, event.at) == ("config.draft", "config", T0)
    assert event.message == f"revision {rev.id} stored as draft by alice: first"
    assert event.as_dict()["data"] == {"revision": rev.id, "sha256": rev.sha256, "warnings": []}


def test_import_supersedes_older_drafts(store: Store) -> None:
    first = revs.import_text(store, text(), author="alice", now=T0).revision
    second = revs.import_text(store, with_service("s7"), author="bob", now=T0 + 5).revision
    first, second = fresh(first), fresh(second)
    assert first.state == "superseded"
    assert first.ended_at == T0 + 5
    assert first.reason == "replaced by a newer draft by bob"
    assert second.state == "draft"
    assert revs.latest_draft(store).id == second.id


def test_import_does_not_touch_pending_or_confirmed(store: Store) -> None:
    conf = running(store, text(), T0)
    revs.import_text(store, with_service("s7"), author="a", now=T0 + 10)
    revs.commit(store, author="a", now=T0 + 11, confirm_within=60)
    pend = revs.pending(store)
    revs.import_text(store, with_service("s7"), author="a", now=T0 + 12)
    assert fresh(conf).state == "confirmed"
    assert fresh(pend).state == "pending"


def test_import_of_an_invalid_document_stores_nothing(store: Store) -> None:
    with pytest.raises(ConfigInvalid) as exc:
        revs.import_text(store, with_service("tcp/70000"), author="a", source="x.yaml", now=T0)
    assert exc.value.errors[0][0] == "conduits[0].services[0]"
    assert Revision.select().count() == 0
    assert store.events() == []


def test_import_uses_now_for_expiry_warnings(store: Store) -> None:
    data = base()
    data["conduits"][0]["expires"] = "2026-01-01T00:30:00Z"
    src = yaml.safe_dump(data)
    assert "\nwarning:" not in revs.import_text(store, src, author="a", now=T0).message
    out = revs.import_text(store, src, author="a", now=T0 + 3600)
    assert out.message.endswith("\nwarning: conduits[0].expires: already expired: passes nothing")
    assert store.events()[0].as_dict()["data"]["warnings"] == [
        "conduits[0].expires: already expired: passes nothing"
    ]


def test_a_stored_revision_stays_loadable_when_its_expired_conduit_overlaps_a_renewal(
    store: Store,
) -> None:
    # Regression: config_of re-ran the document checks without the import's `now`,
    # so an expired conduit counted again and overlapped its renewal: the net role
    # could not load a revision that had been accepted.
    data = base()
    data["conduits"][0]["expires"] = "2025-06-01T00:00:00Z"
    data["conduits"].append(conduit("scada-modbus-2026"))
    rev = revs.import_text(store, yaml.safe_dump(data), author="a", now=T0).revision
    config = revs.config_of(fresh(rev))
    assert [c.name for c in config.conduits] == ["scada-modbus", "scada-modbus-2026"]


def test_import_config_keeps_canonical_yaml_as_source(store: Store) -> None:
    config = load_text(text()).config
    rev = revs.import_config(store, config, author="a", now=T0, rollback_of=None).revision
    assert load_text(fresh(rev).source).config == config
    assert fresh(rev).rollback_of is None


# -- commit -----------------------------------------------------------------


def test_commit_without_confirm_window(store: Store) -> None:
    rev = revs.import_text(store, text(), author="alice", now=T0).revision
    out = revs.commit(store, author="bob", now=T0 + 1)
    rev = fresh(rev)
    assert out.message == f"revision {rev.id} committed"
    assert rev.state == "pending"
    assert (rev.committed_at, rev.committed_by) == (T0 + 1, "bob")
    assert rev.confirm_deadline is None
    assert rev.auto_confirm is True
    assert rev.reason == "waiting for the net role to apply it"
    event = store.events()[0]
    assert event.kind == "config.committed"
    assert event.message == f"revision {rev.id} committed by bob"
    assert event.as_dict()["data"]["confirm_within"] is None


def test_commit_with_confirm_window(store: Store) -> None:
    rev = revs.import_text(store, text(), author="alice", now=T0).revision
    revs.commit(store, author="bob", now=T0 + 1, confirm_within=120)
    rev = fresh(rev)
    assert rev.state == "pending"
    assert rev.confirm_deadline == T0 + 121
    assert rev.auto_confirm is False
    assert rev.reason == "waiting for confirmation within 120 s"
    assert store.events()[0].message == f"revision {rev.id} committed by bob, confirm within 120 s"


@pytest.mark.parametrize(
    "window", [0, 9.9, 24 * 3600 + 1, -5, float("nan"), float("inf"), float("-inf")]
)
def test_commit_confirm_window_bounds(store: Store, window: float) -> None:
    rev = revs.import_text(store, text(), author="a", now=T0).revision
    with pytest.raises(
        Invalid, match=r"^confirm_within: must be a finite number of seconds, 10-86400 \(got "
    ):
        revs.commit(store, author="a", now=T0, confirm_within=window)
    assert fresh(rev).state == "draft"


@pytest.mark.parametrize("window", [10, 24 * 3600])
def test_commit_confirm_window_limits_are_allowed(store: Store, window: float) -> None:
    revs.import_text(store, text(), author="a", now=T0)
    revs.commit(store, author="a", now=T0, confirm_within=window)
    assert revs.pending(store).confirm_deadline == T0 + window


def test_commit_without_a_draft(store: Store) -> None:
    with pytest.raises(NotFound, match=r"^there is no draft revision$"):
        revs.commit(store, author="a", now=T0)


def test_commit_while_another_is_pending(store: Store) -> None:
    first = revs.import_text(store, text(), author="a", now=T0).revision
    revs.commit(store, author="a", now=T0, confirm_within=60)
    second = revs.import_text(store, with_service("s7"), author="a", now=T0 + 1).revision
    with pytest.raises(Conflict, match=f"revision {first.id} is pending confirmation"):
        revs.commit(store, author="a", now=T0 + 2)
    assert fresh(second).state == "draft"


def test_commit_by_number_of_a_non_draft(store: Store) -> None:
    conf = running(store, text(), T0)
    with pytest.raises(Conflict, match=r"^cannot commit a revision that is confirmed$"):
        revs.commit(store, author="a", now=T0 + 10, ref=conf.id)


def test_commit_an_older_draft_by_number_is_refused_once_superseded(store: Store) -> None:
    old = revs.import_text(store, text(), author="a", now=T0).revision
    revs.import_text(store, with_service("s7"), author="a", now=T0 + 1)
    with pytest.raises(Conflict, match="that is superseded"):
        revs.commit(store, author="a", now=T0 + 2, ref=str(old.id))


# -- confirm ----------------------------------------------------------------


def test_confirm_by_a_person_before_the_deadline(store: Store) -> None:
    old = running(store, text(), T0)
    new = revs.import_text(store, with_service("s7"), author="a", now=T0 + 10).revision
    revs.commit(store, author="a", now=T0 + 11, confirm_within=60)
    out = revs.confirm(store, author="carol", now=T0 + 30)
    new, old = fresh(new), fresh(old)
    assert out.message == f"revision {new.id} confirmed"
    assert new.state == "confirmed"
    assert (new.confirmed_at, new.confirmed_by) == (T0 + 30, "carol")
    assert new.reason == "confirmed by carol"
    assert old.state == "superseded"
    assert old.ended_at == T0 + 30
    assert old.reason == f"replaced by revision {new.id}"
    event = store.events()[0]
    assert event.kind == "config.confirmed"
    assert (
        event.message == f"revision {new.id} is now the running configuration (confirmed by carol)"
    )


def test_confirm_exactly_at_the_deadline_is_in_time(store: Store) -> None:
    revs.import_text(store, text(), author="a", now=T0)
    revs.commit(store, author="a", now=T0, confirm_within=60)
    revs.confirm(store, author="a", now=T0 + 60)
    assert revs.confirmed(store) is not None


def test_confirm_after_the_deadline_is_refused(store: Store) -> None:
    rev = revs.import_text(store, text(), author="a", now=T0).revision
    revs.commit(store, author="a", now=T0, confirm_within=60)
    with pytest.raises(Conflict, match="missed its confirmation deadline"):
        revs.confirm(store, author="a", now=T0 + 60.5)
    assert fresh(rev).state == "pending"
    assert fresh(rev).confirmed_at is None


def test_confirm_with_nothing_pending(store: Store) -> None:
    with pytest.raises(Conflict, match=r"^nothing is pending confirmation$"):
        revs.confirm(store, author="a", now=T0)


def test_automatic_confirm_needs_auto_confirm(store: Store) -> None:
    rev = revs.import_text(store, text(), author="a", now=T0).revision
    revs.commit(store, author="a", now=T0, confirm_within=60)
    with pytest.raises(Conflict, match=f"revision {rev.id} waits for a person to confirm it"):
        revs.confirm(store, author="net", now=T0 + 1, automatic=True)
    assert fresh(rev).state == "pending"


def test_automatic_confirm(store: Store) -> None:
    rev = revs.import_text(store, text(), author="a", now=T0).revision
    revs.commit(store, author="a", now=T0)
    revs.confirm(store, author="a", now=T0 + 1, automatic=True)
    rev = fresh(rev)
    assert (rev.state, rev.reason) == ("confirmed", "applied")
    assert store.events()[0].message == f"revision {rev.id} is now the running configuration"


# -- deadlines and reverts ------------------------------------------------------


def test_expire_pending_only_after_the_deadline(store: Store) -> None:
    conf = running(store, text(), T0)
    rev = revs.import_text(store, with_service("s7"), author="a", now=T0 + 10).revision
    revs.commit(store, author="a", now=T0 + 10, confirm_within=60)
    assert revs.expire_pending(store, T0 + 69) is None
    assert revs.expire_pending(store, T0 + 70) is None  # the deadline itself is still in time
    assert fresh(rev).state == "pending"
    out = revs.expire_pending(store, T0 + 70.001)
    assert out is not None
    rev = fresh(rev)
    assert rev.state == "rolled-back"
    assert rev.reason == "not confirmed before its deadline"
    assert rev.ended_at == T0 + 70.001
    assert out.message == f"revision {rev.id} rolled back; returning to revision {conf.id}"
    event = store.events()[0]
    assert (event.kind, event.severity) == ("config.reverted", "warning")
    assert event.as_dict()["data"] == {
        "revision": rev.id,
        "reason": "not confirmed before its deadline",
        "to": conf.id,
    }
    assert revs.desired(store).id == conf.id
    assert revs.expire_pending(store, T0 + 1000) is None


def test_expire_pending_never_reverts_without_a_deadline(store: Store) -> None:
    revs.import_text(store, text(), author="a", now=T0)
    revs.commit(store, author="a", now=T0)
    assert revs.expire_pending(store, T0 + 10 * 24 * 3600) is None
    assert revs.pending(store) is not None


def test_expire_pending_with_nothing_pending(store: Store) -> None:
    assert revs.expire_pending(store, T0) is None


def test_revert_without_a_confirmed_revision_returns_to_fail_closed(store: Store) -> None:
    rev = revs.import_text(store, text(), author="a", now=T0).revision
    revs.commit(store, author="a", now=T0)
    out = revs.revert_pending(store, reason="apply failed: boom", now=T0 + 1, severity="error")
    assert out.message == f"revision {rev.id} rolled back; returning to the fail-closed ruleset"
    event = store.events()[0]
    assert event.severity == "error"
    assert event.as_dict()["data"]["to"] is None
    assert revs.desired(store) is None


def test_revert_with_nothing_pending(store: Store) -> None:
    with pytest.raises(Conflict, match=r"^nothing is pending$"):
        revs.revert_pending(store, reason="x", now=T0)


# -- rollback ---------------------------------------------------------------


def test_rollback_without_rev_drops_the_pending_one(store: Store) -> None:
    conf = running(store, text(), T0)
    rev = revs.import_text(store, with_service("s7"), author="a", now=T0 + 10).revision
    revs.commit(store, author="a", now=T0 + 10, confirm_within=60)
    out = revs.rollback(store, author="dave", now=T0 + 20)
    assert fresh(rev).state == "rolled-back"
    assert fresh(rev).reason == "rolled back by dave"
    assert out.revision.id == rev.id
    assert store.events()[0].severity == "info"
    assert revs.desired(store).id == conf.id


def test_rollback_without_rev_commits_a_copy_of_the_previous_confirmed(store: Store) -> None:
    first = running(store, text(), T0)
    second = running(store, with_service("s7"), T0 + 100)
    out = revs.rollback(store, author="dave", now=T0 + 200)
    copy = fresh(out.revision)
    assert copy.id not in (first.id, second.id)
    assert copy.state == "pending"
    assert copy.auto_confirm is True
    assert copy.rollback_of == first.id
    assert copy.sha256 == first.sha256
    assert copy.comment == f"rollback to revision {first.id}"
    assert (copy.author, copy.committed_by) == ("dave", "dave")
    assert out.message == f"revision {copy.id} (a copy of revision {first.id}) committed"
    assert fresh(second).state == "confirmed"  # until the copy is confirmed
    assert kinds(store)[-2:] == ["config.draft", "config.committed"]
    revs.confirm(store, author="net", now=T0 + 201, automatic=True)
    assert fresh(second).state == "superseded"
    assert revs.config_of(revs.resolve(store, "running")) == revs.config_of(first)


def test_rollback_without_rev_skips_revisions_that_never_ran(store: Store) -> None:
    first = running(store, text(), T0)
    revs.import_text(store, with_service("s7"), author="a", now=T0 + 10)  # superseded draft
    revs.import_text(store, with_service("dnp3"), author="a", now=T0 + 20)
    revs.commit(store, author="a", now=T0 + 20, confirm_within=60)
    revs.expire_pending(store, T0 + 100)  # rolled back
    running(store, with_service("opcua"), T0 + 200)
    out = revs.rollback(store, author="a", now=T0 + 300)
    assert out.revision.rollback_of == first.id


def test_rollback_without_rev_of_the_first_confirmed(store: Store) -> None:
    conf = running(store, text(), T0)
    with pytest.raises(Conflict, match=f"revision {conf.id} is the first confirmed one"):
        revs.rollback(store, author="a", now=T0 + 10)


def test_rollback_with_nothing_running(store: Store) -> None:
    with pytest.raises(Conflict, match="nothing to roll back: no revision is running"):
        revs.rollback(store, author="a", now=T0)


def test_rollback_to_a_named_revision(store: Store) -> None:
    first = running(store, text(), T0)
    running(store, with_service("s7"), T0 + 100)
    running(store, with_service("opcua"), T0 + 200)
    out = revs.rollback(store, author="a", now=T0 + 300, ref=str(first.id))
    assert out.revision.rollback_of == first.id
    assert out.revision.sha256 == first.sha256
    assert out.revision.state == "pending"


def test_rollback_to_a_rolled_back_revision_is_allowed(store: Store) -> None:
    running(store, text(), T0)
    bad = revs.import_text(store, with_service("s7"), author="a", now=T0 + 10).revision
    revs.commit(store, author="a", now=T0 + 10, confirm_within=60)
    revs.expire_pending(store, T0 + 100)
    out = revs.rollback(store, author="a", now=T0 + 200, ref=bad.id)
    assert out.revision.rollback_of == bad.id


def test_rollback_to_a_draft_is_refused(store: Store) -> None:
    running(store, text(), T0)
    draft = revs.import_text(store, with_service("s7"), author="a", now=T0 + 10).revision
    with pytest.raises(Conflict, match=f"revision {draft.id} is a draft"):
        revs.rollback(store, author="a", now=T0 + 20, ref=draft.id)


def test_rollback_with_rev_while_pending_is_refused(store: Store) -> None:
    first = running(store, text(), T0)
    revs.import_text(store, with_service("s7"), author="a", now=T0 + 10)
    revs.commit(store, author="a", now=T0 + 10, confirm_within=60)
    with pytest.raises(Conflict, match="a revision is pending confirmation"):
        revs.rollback(store, author="a", now=T0 + 20, ref=first.id)


def test_rollback_to_an_unknown_revision(store: Store) -> None:
    running(store, text(), T0)
    with pytest.raises(NotFound, match=r"^no revision 99$"):
        revs.rollback(store, author="a", now=T0 + 20, ref="99")


# -- resolve, desired, history ------------------------------------------------


def test_resolve_by_number_and_by_name(store: Store) -> None:
    conf = running(store, text(), T0)
    draft = revs.import_text(store, with_service("s7"), author="a", now=T0 + 10).revision
    assert revs.resolve(store, conf.id).id == conf.id
    assert revs.resolve(store, str(conf.id)).id == conf.id
    assert revs.resolve(store, "confirmed").id == conf.id
    assert revs.resolve(store, "running").id == conf.id
    assert revs.resolve(store, None).id == conf.id  # running is the default
    assert revs.resolve(store, None, default="draft").id == draft.id
    assert revs.resolve(store, "draft").id == draft.id
    with pytest.raises(NotFound, match=r"^there is no pending revision$"):
        revs.resolve(store, "pending")


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        (7, "^no revision 7$"),
        ("7", "^no revision 7$"),
        (
            "latest",
            "^unknown revision 'latest': use a number, running, pending, confirmed, draft$",
        ),
        ("running", "^there is no running revision$"),
        ("confirmed", "^there is no confirmed revision$"),
        ("draft", "^there is no draft revision$"),
    ],
)
def test_resolve_not_found(store: Store, ref: Any, message: str) -> None:
    with pytest.raises(NotFound, match=message):
        revs.resolve(store, ref)


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("1000000000000000000000000000000", "^no revision 1000000000000000000000000000000$"),
        (10**30, "^no revision 1000000000000000000000000000000$"),
        (str(2**62 + 1), f"^no revision {2**62 + 1}$"),
        ("0", "^no revision 0$"),
        (0, "^no revision 0$"),
        (-1, "^no revision -1$"),
        # not ASCII digits: str.isdigit() says yes, int() reads some of them
        ("\u00b2", "^unknown revision '\u00b2': use a number"),
        ("\u0661", "^unknown revision '\u0661': use a number"),
        ("\uff11", "^unknown revision '\uff11': use a number"),
        (" 1", "^unknown revision ' 1': use a number"),
        ("+1", "^unknown revision '\\+1': use a number"),
    ],
)
def test_resolve_numbers_out_of_range_or_not_ascii_are_not_found(
    store: Store, ref: Any, message: str
) -> None:
    running(store, text(), T0)  # revision 1 exists: "\u0661" (Arabic-Indic one) must not find it
    with pytest.raises(NotFound, match=message):
        revs.resolve(store, ref)


def test_resolve_the_largest_id_is_a_lookup(store: Store) -> None:
    with pytest.raises(NotFound, match=f"^no revision {2**62}$"):
        revs.resolve(store, str(2**62))


def test_desired_prefers_pending(store: Store) -> None:
    assert revs.desired(store) is None
    conf = running(store, text(), T0)
    assert revs.desired(store).id == conf.id
    rev = revs.import_text(store, with_service("s7"), author="a", now=T0 + 10).revision
    assert revs.desired(store).id == conf.id  # a draft is not desired
    revs.commit(store, author="a", now=T0 + 10, confirm_within=60)
    assert revs.desired(store).id == rev.id
    assert revs.resolve(store, "running").id == rev.id


def test_history_newest_first(store: Store) -> None:
    ids = [revs.import_text(store, text(), author="a", now=T0 + k).revision.id for k in range(4)]
    assert [r.id for r in revs.history(store)] == ids[::-1]
    assert [r.id for r in revs.history(store, limit=2)] == ids[:1:-1]


def test_a_full_life_leaves_one_event_per_step(store: Store) -> None:
    running(store, text(), T0)
    revs.import_text(store, with_service("s7"), author="a", now=T0 + 10)
    revs.commit(store, author="a", now=T0 + 10, confirm_within=60)
    revs.expire_pending(store, T0 + 100)
    assert kinds(store) == [
        "config.draft",
        "config.committed",
        "config.confirmed",
        "config.draft",
        "config.committed",
        "config.reverted",
    ]
    # and every event says which revision it is about
    for e in Event.select():
        assert isinstance(json.loads(e.data)["revision"], int)
