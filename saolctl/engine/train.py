"""The training loop: plain and readable, as torchvision's references.

``train(config)`` builds data, model, objective, optimiser and schedule, then for each epoch trains,
validates (accuracy, and MaxBoxAccV2 when the split has boxes), appends a row to ``metrics.csv`` and
writes ``last.pt`` atomically, and ``best.pt`` when its selection metric improved: validation MaxBoxAccV2
when the validation split has boxes (then ``best_top1.pt`` keeps the top-1 choice too), else top-1.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np
import pandas as pd
import torch
from torch import nn

from saolctl.data import DigitsConfig, default_workers, make_loader, open_dataset
from saolctl.engine.checkpoint import (
    CheckpointError,
    atomic_save,
    atomic_write_text,
    load_checkpoint,
    make_checkpoint,
    remove_stale_temps,
)
from saolctl.engine.distributed import (
    DistContext, all_gather_objects, all_reduce_sum, barrier, broadcast_buffers, cleanup, eval_sampler,
    init_distributed, sum_counters, train_sampler, wrap_ddp,
)
from saolctl.engine.evaluate import evaluate, summarize
from saolctl.engine.recipes import Recipe, recipe_for
from saolctl.engine.validation import (
    check_int, check_model_options, check_number, check_output_dir, check_unit_interval,
)
from saolctl.errors import UserError
from saolctl.methods.registry import get_method
from saolctl.models import build_model, create_objective, list_backbones, make_config


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
    amp: bool = False
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


class Reporter(Protocol):
    """Receives progress events from the loop (the CLI draws them; tests may record them)."""

    def start(self, epochs: int, steps_per_epoch: int, start_epoch: int) -> None: ...

    def step(self, epoch: int, step: int, terms: dict[str, float], images_per_s: float) -> None: ...

    def epoch_end(self, epoch: int, row: dict[str, Any]) -> None: ...

    def message(self, text: str) -> None: ...


class SilentReporter:
    """A reporter that reports nothing."""

    def start(self, epochs: int, steps_per_epoch: int, start_epoch: int) -> None:
        """Ignore."""

    def step(self, epoch: int, step: int, terms: dict[str, float], images_per_s: float) -> None:
        """Ignore."""

    def epoch_end(self, epoch: int, row: dict[str, Any]) -> None:
        """Ignore."""

    def message(self, text: str) -> None:
        """Ignore."""


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


def best_checkpoints(has_boxes: bool) -> dict[str, str]:
    """Return {file name: validation metric it is chosen on}; best.pt is on localization when val has boxes.

    A WSOL run is selected on MaxBoxAccV2 (the protocol's localization metric, computed on validation every
    epoch); the top-1 choice is kept beside it as best_top1.pt. Without boxes only top-1 can choose.
    """
    if has_boxes:
        return {"best.pt": "val_max_box_acc_v2", "best_top1.pt": "val_top1"}
    return {"best.pt": "val_top1"}


def class_coverage_warning(class_names: list[str], train_labels: np.ndarray, val_labels: np.ndarray) -> str | None:
    """Return a one-line warning naming the classes without training images and those without validation images."""
    k = len(class_names)
    no_train = [class_names[i] for i in np.flatnonzero(np.bincount(train_labels, minlength=k) == 0)]
    no_val = [class_names[i] for i in np.flatnonzero(np.bincount(val_labels, minlength=k) == 0)]
    if not no_train and not no_val:
        return None
    parts = []
    if no_train:
        parts.append(f"classes without training images (never learned): {', '.join(no_train)}")
    if no_val:
        parts.append(f"classes without validation images (not validated): {', '.join(no_val)}")
    return "warning: train and val have different class sets; " + "; ".join(parts)


def restore_scaler(scaler: torch.amp.GradScaler, state: dict[str, Any]) -> None:
    """Load a saved GradScaler state; a run saved without AMP (empty state) resumed with it starts a fresh scale."""
    if state and scaler.is_enabled():
        scaler.load_state_dict(state)


def resolve_device(name: str) -> torch.device:
    """Return the torch device for 'auto', 'cpu' or 'cuda[:N]'."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for but CUDA is not available on this machine")
    if name != "cpu" and not name.startswith("cuda"):
        raise UserError(f"--device must be auto, cpu or cuda, got {name!r}")
    return torch.device(name)


