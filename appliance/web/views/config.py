"""Configuration API: running and draft documents, diff, commit/confirm/rollback, revisions.

Thin wrappers over `appliance.state.revisions` and `appliance.config.load`: the
web writes intentions (drafts, commits) into the config DB exactly as the CLI
does, then rings the roles' doorbells; the net role applies and confirms.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, Response, request

from appliance.config.base import _one_line
from appliance.config.diff import summary, unified
from appliance.config.load import load_text, validate_data
from appliance.config.model import Config
from appliance.errors import AuditFailed, BadRequest, ConfigInvalid, Invalid, NotFound
from appliance.state import revisions as revs
from appliance.state.db import Revision
from appliance.web.api import endpoint, raw_json
from appliance.web.auth import audit, principal
from appliance.web.context import ctx
from appliance.web.schemas import (
    CommitIn,
    CommitOut,
    ConfigDoc,
    DiffOut,
    DiffQuery,
    DraftSaved,
    ExportQuery,
    RevisionDoc,
    RevisionOut,
    RollbackIn,
    Section,
)
from appliance.web.views.common import document, is_admin, rev_out, ring_changed, text_of

bp = Blueprint("config", __name__, url_prefix="/api")

SECTIONS = (
    "unit",
    "interfaces",
    "nat",
    "devices",
    "history",
    "opcua_server",
    "leds",
    "fleet",
    "syslog",
    "webhooks",
    "web",
    "time",
    "dns",
    "bridge",
)
YAML_TYPES = ("text/yaml", "application/yaml", "application/x-yaml", "text/plain")


def _actor() -> str:
    p = principal()
    return f"web:{p.actor}" if p else "web"


def _when() -> datetime:
    return datetime.fromtimestamp(ctx().now(), UTC)


def doc_answer(rev: Revision) -> dict[str, Any]:
    cfg = revs.config_of(rev)
    admin = is_admin()
    return {
        "revision": rev_out(rev),
        "document": document(cfg, admin=admin),
        "yaml": text_of(rev, cfg, admin=admin),
    }


def draft_base() -> dict[str, Any]:
    """What an edit starts from: the draft, else the running document, else the defaults."""
    rev = revs.latest_draft(ctx().store) or revs.desired(ctx().store)
    if rev is None:
        return Config().canonical()
    return json.loads(rev.document)


def save_draft(data: dict[str, Any], comment: str) -> dict[str, Any]:
    """Validate a whole document and store it as the draft: {revision, warnings}."""
    c = ctx()
    loaded = validate_data(data, now=_when())
    with c.store.config.atomic():  # the change and its audit row, or neither (CR 2.10)
        out = revs.import_config(
            c.store, loaded.config, author=_actor(), comment=comment, now=c.now()
        )
        audit("config.draft", target=f"revision {out.revision.id}", detail=comment)
    return {"revision": rev_out(out.revision), "warnings": loaded.warnings}


def edit_draft(change: Callable[[dict[str, Any]], None], comment: str) -> dict[str, Any]:
    data = draft_base()
    change(data)
    return save_draft(data, comment)


@endpoint(
    bp,
    "/config/running",
    "GET",
    role="viewer",
    response=ConfigDoc,
    errors=(404,),
    summary="The running configuration (pending, else confirmed): JSON and YAML",
)
def running() -> Any:
    return doc_answer(revs.resolve(ctx().store, "running"))


@endpoint(
    bp,
    "/config/draft",
    "GET",
    role="viewer",
    response=ConfigDoc,
    errors=(404,),
    summary="The draft (404 when there is none)",
)
def draft_get() -> Any:
    return doc_answer(revs.resolve(ctx().store, "draft"))


@endpoint(
    bp,
    "/config/draft",
    "PUT",
    role="admin",
    summary="Replace the draft with a whole document (JSON, or YAML text as written)",
    body=Config,
    body_types=("application/json", "text/yaml"),
    response=DraftSaved,
    errors=(400, 415, 422),
)
def draft_put() -> Any:
    """A JSON document (Content-Type application/json) or YAML text (text/yaml). Every
    error names the field's path (and the YAML line): 422 with `errors`."""
    c = ctx()
    comment = _comment(request.args.get("comment", ""))
    if request.mimetype == "application/json":
        data = raw_json()  # bounded depth and size, no NaN/Infinity: 400 naming `body`
        if not isinstance(data, dict):
            raise ConfigInvalid([("", "the document must be an object of sections", None)])
        return save_draft(data, comment)
    if request.mimetype in YAML_TYPES:
        try:
            text = request.get_data(cache=True).decode()
        except UnicodeDecodeError:
            raise BadRequest("the YAML text must be UTF-8", field="body") from None
        loaded = load_text(text, None, now=_when())
        with c.store.config.atomic():  # the change and its audit row, or neither (CR 2.10)
            out = revs.import_text(
                c.store, text, author=_actor(), comment=comment, source=None, now=c.now()
            )
            audit("config.draft", target=f"revision {out.revision.id}", detail=comment)
        return {"revision": rev_out(out.revision), "warnings": loaded.warnings}
    return (
        {"error": "send application/json or text/yaml", "field": None},
        415,
    )


