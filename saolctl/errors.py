"""The exception a user can fix: bad input (options, paths, data, checkpoints) or a missing tool or extra.

A leaf module (imports nothing from saolctl) so every package can raise it. The CLI prints a
``UserError``'s message as one line ``error: <message>`` and exits with code 2; any other exception is a
bug in saolctl (exit code 1), or out of memory / disk full (exit code 3).
"""

from __future__ import annotations

__all__ = ["UserError"]


class UserError(ValueError):
    """Bad input or a failure the user can fix; the CLI prints its message as one line and exits 2.

    A ``ValueError`` so that library callers catching ``ValueError`` keep working.
    """