def wants_channels_last(asked: bool | None, device: torch.device) -> bool:
    """Return whether to use torch.channels_last: as asked, else on CPU (oneDNN's fast layout for convolutions)."""
    return device.type == "cpu" if asked is None else bool(asked)


def autocast_factory(device: torch.device, enabled: bool) -> Callable[[], Any]:
    """Return a context factory: bfloat16 autocast on CPU, float16 on CUDA, or a no-op."""
    if not enabled:
        return contextlib.nullcontext
    dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    return lambda: torch.autocast(device_type=device.type, dtype=dtype)


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


def rng_state(rng: np.random.Generator) -> dict[str, Any]:
    """Return every random state a resumed run needs, as plain values and tensors."""
    return {
        "numpy": rng.bit_generator.state,
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng(rng: np.random.Generator, state: dict[str, Any]) -> None:
    """Restore the random states saved by :func:`rng_state`."""
    rng.bit_generator.state = state["numpy"]
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class NonFiniteLoss(UserError):
    """The loss became NaN or infinite (a diverged run: one line, the user changes the lr or the data)."""


def compile_model(model: nn.Module, device: torch.device) -> nn.Module:
    """Return ``torch.compile(model)``, failing in one line when the CPU backend has no C++ compiler."""
    if device.type == "cpu" and not any(shutil.which(c) for c in ("g++", "c++", "clang++")):
        raise UserError("--compile on CPU needs a C++ compiler (g++, c++ or clang++) on PATH; "
                        "install one or drop --compile")
    return torch.compile(model)


def is_compile_error(exc: BaseException) -> bool:
    """Return whether an exception was raised by torch.compile's machinery (dynamo / inductor)."""
    return type(exc).__module__.startswith(("torch._dynamo", "torch._inductor"))


def train(config: TrainConfig, reporter: Reporter | None = None) -> TrainResult:
    """Train one model as ``config`` says and return where its files are.

    Under ``torchrun`` (WORLD_SIZE > 1) every process runs this: DistributedDataParallel, a sharded
    training order, validation counters summed over ranks; only rank 0 reports and writes files.
    """
    recipe = config.recipe()
    ctx = init_distributed(resolve_device(config.device))
    try:
        return _train(config, recipe, reporter if ctx.is_main and reporter else SilentReporter(), ctx)
    finally:
        cleanup(ctx)


def _train(config: TrainConfig, recipe: Recipe, reporter: Reporter, ctx: DistContext) -> TrainResult:
    """Run the training loop of one process (the only one, or one rank of a torchrun)."""
    device = ctx.device
    out = Path(config.out)
    check_output_dir(out)
    if out.is_dir() and ctx.is_main:
        remove_stale_temps(out)  # hidden temp files of a save that a kill interrupted
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed + ctx.rank)  # CutMix: a different, reproducible stream per rank

    common = dict(img_size=recipe.img_size, format=config.format,
                  boxes_dir=Path(config.boxes_dir) if config.boxes_dir else None,
                  strict_images=config.strict_images, seed=config.seed, digits=config.digits)
    train_ds = open_dataset(config.data, config.train_split, train=True, **common)
    val_ds = open_dataset(config.data, config.val_split, train=False, **common)
    num_classes = len(train_ds.class_names)

    options = {**recipe.model_options, **config.model_options}
    model_cfg = make_config(recipe.backbone, config.method, num_classes, **options)
    net = build_model(model_cfg, pretrained=recipe.pretrained, init=config.init).to(device)
    channels_last = wants_channels_last(config.channels_last, device)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    model = wrap_ddp(net, ctx)  # `net` is the plain module: optimiser groups, evaluation, checkpoints
    if config.compile:
        model = compile_model(model, device)
    if ctx.rank > 0:
        torch.manual_seed(config.seed + ctx.rank)  # dropout and the like differ per rank (weights come from rank 0)
    objective = create_objective(model_cfg)

    # per-process batches: the global batch is batch_size * world_size; the order is the same on every
    # rank's sampler, augmentation seeds differ per rank (the SeededSampler's seed), so resumes stay exact.
    sampler = train_sampler(len(train_ds), ctx, seed=config.seed)
    n_local = len(sampler) if sampler is not None else len(train_ds)
    workers = default_workers(config.data) if config.workers is None else config.workers
    loader = make_loader(train_ds, recipe.batch_size, shuffle=True, workers=workers,
                         seed=config.seed + ctx.rank, sampler=sampler, drop_last=n_local > recipe.batch_size)
    val_loader = make_loader(val_ds, recipe.batch_size, shuffle=False, workers=workers, seed=config.seed,
                             sampler=eval_sampler(len(val_ds), ctx, recipe.batch_size))
    steps_per_epoch = len(loader)
    total_steps = steps_per_epoch * recipe.epochs
    optimizer = make_optimizer(recipe, net)
    scheduler = make_scheduler(optimizer, total_steps, int(recipe.warmup_epochs * steps_per_epoch))
    scaler = torch.amp.GradScaler("cuda", enabled=config.amp and device.type == "cuda")
    autocast = autocast_factory(device, config.amp)

    data_desc = {"source": config.data, "format": config.format, "train_split": config.train_split,
                 "val_split": config.val_split, "recipe": recipe.to_dict(),
                 "digits": asdict(config.digits) if config.digits else None}
    coverage = class_coverage_warning(train_ds.class_names, train_ds.labels, val_ds.labels)
    if coverage:
        reporter.message(coverage)
    kept = best_checkpoints(val_ds.has_boxes)  # file name -> validation metric it is chosen on
    run_config = {"train": _plain(asdict(config)), "recipe": recipe.to_dict(), "model": model_cfg.to_dict(),
                  "class_names": train_ds.class_names, "device": str(device), "world_size": ctx.world_size,
                  "workers": workers, "best_checkpoints": kept, "warnings": [coverage] if coverage else []}
    start_epoch, best_scores, history = 0, {metric: -1.0 for metric in kept.values()}, []
    last_path, best_path = out / "last.pt", out / "best.pt"
    resumed = load_checkpoint(last_path) if config.resume else None  # before anything is written
    was = resumed["config"]["model"] if resumed is not None else {}
    key = ("method", "backbone", "num_classes")
    if resumed is not None and [was.get(k) for k in key] != [getattr(model_cfg, k) for k in key]:
        raise CheckpointError(
            f"cannot resume: {last_path} holds a {was.get('method')}/{was.get('backbone')} model with "
            f"{was.get('num_classes')} classes, but this run builds {model_cfg.method}/{model_cfg.backbone} "
            f"with {model_cfg.num_classes}"
        )
    if resumed is not None and int(resumed.get("world_size", 1)) != ctx.world_size:
        raise UserError(f"{last_path} was written by a run of {int(resumed.get('world_size', 1))} process(es); "
                        f"resume it with the same number, not {ctx.world_size}")
    if ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "config.json", json.dumps(run_config, indent=2, default=str))

    if resumed is not None:
        ckpt = resumed
        net.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        restore_scheduler(scheduler, ckpt["scheduler"])
        restore_scaler(scaler, ckpt["scaler"])
        restore_rng(rng, ckpt["rng_by_rank"][ctx.rank] if ctx.enabled else ckpt["rng"])
        start_epoch = int(ckpt["epoch"]) + 1
        saved = ckpt.get("best_scores") or {"val_top1": float(ckpt.get("best_top1", -1.0))}
        best_scores.update({k: float(v) for k, v in saved.items() if k in best_scores})
        if (out / "metrics.csv").exists():
            history = pd.read_csv(out / "metrics.csv").to_dict("records")[:start_epoch]
        reporter.message(f"resumed from {last_path} at epoch {start_epoch + 1}")

    reporter.start(recipe.epochs, steps_per_epoch, start_epoch)
    metrics: dict[str, Any] = history[-1] if history else {}
    for epoch in range(start_epoch, recipe.epochs):
        model.train()
        loader.sampler.set_epoch(epoch)  # order and augmentation depend on (seed, epoch) only: resumable
        sums: dict[str, float] = {}
        seen, t0 = 0, time.perf_counter()
        for step, batch in enumerate(loader):
            images = batch.images.to(device, non_blocking=True)
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            labels = batch.labels.to(device, non_blocking=True)
            try:
                with autocast():
                    terms = objective(model, images, labels, rng)
            except Exception as exc:
                if config.compile and is_compile_error(exc):
                    raise UserError(f"--compile failed at epoch {epoch + 1}, step {step + 1} "
                                    f"({type(exc).__name__}); run without --compile") from exc
                raise
            if not torch.isfinite(terms.total):
                raise NonFiniteLoss(
                    f"loss became {float(terms.total.detach())} at epoch {epoch + 1}, step {step + 1}; "
                    f"the last good checkpoint is {last_path if last_path.exists() else 'not written yet'}"
                )
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(terms.total).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            values = terms.as_floats()
            for k, v in values.items():
                sums[k] = sums.get(k, 0.0) + v * len(labels)
            seen += len(labels)
            reporter.step(epoch, step, values, seen / max(time.perf_counter() - t0, 1e-9))
        train_time = time.perf_counter() - t0
        keys = sorted(sums)  # the same term names on every rank
        totals = all_reduce_sum(np.array([float(seen), *(sums[k] for k in keys)], np.float64), ctx)
        seen_all, sums = int(totals[0]), dict(zip(keys, totals[1:].tolist()))
        row: dict[str, Any] = {"epoch": epoch + 1, "lr": scheduler.get_last_lr()[-1],
                               "train_images_per_s": seen_all / max(train_time, 1e-9)}
        row.update({f"loss_{k}": v / max(seen_all, 1) for k, v in sums.items()})
        broadcast_buffers(net, ctx)  # rank 0's BatchNorm statistics everywhere: what the checkpoint holds
        counters = evaluate(net, val_loader, num_classes=num_classes, device=device,
                            with_boxes=val_ds.has_boxes, with_masks=False,
                            threshold_step=config.threshold_step, autocast=autocast,
                            channels_last=channels_last)
        sum_counters(counters.values(), ctx)  # exact: the shards cover the split once, counters are int64
        report = summarize(next(iter(counters.values())), val_ds.class_names)
        row.update({f"val_{k}": v for k, v in report.metrics.items() if not isinstance(v, list)})
        history.append(row)
        metrics = row
        improved = [name for name, metric in kept.items() if row[metric] > best_scores[metric]]
        for metric in kept.values():
            best_scores[metric] = max(best_scores[metric], row[metric])
        rng_states = all_gather_objects(rng_state(rng), ctx)
        if not ctx.is_main:
            continue  # only rank 0 writes files
        atomic_write_text(out / "metrics.csv", pd.DataFrame(history).to_csv(index=False))
        resume_state: dict[str, Any] = {
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
            "rng": rng_states[0], "epoch": epoch, "best_scores": dict(best_scores),
        }
        if ctx.enabled:
            resume_state.update({"world_size": ctx.world_size, "rng_by_rank": rng_states})
        ckpt = make_checkpoint(
            net, class_names=train_ds.class_names, img_size=recipe.img_size, data=data_desc,
            metrics=_plain(row), best_threshold=row.get("val_best_threshold"), train=_plain(asdict(config)),
            resume=resume_state,
        )
        atomic_save(ckpt, last_path)
        if improved:
            for key in ("optimizer", "scheduler", "scaler", "rng", "world_size", "rng_by_rank", "best_scores"):
                ckpt.pop(key, None)
            for name in improved:
                atomic_save({**ckpt, "selected_on": kept[name]}, out / name)
        reporter.epoch_end(epoch, row)
    barrier(ctx)  # every rank returns once rank 0's files are written
    return TrainResult(out, last_path, best_path, metrics, pd.DataFrame(history), kept["best.pt"],
                       {metric: out / name for name, metric in kept.items()})


def _plain(d: dict[str, Any]) -> dict[str, Any]:
    """Return a copy of d with paths as strings and numpy scalars as Python numbers."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, Path):
            v = str(v)
        elif isinstance(v, np.generic):
            v = v.item()
        elif isinstance(v, dict):
            v = _plain(v)
        out[k] = v
    return out
