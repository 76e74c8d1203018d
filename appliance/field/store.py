"""Tables of this area (filled in by its implementation)."""

from __future__ import annotations
