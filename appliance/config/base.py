"""Building blocks shared by every section's models (kept apart to avoid import cycles)."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,47}$")


class Strict(BaseModel):
    """Unknown keys are errors; models are immutable once validated."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def check_name(v: str, what: str) -> str:
    if not NAME_RE.match(v):
        raise ValueError(
            f"{what} {v!r} must be 1-48 characters of a-z, 0-9, '-' and '_', starting "
            "with a letter or digit"
        )
    return v
