"""The training loop: plain and readable, as torchvision's references.

``train(config)`` builds data, model, objective, optimiser and schedule, then for each epoch trains
(:func:`train_one_epoch`), validates (:func:`validate`: accuracy, and MaxBoxAccV2 when the split has boxes),
appends a row to ``metrics.csv`` and writes ``last.pt`` atomically, and ``best.pt`` when its selection metric
improved: validation MaxBoxAccV2 when the validation split has boxes (then ``best_top1.pt`` keeps the top-1
choice too), else top-1. Config, reporting, device and precision, optimiser and schedule, and random states
live in their own modules beside this one.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader

from saolctl.data import default_workers, make_loader, open_dataset
from saolctl.data.coverage import class_coverage_warning
from saolctl.engine.checkpoint import (
    CheckpointError, atomic_save, atomic_write_text, best_checkpoints, load_checkpoint, make_checkpoint,
    remove_stale_temps,
)
from saolctl.engine.device import (
    autocast_factory, compile_model, evaluation_autocast, is_compile_error, make_scaler, precision_name, resolve_amp,
    resolve_device, wants_channels_last,
)
from saolctl.engine.distributed import (
    DistContext, all_gather_objects, all_reduce_sum, barrier, broadcast_buffers, cleanup, eval_sampler,
    init_distributed, sum_counters, train_sampler, wrap_ddp,
)
from saolctl.engine.evaluate import evaluate, summarize
from saolctl.engine.optim import Stepper, make_stepper
from saolctl.engine.recipes import Recipe
from saolctl.engine.reporting import Reporter, SilentReporter
from saolctl.engine.rng import restore_rng, rng_state
from saolctl.engine.train_config import TrainConfig, TrainResult, plain_values
from saolctl.engine.validation import check_output_dir
from saolctl.errors import UserError
from saolctl.methods.base import Objective
from saolctl.models import ModelConfig, build_model, create_objective, make_config

__all__ = ["NonFiniteLoss", "Reporter", "SilentReporter", "TrainConfig", "TrainResult", "train",
           "train_one_epoch", "validate"]


class NonFiniteLoss(UserError):
    """The loss became NaN or infinite (a diverged run: one line, the user changes the lr or the data)."""


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
    device, out = ctx.device, Path(config.out)
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

    options = {**recipe.options_for(config.method), **config.model_options}
    model_cfg = make_config(recipe.backbone, config.method, len(train_ds.class_names), **options)
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
    amp = resolve_amp(config.amp, device)
    stepper = make_stepper(recipe, net, len(loader), make_scaler(device, amp))
    autocast = autocast_factory(device, amp)
    val_autocast = evaluation_autocast(device, config.amp)  # picks best.pt and the kept threshold, as `eval` does
    if amp and config.amp is None:
        reporter.message(f"{precision_name(device, amp)} for training: the default on a CPU with AMX "
                         "(--no-amp for float32)")

    coverage = class_coverage_warning(train_ds.class_names, train_ds.labels, val_ds.labels)
    if coverage:
        reporter.message(coverage)
    kept = best_checkpoints(val_ds.has_boxes)  # file name -> validation metric it is chosen on
    run_config = {"train": plain_values(asdict(config)), "recipe": recipe.to_dict(), "model": model_cfg.to_dict(),
                  "class_names": train_ds.class_names, "device": str(device),
                  "precision": precision_name(device, amp), "world_size": ctx.world_size,
                  "workers": workers, "best_checkpoints": kept, "warnings": [coverage] if coverage else []}
    last_path = out / "last.pt"
    resumed = load_checkpoint(last_path) if config.resume else None  # before anything is written
    if resumed is not None:
        check_resumable(resumed, model_cfg, ctx.world_size, last_path)
    if ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "config.json", json.dumps(run_config, indent=2, default=str))

    start_epoch, best_scores, history = 0, {metric: -1.0 for metric in kept.values()}, []
    if resumed is not None:
        net.load_state_dict(resumed["model"])
        stepper.load_state_dict(resumed)
        restore_rng(rng, resumed["rng_by_rank"][ctx.rank] if ctx.enabled else resumed["rng"])
        start_epoch = int(resumed["epoch"]) + 1
        saved = resumed.get("best_scores") or {"val_top1": float(resumed.get("best_top1", -1.0))}
        best_scores.update({k: float(v) for k, v in saved.items() if k in best_scores})
        if (out / "metrics.csv").exists():
            history = pd.read_csv(out / "metrics.csv").to_dict("records")[:start_epoch]
        reporter.message(f"resumed from {last_path} at epoch {start_epoch + 1}")

    data_desc = {"source": config.data, "format": config.format, "train_split": config.train_split,
                 "val_split": config.val_split, "recipe": recipe.to_dict(),
                 "digits": asdict(config.digits) if config.digits else None}
    reporter.start(recipe.epochs, len(loader), start_epoch)
    metrics: dict[str, Any] = history[-1] if history else {}
    for epoch in range(start_epoch, recipe.epochs):
        loader.sampler.set_epoch(epoch)  # order and augmentation depend on (seed, epoch) only: resumable
        row = train_one_epoch(model, objective, loader, stepper, rng, epoch=epoch, device=device,
                              autocast=autocast, channels_last=channels_last, ctx=ctx, reporter=reporter,
                              compiled=config.compile, last_path=last_path)
        broadcast_buffers(net, ctx)  # rank 0's BatchNorm statistics everywhere: what the checkpoint holds
        row.update(validate(net, val_loader, val_ds.class_names, has_boxes=val_ds.has_boxes, device=device,
                            threshold_step=config.threshold_step, autocast=val_autocast,
                            channels_last=channels_last, ctx=ctx))
        history.append(row)
        metrics = row
        improved = [name for name, metric in kept.items() if row[metric] > best_scores[metric]]
        for metric in kept.values():
            best_scores[metric] = max(best_scores[metric], row[metric])
        rng_states = all_gather_objects(rng_state(rng), ctx)
        if not ctx.is_main:
            continue  # only rank 0 writes files
        atomic_write_text(out / "metrics.csv", pd.DataFrame(history).to_csv(index=False))
        resume_state: dict[str, Any] = {**stepper.state_dict(), "rng": rng_states[0], "epoch": epoch,
                                        "best_scores": dict(best_scores)}
        if ctx.enabled:
            resume_state.update({"world_size": ctx.world_size, "rng_by_rank": rng_states})
        ckpt = make_checkpoint(
            net, class_names=train_ds.class_names, img_size=recipe.img_size, data=data_desc,
            metrics=plain_values(row), best_threshold=row.get("val_best_threshold"),
            train=plain_values(asdict(config)), resume=resume_state,
        )
        atomic_save(ckpt, last_path)
        save_best(ckpt, {name: kept[name] for name in improved}, out)
        reporter.epoch_end(epoch, row)
    barrier(ctx)  # every rank returns once rank 0's files are written
    return TrainResult(out, last_path, out / "best.pt", metrics, pd.DataFrame(history), kept["best.pt"],
                       {metric: out / name for name, metric in kept.items()})


def check_resumable(ckpt: dict[str, Any], model_cfg: ModelConfig, world_size: int, path: Path) -> None:
    """Raise in one line unless ``ckpt`` holds the same kind of model, written by as many processes."""
    was = ckpt["config"]["model"]
    key = ("method", "backbone", "num_classes")
    if [was.get(k) for k in key] != [getattr(model_cfg, k) for k in key]:
        raise CheckpointError(
            f"cannot resume: {path} holds a {was.get('method')}/{was.get('backbone')} model with "
            f"{was.get('num_classes')} classes, but this run builds {model_cfg.method}/{model_cfg.backbone} "
            f"with {model_cfg.num_classes}"
        )
    if int(ckpt.get("world_size", 1)) != world_size:
        raise UserError(f"{path} was written by a run of {int(ckpt.get('world_size', 1))} process(es); "
                        f"resume it with the same number, not {world_size}")


def train_one_epoch(model: nn.Module, objective: Objective, loader: DataLoader, stepper: Stepper,
                    rng: np.random.Generator, *, epoch: int, device: torch.device, autocast: Callable[[], Any],
                    channels_last: bool, ctx: DistContext, reporter: Reporter, compiled: bool = False,
                    last_path: Path | None = None) -> dict[str, Any]:
    """Train one epoch and return its row: epoch, lr, images/s and every loss term's mean over all ranks."""
    model.train()
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
            if compiled and is_compile_error(exc):
                raise UserError(f"--compile failed at epoch {epoch + 1}, step {step + 1} "
                                f"({type(exc).__name__}); run without --compile") from exc
            raise
        if not torch.isfinite(terms.total):
            last = last_path if last_path is not None and last_path.exists() else "not written yet"
            raise NonFiniteLoss(f"loss became {float(terms.total.detach())} at epoch {epoch + 1}, "
                                f"step {step + 1}; the last good checkpoint is {last}")
        stepper.step(terms.total)
        values = terms.as_floats()
        for k, v in values.items():
            sums[k] = sums.get(k, 0.0) + v * len(labels)
        seen += len(labels)
        reporter.step(epoch, step, values, seen / max(time.perf_counter() - t0, 1e-9))
    train_time = time.perf_counter() - t0
    keys = sorted(sums)  # the same term names on every rank
    totals = all_reduce_sum(np.array([float(seen), *(sums[k] for k in keys)], np.float64), ctx)
    seen_all = int(totals[0])
    row: dict[str, Any] = {"epoch": epoch + 1, "lr": stepper.lr, "train_images_per_s": seen_all / max(train_time, 1e-9)}
    row.update({f"loss_{k}": v / max(seen_all, 1) for k, v in zip(keys, totals[1:].tolist())})
    return row


