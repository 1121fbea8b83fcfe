"""Optimiser and learning-rate schedule of a training run (from its recipe)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from saolctl.engine.device import restore_scaler
from saolctl.engine.recipes import Recipe


def param_groups(model: nn.Module, lr: float, backbone_lr_mult: float, weight_decay: float) -> list[dict[str, Any]]:
    """Return optimiser groups: backbone at lr * mult, heads at lr; no weight decay on norms and biases."""
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        key = (name.startswith("backbone."), p.ndim <= 1)
        groups.setdefault(key, []).append(p)
    out = []
    for (is_backbone, no_decay), params in sorted(groups.items()):
        group_lr = lr * (backbone_lr_mult if is_backbone else 1.0)
        out.append({"params": params, "lr": group_lr, "initial_lr": group_lr,
                    "weight_decay": 0.0 if no_decay else weight_decay})
    return out


def make_optimizer(recipe: Recipe, model: nn.Module) -> torch.optim.Optimizer:
    """Return the recipe's optimiser over the model's parameter groups."""
    groups = param_groups(model, recipe.lr, recipe.backbone_lr_mult, recipe.weight_decay)
    if recipe.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=recipe.lr)
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=recipe.lr, momentum=recipe.momentum, nesterov=True)
    raise ValueError(f"unknown optimizer {recipe.optimizer!r}; valid: sgd, adamw")


def make_scheduler(optimizer: torch.optim.Optimizer, total_steps: int,
                   warmup_steps: int) -> torch.optim.lr_scheduler.LRScheduler:
    """Return the per-step schedule: linear warm-up to the peak over ``warmup_steps``, then cosine decay to 0."""
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(total_steps - warmup_steps, 1))
    if warmup_steps < 1:
        return cosine
    # step t < W: (t + 1) / W of the peak, reaching it at the last warm-up step
    warmup = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=1.0 / warmup_steps, end_factor=1.0,
                                               total_iters=max(warmup_steps - 1, 1))
    return torch.optim.lr_scheduler.SequentialLR(optimizer, [warmup, cosine], milestones=[warmup_steps])


def restore_scheduler(scheduler: torch.optim.lr_scheduler.LRScheduler, state: dict[str, Any]) -> None:
    """Load a saved schedule; one saved before saolctl used SequentialLR (a LambdaLR) is replayed to its step."""
    if "lr_lambdas" not in state:
        scheduler.load_state_dict(state)
        return
    with warnings.catch_warnings():  # stepping the schedule without optimiser steps is the point here
        warnings.simplefilter("ignore", UserWarning)
        for _ in range(int(state["last_epoch"])):  # the schedule is a function of the step alone
            scheduler.step()


@dataclass
class Stepper:
    """The optimiser, its schedule and the loss scaler, stepped together once per training batch."""

    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler

    def step(self, loss: Tensor) -> None:
        """Back-propagate ``loss`` and take one optimiser and one schedule step."""
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()

    @property
    def lr(self) -> float:
        """Return the learning rate of the last parameter group (the heads')."""
        return float(self.scheduler.get_last_lr()[-1])

    def state_dict(self) -> dict[str, Any]:
        """Return the optimiser, schedule and scaler states under a checkpoint's keys."""
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the states saved by :meth:`state_dict` (older schedules and non-AMP scalers included)."""
        self.optimizer.load_state_dict(state["optimizer"])
        restore_scheduler(self.scheduler, state["scheduler"])
        restore_scaler(self.scaler, state["scaler"])


def make_stepper(recipe: Recipe, model: nn.Module, steps_per_epoch: int, scaler: torch.amp.GradScaler) -> Stepper:
    """Return the recipe's optimiser and per-step schedule over ``model`` with ``scaler``."""
    optimizer = make_optimizer(recipe, model)
    total_steps = steps_per_epoch * recipe.epochs
    scheduler = make_scheduler(optimizer, total_steps, int(recipe.warmup_epochs * steps_per_epoch))
    return Stepper(optimizer, scheduler, scaler)
