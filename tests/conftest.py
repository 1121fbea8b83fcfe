"""Shared test fixtures: the location of ../shared and skips where it is absent."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """Return ../shared, or skip (a user's clone has none; CI always has it)."""
    if not SHARED.is_dir():
        pytest.skip(f"../shared not found at {SHARED} (present in CI, absent in a user's clone)")
    return SHARED