def validate(net: nn.Module, loader: DataLoader, class_names: list[str], *, has_boxes: bool, device: torch.device,
             threshold_step: float, autocast: Callable[[], Any], channels_last: bool,
             ctx: DistContext) -> dict[str, Any]:
    """Return the validation metrics (``val_``-prefixed) of the default map kind, summed over all ranks."""
    counters = evaluate(net, loader, num_classes=len(class_names), device=device, with_boxes=has_boxes,
                        with_masks=False, threshold_step=threshold_step, autocast=autocast,
                        channels_last=channels_last)
    sum_counters(counters.values(), ctx)  # exact: the shards cover the split once, counters are int64
    report = summarize(next(iter(counters.values())), class_names)
    return {f"val_{k}": v for k, v in report.metrics.items() if not isinstance(v, list)}


def save_best(ckpt: dict[str, Any], improved: dict[str, str], out: Path) -> None:
    """Write ``ckpt`` (without its resume state) as each improved best checkpoint, noting its metric."""
    if not improved:
        return
    weights = {k: v for k, v in ckpt.items()
               if k not in ("optimizer", "scheduler", "scaler", "rng", "world_size", "rng_by_rank", "best_scores")}
    for name, metric in improved.items():
        atomic_save({**weights, "selected_on": metric}, out / name)
