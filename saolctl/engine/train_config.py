"""What a training run is asked to do (:class:`TrainConfig`) and what it returns (:class:`TrainResult`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from saolctl.data import DigitsConfig
from saolctl.engine.recipes import Recipe, recipe_for
from saolctl.engine.validation import check_int, check_model_options, check_number, check_unit_interval
from saolctl.errors import UserError
from saolctl.methods.registry import get_method
from saolctl.models import list_backbones


@dataclass(frozen=True)
class TrainConfig:
    """Everything one training run needs; ``None`` fields take the data's recipe defaults."""

    method: str = "saol"
    data: str = "digits"
    out: Path = Path("runs/train")
    backbone: str | None = None
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    img_size: int | None = None
    pretrained: bool | None = None
    init: str | None = None
    seed: int = 0
    device: str = "auto"
    amp: bool | None = None  # mixed precision; None: on for a CPU with AMX (bfloat16), off elsewhere
    channels_last: bool | None = None  # weights and inputs in torch.channels_last; None: on CPU only
    compile: bool = False  # torch.compile the training forward (evaluation stays eager)
    workers: int | None = None  # None: none for the in-memory digits, else one per core up to 8
    resume: bool = False
    format: str | None = None
    boxes_dir: str | None = None
    strict_images: bool = False
    train_split: str = "train"
    val_split: str = "val"
    threshold_step: float = 0.01  # validation each epoch; `eval` uses the protocol's 0.001
    digits: DigitsConfig | None = None
    model_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        """Check names, types and ranges before anything is built or written."""
        get_method(self.method)  # an unknown name fails listing the valid ones
        if self.backbone is not None and self.backbone not in list_backbones():
            raise UserError(f"unknown backbone {self.backbone!r}; valid: {', '.join(list_backbones())}")
        for name, minimum in (("epochs", 1), ("batch_size", 1), ("img_size", 16)):
            check_int(f"--{name.replace('_', '-')}", getattr(self, name), minimum, optional=True)
        check_int("--seed", self.seed)
        check_int("--workers", self.workers, 0, optional=True)
        check_number("--lr", self.lr, optional=True)
        if self.lr is not None and not self.lr > 0:
            raise UserError(f"--lr must be positive, got {self.lr}")
        check_unit_interval("threshold_step", self.threshold_step, open_low=True)
        check_model_options(self.model_options)
        if self.digits is not None:
            self.digits.validate()

    def recipe(self) -> Recipe:
        """Return the data's recipe with this config's overrides applied."""
        base = recipe_for(self.data, self.backbone)
        return base.with_overrides(  # the overrides were range-checked in __post_init__
            backbone=self.backbone, epochs=self.epochs, batch_size=self.batch_size, lr=self.lr,
            img_size=self.img_size, pretrained=self.pretrained,
        )


@dataclass(frozen=True)
class TrainResult:
    """Where a run wrote its files and its final validation metrics."""

    out: Path
    last: Path
    best: Path  # chosen on ``selected_on``
    metrics: dict[str, Any]
    history: pd.DataFrame
    selected_on: str = "val_top1"
    best_by: dict[str, Path] = field(default_factory=dict)  # every kept best checkpoint by its metric


def plain_values(d: dict[str, Any]) -> dict[str, Any]:
    """Return a copy of d with paths as strings and numpy scalars as Python numbers (for JSON and checkpoints)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, Path):
            v = str(v)
        elif isinstance(v, np.generic):
            v = v.item()
        elif isinstance(v, dict):
            v = plain_values(v)
        out[k] = v
    return out
