"""Helpers the API's views share: revision answers, redaction, the doorbells."""

from __future__ import annotations

from typing import Any

import yaml

from appliance.config.model import Config
from appliance.roles import CONFIG_FOLLOWERS
from appliance.state.db import Revision
from appliance.web.auth import principal
from appliance.web.context import ctx


def rev_out(rev: Revision) -> dict[str, Any]:
    return rev.as_dict()


def is_admin() -> bool:
    p = principal()
    return bool(p and p.at_least("admin"))


def document(cfg: Config, *, admin: bool) -> dict[str, Any]:
    """The configuration as JSON data; secrets only for admins (others get it redacted by
    the model's secret fields, before anything is rendered from it)."""
    if admin:
        return cfg.canonical()
    from appliance.config.redact import redact_config

    return redact_config(cfg)


def text_of(rev: Revision, cfg: Config, *, admin: bool) -> str:
    """The revision's text as stored (comments kept) for admins, a redacted dump otherwise."""
    if admin:
        return rev.source
    return yaml.safe_dump(document(cfg, admin=False), sort_keys=False)


def ring_changed() -> None:
    ctx().live.ring(*CONFIG_FOLLOWERS)


def int_or_none(v: Any) -> int | None:
    try:
        return int(v)
    except (TypeError, ValueError):
        return None