@endpoint(
    bp,
    "/config/diff",
    "GET",
    role="viewer",
    query=DiffQuery,
    response=DiffOut,
    errors=(404, 422),
    summary="What changes from a to b (default running → draft)",
)
def diff(query: DiffQuery) -> Any:
    store = ctx().store
    ra, rb = revs.resolve(store, query.a), revs.resolve(store, query.b)
    ca, cb = revs.config_of(ra), revs.config_of(rb)
    # non-admins: a diff of the key-redacted documents, never a scrubbed text
    lines = unified(ca, cb, f"revision {ra.id}", f"revision {rb.id}", redacted=not is_admin())
    return {
        "a": rev_out(ra),
        "b": rev_out(rb),
        "diff": "\n".join(lines),
        "changes": summary(ca, cb),
    }


@endpoint(
    bp,
    "/config/commit",
    "POST",
    role="admin",
    body=CommitIn,
    response=CommitOut,
    errors=(400, 404, 409, 422),
    summary="Commit the draft; with confirm_within it reverts unless confirmed in time",
)
def commit(body: CommitIn) -> Any:
    c = ctx()
    with c.store.config.atomic():  # the change and its audit row, or neither (CR 2.10)
        out = revs.commit(c.store, author=_actor(), now=c.now(), confirm_within=body.confirm_within)
        audit(
            "config.commit",
            target=f"revision {out.revision.id}",
            detail=f"confirm_within={body.confirm_within}"
            + (f" {body.comment}" if body.comment else ""),
        )
    ring_changed()
    return {"revision": rev_out(out.revision), "confirm_deadline": out.revision.confirm_deadline}


@endpoint(
    bp,
    "/config/confirm",
    "POST",
    role="operator",
    response=CommitOut,
    errors=(409,),
    summary="Confirm the pending revision: it becomes the running configuration",
)
def confirm() -> Any:
    c = ctx()
    try:
        with c.store.config.atomic():  # the change and its audit row, or neither (CR 2.10)
            out = revs.confirm(c.store, author=_actor(), now=c.now())
            audit("config.confirm", target=f"revision {out.revision.id}")
    except AuditFailed:
        raise
    except Exception as e:
        audit("config.confirm", result="failed", detail=str(e))
        raise
    ring_changed()
    return {"revision": rev_out(out.revision), "confirm_deadline": None}


@endpoint(
    bp,
    "/config/rollback",
    "POST",
    role="admin",
    body=RollbackIn,
    body_optional=True,
    response=CommitOut,
    errors=(400, 404, 409, 422),
    summary="Drop the pending revision, or go back to `revision` (default: the previous)",
)
def rollback(body: RollbackIn) -> Any:
    c = ctx()
    with c.store.config.atomic():  # the change and its audit row, or neither (CR 2.10)
        out = revs.rollback(c.store, author=_actor(), now=c.now(), ref=body.revision)
        audit(
            "config.rollback",
            target=f"revision {out.revision.id}",
            detail=f"to {body.revision or 'previous'}",
        )
    ring_changed()
    return {"revision": rev_out(out.revision), "confirm_deadline": out.revision.confirm_deadline}


