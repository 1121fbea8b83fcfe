"""The errors and warnings the data package raises."""

from __future__ import annotations

from saolctl.errors import UserError


class DataError(UserError):
    """A dataset or image that cannot be used; the message is one line naming the path."""


class DataWarning(UserWarning):
    """A data problem that was worked around (skipped image, clipped or dropped box, unknown class)."""
