"""Fixtures and settings for every test folder: hypothesis' profiles (see propkit)."""

from __future__ import annotations

import propkit  # noqa: F401  (registers and loads the hypothesis profile)
