"""Evaluate a checkpoint on a split and write eval.json, the curves (CSV + PNG) and a per-class CSV."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from saolctl.data import DigitsConfig, LocalizationDataset, default_workers, has_split, make_loader, open_dataset
from saolctl.engine.checkpoint import CheckpointError, atomic_save, load_checkpoint, model_from_checkpoint
from saolctl.engine.distributed import DistContext, barrier, cleanup, eval_sampler, init_distributed, sum_counters
from saolctl.data.maps_dir import MapWriter
from saolctl.data.split_targets import dataset_image_ids
from saolctl.engine.evaluate import EvalReport, evaluate, summarize
from saolctl.engine.map_scoring import MapScorer
from saolctl.engine.device import autocast_factory, resolve_device, wants_channels_last
from saolctl.engine.validation import check_int, check_output_dir, check_unit_interval
from saolctl.errors import UserError
from saolctl.localization.maps import check_map_kind, default_map_kind
from saolctl.methods.registry import get_method
from saolctl.models import create_model
from saolctl.models.backbones import imagenet_classifier
from saolctl.report.figures import plot_curves


PRETRAINED_METHOD = "cam"  # what an off-the-shelf ImageNet classifier is (GAP-FC), for eval without --ckpt


@dataclass(frozen=True)
class EvalSettings:
    """What to evaluate and how; ``None`` fields come from the checkpoint."""

    ckpt: Path | None  # None: an off-the-shelf ImageNet classifier's CAM (needs `pretrained_backbone`)
    data: str | None = None
    split: str | None = None  # default: "test" where the data has it, else "val"
    map_kind: str | None = None
    target: str = "gt"
    threshold_step: float = 0.001
    batch_size: int = 64
    workers: int | None = None  # None: none for the in-memory digits, else one per core up to 8
    device: str = "auto"
    amp: bool = False
    channels_last: bool | None = None  # None: on CPU only
    format: str | None = None
    boxes_dir: str | None = None
    strict_images: bool = False
    pretrained_backbone: str | None = None
    img_size: int = 224
    save_maps: Path | None = None  # write the scored maps here, one <image_id>.npy each (wsolevaluation's convention)

    def __post_init__(self) -> None:
        """Check the ranges before any model or data is loaded."""
        check_unit_interval("--thresholds-step", self.threshold_step, open_low=True)
        check_int("--batch-size", self.batch_size, 1)
        check_int("--workers", self.workers, 0, optional=True)
        check_int("--img-size", self.img_size, 16)
        if self.target not in ("gt", "pred"):
            raise UserError(f"--target must be gt or pred, got {self.target!r}")


@dataclass(frozen=True)
class LoadedRun:
    """A checkpoint with its model and the settings it was trained with."""

    ckpt: dict[str, Any]
    model: nn.Module
    class_names: list[str]
    img_size: int
    data_source: str
    data_format: str | None
    digits: DigitsConfig | None
    seed: int


def load_run(path: Path, device: torch.device) -> LoadedRun:
    """Load a checkpoint and its model, and recover how its data was opened."""
    ckpt = load_checkpoint(path)
    model = model_from_checkpoint(ckpt, device)
    cfg = ckpt["config"]
    data = cfg.get("data", {})
    digits = DigitsConfig(**data["digits"]) if data.get("digits") else None
    seed = int(cfg.get("train", {}).get("seed", 0))
    return LoadedRun(ckpt, model, list(cfg["class_names"]), int(cfg["img_size"]), str(data.get("source", "digits")),
                     data.get("format"), digits, seed)


def pretrained_cam_run(backbone: str, img_size: int, device: torch.device) -> LoadedRun:
    """Return the CAM model of an off-the-shelf ImageNet classifier (its own 1000-class head)."""
    model = create_model(backbone, PRETRAINED_METHOD, num_classes=1000, pretrained=True)
    get_method(PRETRAINED_METHOD).adopt_imagenet_classifier(model, imagenet_classifier(backbone))
    names = [str(i) for i in range(1000)]
    return LoadedRun({}, model.to(device).eval(), names, img_size, "", None, None, 0)


def check_imagenet_labels(ds: LocalizationDataset, source: str) -> None:
    """Refuse data whose class indices cannot be ImageNet-1k indices."""
    describe = ds.describe()
    fmt = describe.get("format")
    if fmt == "wsol" and ds.num_classes <= 1000:
        return  # the layout's own numbering: class_labels.txt holds ImageNet indices
    if fmt == "imagefolder" and ds.num_classes == 1000:
        return  # 1000 wnid folders in sorted order are ImageNet's index order
    raise UserError(
        f"{source} has {ds.num_classes} classes ({fmt}): an ImageNet classifier needs a WSOL-metadata layout "
        "whose class labels are ImageNet indices, or an ImageFolder of all 1000 wnid folders"
    )


def open_eval_dataset(run: LoadedRun, settings: EvalSettings) -> tuple[LocalizationDataset, str]:
    """Open the evaluated split of the run's data (or of ``settings.data``) and check it fits the model."""
    source = settings.data or run.data_source
    same = settings.data is None or settings.data == run.data_source
    common = dict(train=False, img_size=run.img_size, format=settings.format or (run.data_format if same else None),
                  boxes_dir=Path(settings.boxes_dir) if settings.boxes_dir else None,
                  strict_images=settings.strict_images, seed=run.seed, digits=run.digits if same else None)
    # the default is test; val only where the data has no test split at all (a test split that fails to
    # load is an error, never a silent switch to another split)
    split = settings.split or ("test" if has_split(source, "test", common["format"]) else "val")
    ds = open_dataset(source, split, **common)
    if run.ckpt and len(ds.class_names) != len(run.class_names):
        raise CheckpointError(
            f"the checkpoint has {len(run.class_names)} classes but {source} ({split}) has {len(ds.class_names)}"
        )
    return ds, split


