"""Checks of user-given settings that must pass before a command writes anything.

Each raises a ``ValueError`` (or ``NotADirectoryError`` / ``PermissionError``) whose message is one line
naming the option, so that the CLI can print it as its single ``error:`` line.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from saolctl.errors import UserError
from saolctl.methods.registry import find_option


def check_int(name: str, value: Any, minimum: int | None = None, optional: bool = False) -> None:
    """Raise ValueError unless value is an int (not a bool) of at least ``minimum`` (None allowed if optional)."""
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise UserError(f"{name} must be an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise UserError(f"{name} must be at least {minimum}, got {value}")


def check_number(name: str, value: Any, optional: bool = False) -> None:
    """Raise ValueError unless value is a finite int or float (not a bool; None allowed if optional)."""
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise UserError(f"{name} must be a finite number, got {value!r}")


def check_unit_interval(name: str, value: Any, open_low: bool = False, optional: bool = False) -> None:
    """Raise ValueError unless value is a number in [0, 1) (or (0, 1) with ``open_low``)."""
    if value is None and optional:
        return
    check_number(name, value)
    low_ok = value > 0.0 if open_low else value >= 0.0
    if not (low_ok and value < 1.0):
        raise UserError(f"{name} must be in {'(0, 1)' if open_low else '[0, 1)'}, got {value}")


def check_model_options(options: dict[str, Any]) -> None:
    """Raise UserError for an unknown model option or a bad value (e.g. att_entropy='abc'), before any work."""
    for name, value in options.items():
        find_option(name).validate(value)


def check_output_dir(out: str | Path) -> None:
    """Raise in one line when the output folder cannot be created or written; creates nothing."""
    out = Path(out)
    probe = out
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise UserError(f"output path {out} is inside a file, not a folder: {probe}")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UserError(f"output folder is not writable: {probe}")
