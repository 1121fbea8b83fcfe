"""Named model options: what each one is, its type and default, and the checks a value must pass.

Option names are one flat namespace (``--option KEY=VALUE``, ``create_model(**options)``): every method
declares its own, beside the backbone options every model has and the CutMix options of the methods that
train on CutMix-ed batches. A value is checked by the option that declares it, whichever method is built.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from saolctl.errors import UserError

Check = Callable[[Any], "str | None"]  # returns what is wrong with a value (one line), or None


@dataclass(frozen=True)
class Option:
    """One named option: its type, default and one-line doc, plus an optional range check."""

    name: str
    type: type  # bool, int, float, str, or tuple (of ints)
    # not part of what makes two declarations the same option: a method may give a shared option its own
    # default (``Method.option_defaults``, e.g. the `cutmix` method's cutmix_prob 1.0 against SAOL's 0.5)
    default: Any = field(compare=False)
    doc: str
    check: Check | None = None
    legacy: tuple[str, str] | None = None  # (group, field) in checkpoints written before the method registry

    def validate(self, value: Any) -> None:
        """Raise UserError in one line unless ``value`` has this option's type and passes its check."""
        kind, ok = _type_check(self.type, value)
        if not ok:
            raise UserError(f"model option {self.name} must be {kind}, got {value!r}")
        problem = self.check(value) if self.check is not None else None
        if problem:
            raise UserError(problem)

    def coerce(self, value: Any) -> Any:
        """Return a checked value in its stored form (tuples for list options)."""
        return tuple(value) if self.type is tuple else value

    def plain(self, value: Any) -> Any:
        """Return a value as plain Python for a checkpoint or JSON (lists for tuples)."""
        return list(value) if self.type is tuple else value

    def shown_default(self) -> str:
        """Return the default as the docs show it."""
        if self.type is str:
            return f"`{self.default}`"
        return str(self.default)


def _type_check(kind: type, value: Any) -> tuple[str, bool]:
    """Return (what the type is called, whether ``value`` has it)."""
    if kind is bool:
        return "true or false", isinstance(value, bool)
    if kind is int:
        return "an integer", isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        return "a finite number", ok
    if kind is tuple:
        ok = isinstance(value, (list, tuple)) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        return "a list of integers", ok
    if kind is str:
        return "a string", isinstance(value, str)
    return kind.__name__, isinstance(value, kind)


# ------------------------------------------------------------------------------------------------
# checks shared by option declarations


def in_unit_interval(name: str) -> Check:
    """Return a check that a number lies in [0, 1]."""
    return lambda v: None if 0.0 <= float(v) <= 1.0 else f"{name} must be in [0, 1], got {v}"


def one_of(name: str, choices: tuple[str, ...], words: str | None = None) -> Check:
    """Return a check that a string is one of ``choices`` (``words`` phrases them in the message)."""
    said = words or f"one of {', '.join(choices)}"
    return lambda v: None if v in choices else f"{name} must be {said}, got {v!r}"


def odd_positive(name: str) -> Check:
    """Return a check that an integer is odd and positive (a kernel size that keeps the spatial size)."""
    return lambda v: None if v >= 1 and v % 2 == 1 else f"{name} must be an odd positive integer, got {v}"


def positive(name: str) -> Check:
    """Return a check that a number is positive."""
    return lambda v: None if v >= 1 else f"{name} must be positive, got {v}"


def non_negative(name: str) -> Check:
    """Return a check that a number is zero or more."""
    return lambda v: None if v >= 0 else f"{name} must be zero or more, got {v}"


def non_empty(message: str) -> Check:
    """Return a check that a list is not empty."""
    return lambda v: None if len(v) else message


# ------------------------------------------------------------------------------------------------
# options every model has (the backbone's) and those of the methods that train on CutMix-ed batches
# (`cutmix`, `saol`); a method overrides their defaults with ``Method.option_defaults``

BACKBONE_OPTIONS: tuple[Option, ...] = (
    Option("last_stride", int, 2, "1 keeps the last stage at stride 1"),
    Option("small_stem", bool, False, "stem keeps full resolution (small inputs)"),
)

CUTMIX_OPTIONS: tuple[Option, ...] = (
    Option("cutmix_prob", float, 0.5, "probability that a batch is CutMix-ed (one box and one λ per batch)",
           in_unit_interval("cutmix_prob"), legacy=("cutmix", "prob")),
    Option("cutmix_alpha", float, 1.0, "Beta(α, α) for the kept-area ratio λ", legacy=("cutmix", "alpha")),
)


def values_of(options: tuple[Option, ...], given: Mapping[str, Any]) -> dict[str, Any]:
    """Return every option's value: the given one (checked and coerced) or its default."""
    out: dict[str, Any] = {}
    for opt in options:
        if opt.name in given:
            opt.validate(given[opt.name])
            out[opt.name] = opt.coerce(given[opt.name])
        else:
            out[opt.name] = opt.default
    return out