def stores_threshold(settings: EvalSettings, run: LoadedRun, split: str, kind: str) -> bool:
    """Return whether this evaluation may record its best threshold in the checkpoint (for `localize`).

    Only the checkpoint's own validation split, on its own data and layout, with the GT-known map of the
    method's default kind: the setting the threshold is defined for.
    """
    if settings.ckpt is None or settings.target != "gt" or kind != default_map_kind(run.model.config.method):
        return False
    data = run.ckpt.get("config", {}).get("data", {})
    own_data = settings.data in (None, run.data_source) and settings.format in (None, run.data_format)
    return own_data and settings.boxes_dir is None and split == data.get("val_split", "val")


def run_eval(
    settings: EvalSettings, out_dir: Path | None = None, on_batch: Callable[[int], None] | None = None,
    on_start: Callable[[int], None] | None = None,
) -> tuple[EvalReport, dict[str, Any], Path]:
    """Evaluate a checkpoint; write eval.json, curves.csv/png, per_class.csv (default: beside it, eval-<split>).

    Under ``torchrun`` each rank evaluates its own shard of the split (no image twice, none left out), the
    counters are summed over ranks, and rank 0 writes the outputs: the metrics equal a single process's.
    """
    if out_dir is not None:
        check_output_dir(out_dir)  # fail before the evaluation, not after it
    if settings.save_maps is not None:
        check_output_dir(settings.save_maps)
    ctx = init_distributed(resolve_device(settings.device))
    try:
        return _run_eval(settings, out_dir, on_batch, on_start, ctx)
    finally:
        cleanup(ctx)