@endpoint(
    bp,
    "/config/export",
    "GET",
    role="viewer",
    query=ExportQuery,
    content="text/yaml",
    response={"description": "the YAML text as stored"},
    errors=(404, 422),
    summary="A revision's text (YAML), default the running one",
)
def export(query: ExportQuery) -> Any:
    rev = revs.resolve(ctx().store, query.revision)
    admin = is_admin()
    text = text_of(rev, revs.config_of(rev), admin=admin)
    # an admin's export carries the device passwords and tokens: who took one is audited
    audit("config.export", target=f"revision {rev.id}", detail="" if admin else "redacted")
    return Response(
        text,
        mimetype="text/yaml",
        headers={"Content-Disposition": f'attachment; filename="revision-{rev.id}.yaml"'},
    )


@endpoint(
    bp,
    "/revisions",
    "GET",
    role="viewer",
    summary="Every revision, newest first",
    response={"type": "array", "items": {"$ref": "#/components/schemas/RevisionOut"}},
    extra_schemas=(RevisionOut,),
)
def revisions() -> Any:
    return [rev_out(r) for r in revs.history(ctx().store, limit=1000)]


@endpoint(
    bp,
    "/revisions/<int:rev_id>",
    "GET",
    role="viewer",
    response=RevisionDoc,
    errors=(404,),
    summary="One revision with its document",
)
def revision(rev_id: int) -> Any:
    rev = Revision.get_or_none(Revision.id == rev_id)
    if rev is None:
        raise NotFound(f"no revision {rev_id}")
    d = doc_answer(rev)
    return {**d["revision"], "document": d["document"], "yaml": d["yaml"]}


def _section_name(section: str) -> str:
    if section not in SECTIONS:
        raise NotFound(f"no section {section!r} (sections: {', '.join(SECTIONS)})")
    return section


@endpoint(
    bp,
    "/config/draft/<section>",
    "GET",
    role="viewer",
    response=Section,
    errors=(404,),
    summary="One section of the draft (404 without a draft)",
)
def section_get(section: str) -> Any:
    name = _section_name(section)
    rev = revs.resolve(ctx().store, "draft")
    cfg = revs.config_of(rev)
    doc = document(cfg, admin=is_admin())
    return {
        "revision": rev_out(rev),
        "section": name,
        # time, dns and bridge are left out of the document while unset: their defaults
        name: doc[name] if name in doc else _unset(cfg, name),
    }


def _unset(cfg: Config, name: str) -> Any:
    """A section the canonical document leaves out while it has its default value."""
    value = getattr(cfg, name)
    return value.model_dump(mode="json", by_alias=True) if value is not None else None


@endpoint(
    bp,
    "/config/draft/<section>",
    "PUT",
    role="admin",
    body=None,
    response=DraftSaved,
    errors=(400, 404, 415, 422),
    summary="Replace one section of the draft (made from running if there is none)",
)
def section_put(section: str) -> Any:
    """The body is the section's value as JSON (an object, a list for interfaces,
    devices, syslog, webhooks; null for no fleet and for the routed mode (bridge)). Errors
    name the full path."""
    from appliance.web.api import raw_json

    name = _section_name(section)
    value = raw_json()

    def change(data: dict[str, Any]) -> None:
        data[name] = value

    return edit_draft(change, f"{name} edited in the web UI")


def _comment(text: str) -> str:
    """The `comment` query parameter: one line of at most 500 characters, as the bodies'
    comments are (a CR LF in it made a second, forged row in `appliance audit list`)."""
    if len(text) > 500:
        raise Invalid("at most 500 characters", field="comment")
    try:
        return _one_line(text)
    except ValueError as e:
        raise Invalid(str(e), field="comment") from None