def _run_eval(
    settings: EvalSettings, out_dir: Path | None, on_batch: Callable[[int], None] | None,
    on_start: Callable[[int], None] | None, ctx: DistContext,
) -> tuple[EvalReport, dict[str, Any], Path]:
    """Evaluate on this process's shard, sum the counters over ranks, and write the outputs on rank 0."""
    device = ctx.device
    if settings.ckpt is None:
        if not settings.pretrained_backbone or not settings.data:
            raise UserError("without --ckpt, give --method cam --backbone NAME --pretrained and --data PATH")
        run = pretrained_cam_run(settings.pretrained_backbone, settings.img_size, device)
    else:
        run = load_run(settings.ckpt, device)
    method = run.model.config.method
    kind = settings.map_kind or default_map_kind(method)
    check_map_kind(method, kind)
    ds, split = open_eval_dataset(run, settings)
    if settings.ckpt is None:
        check_imagenet_labels(ds, str(settings.data))
    workers = default_workers(settings.data or run.data_source) if settings.workers is None else settings.workers
    loader = make_loader(ds, settings.batch_size, shuffle=False, workers=workers, seed=run.seed,
                         sampler=eval_sampler(len(ds), ctx, settings.batch_size))
    if on_start is not None:
        on_start(len(loader.sampler))  # type: ignore[arg-type]  # this rank's shard
    model = run.model
    channels_last = wants_channels_last(settings.channels_last, device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    saver = MapWriter(settings.save_maps, dataset_image_ids(ds), kind) if settings.save_maps else None
    with MapScorer(workers) as scorer:  # --workers N >= 2: the contour work in N processes
        counters = evaluate(model, loader, num_classes=len(run.class_names), device=device,
                            with_boxes=ds.has_boxes, with_masks=ds.has_masks, map_kinds=[kind],
                            target=settings.target, threshold_step=settings.threshold_step, on_batch=on_batch,
                            autocast=autocast_factory(device, settings.amp), channels_last=channels_last,
                            scorer=scorer, on_maps=saver)
    sum_counters(counters.values(), ctx)  # exact: int64 counters of disjoint shards
    report = summarize(counters[kind], run.class_names)
    meta = {
        "checkpoint": str(settings.ckpt) if settings.ckpt else f"pretrained:{settings.pretrained_backbone}",
        "method": method, "backbone": run.model.config.backbone,
        "map": kind, "target": settings.target, "data": settings.data or run.data_source, "split": split,
        "img_size": run.img_size, "threshold_step": settings.threshold_step,
    }
    out_dir = out_dir or (Path(settings.ckpt).parent if settings.ckpt else Path("runs")) / f"eval-{split}"
    meta["stored_threshold"] = "best_threshold" in report.metrics and stores_threshold(settings, run, split, kind)
    if ctx.is_main:  # only rank 0 writes
        write_eval_outputs(report, meta, out_dir)
        if saver is not None:
            saver.write_manifest(saved_maps_info(meta, run, settings))
        if meta["stored_threshold"]:
            store_threshold(Path(settings.ckpt), run.ckpt, float(report.metrics["best_threshold"]))
    barrier(ctx)
    return report, meta, out_dir


def saved_maps_info(meta: dict[str, Any], run: LoadedRun, settings: EvalSettings) -> dict[str, Any]:
    """Return what ``--save-maps`` records beside the maps, so that ``eval --maps`` finds the same data."""
    same = settings.data is None or settings.data == run.data_source
    digits = run.digits if same else None
    return {**{k: meta[k] for k in ("checkpoint", "method", "backbone", "map", "target", "data", "split", "img_size")},
            "data_format": settings.format or (run.data_format if same else None),
            "digits": None if digits is None else asdict(digits), "seed": run.seed}


def write_eval_outputs(report: EvalReport, meta: dict[str, Any], out_dir: Path) -> None:
    """Write eval.json (metrics in percent + meta), curves.csv/png and per_class.csv."""
    out_dir.mkdir(parents=True, exist_ok=True)
    payload = {**report.metrics, "meta": meta}
    (out_dir / "eval.json").write_text(json.dumps(payload, indent=2))
    report.per_class.to_csv(out_dir / "per_class.csv", index=False)
    if len(report.curves.columns) > 1:
        report.curves.to_csv(out_dir / "curves.csv", index=False)
        label = f"{meta['method']} ({meta['map']})"
        plot_curves({label: report.curves}, out_dir / "curves.png",
                    title=f"BoxAcc vs threshold — {label}, {meta['data']} {meta['split']}")


def store_threshold(path: Path, ckpt: dict[str, Any], threshold: float) -> None:
    """Record a validation split's best threshold in the checkpoint (for `localize`), atomically."""
    ckpt = dict(ckpt)
    ckpt["best_threshold"] = threshold
    atomic_save(ckpt, path)
