"""Compare methods under one protocol on the same images: table, curves, map grid and report.md.

Missing checkpoints are trained first, every method with the same recipe and budget. Each method is
evaluated under every map kind of its own that its model can draw (the method registry says which), on
the validation split (where thresholds are chosen) and on the test split (the reported numbers).
"""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pandas as pd
import torch

from saolctl.data import collate_samples, default_workers, denormalize, make_loader
from saolctl.data.loader import usable_cores
from saolctl.engine.eval_run import EvalSettings, LoadedRun, load_run, open_eval_dataset
from saolctl.engine.map_scoring import MapScorer
from saolctl.engine.evaluate import evaluate, summarize
from saolctl.engine.device import evaluation_autocast, resolve_device, wants_channels_last
from saolctl.engine.reporting import Reporter
from saolctl.engine.train import TrainConfig, TrainResult, train
from saolctl.engine.validation import check_int, check_model_options, check_output_dir, check_unit_interval
from saolctl.errors import UserError
from saolctl.localization.contours import largest_box
from saolctl.localization.maps import default_map_kind, find_map_kind, forward_options, own_map_kinds, score_maps
from saolctl.methods.registry import get_method, list_methods, shared_map_kinds
from saolctl.models import list_backbones
from saolctl.report.columns import COMPARE_COLUMNS, REPORT_COLUMNS
from saolctl.report.figures import plot_curves, save_grid
from saolctl.report.tables import markdown_table

TRAINED_CHECKPOINTS = ("last", "best", "best_top1")  # what --checkpoint may name
CHECKPOINT_WORDS = {
    "last": "last epoch (wsolevaluation's default, eval_checkpoint_type=last)",
    "best": "best.pt (the epoch of best validation MaxBoxAccV2 where validation has boxes, else top-1)",
    "best_top1": "epoch of best validation top-1 (best_top1.pt)",
}


@dataclass(frozen=True)
class CompareSettings:
    """Which methods to compare, on which data, and where to write."""

    methods: tuple[str, ...] = ("cam", "abn", "saol")
    ckpts: dict[str, Path] = field(default_factory=dict)
    data: str = "digits"
    out: Path = Path("runs/compare")
    seed: int = 0
    epochs: int | None = None
    backbone: str | None = None
    device: str = "auto"
    workers: int | None = None  # None: none for the in-memory digits, else one per core up to 8
    batch_size: int | None = None  # training batch (default: recipe); evaluation uses it too (default 128)
    amp: bool | None = None  # training as TrainConfig.amp (None: on for a CPU with AMX); evaluation only if True
    channels_last: bool | None = None  # None: on CPU only
    threshold_step: float = 0.001
    grid_images: int = 6
    model_options: dict[str, Any] = field(default_factory=dict)
    val_split: str = "val"
    test_split: str = "test"
    # which checkpoint of a method trained here is evaluated: "last" (wsolevaluation's default,
    # --eval_checkpoint_type last), "best" (best.pt: val MaxBoxAccV2 where val has boxes) or "best_top1"
    checkpoint: str = "last"
    # map kinds every method offers (post-hoc: gradcam, ...) evaluated beside each method's own kinds
    extra_maps: tuple[str, ...] = ()
    # processes for the contour work of every evaluation (None: one per core, up to 8); the numbers do not
    # depend on it
    scoring_processes: int | None = None

    def __post_init__(self) -> None:
        """Check methods, names and ranges before anything is trained or written."""
        check_methods(self.methods, self.ckpts)
        if self.backbone is not None and self.backbone not in list_backbones():
            raise UserError(f"unknown backbone {self.backbone!r}; valid: {', '.join(list_backbones())}")
        check_int("--epochs", self.epochs, 1, optional=True)
        check_int("--workers", self.workers, 0, optional=True)
        check_int("--batch-size", self.batch_size, 1, optional=True)
        check_unit_interval("--thresholds-step", self.threshold_step, open_low=True)
        check_model_options(self.model_options)
        shared = [k.name for k in shared_map_kinds()]
        for kind in self.extra_maps:
            if kind not in shared:
                raise UserError(f"--add-maps: {kind!r} is not a map kind every method has; valid: {', '.join(shared)}")
        if self.checkpoint not in TRAINED_CHECKPOINTS:
            raise UserError(f"--checkpoint must be one of {', '.join(TRAINED_CHECKPOINTS)}, got {self.checkpoint!r}")


@dataclass(frozen=True)
class CompareResult:
    """The comparison table and where its files are."""

    table: pd.DataFrame
    out: Path
    files: dict[str, Path]
    seconds: dict[str, float] = field(default_factory=dict)  # wall time of each stage (train:cam, eval:cam:val, ...)


def check_methods(methods: tuple[str, ...], ckpts: dict[str, Path]) -> None:
    """Raise ValueError for unknown or repeated methods, or checkpoints of methods not compared."""
    valid = list_methods()
    bad = [m for m in methods if m not in valid]
    if bad or not methods:
        raise UserError(f"unknown method(s) {', '.join(bad) or '(none given)'}; valid: {', '.join(valid)}")
    if len(set(methods)) != len(methods):
        raise UserError(f"a method is named twice in --methods: {','.join(methods)}")
    extra = sorted(set(ckpts) - set(methods))
    if extra:
        raise UserError(f"--ckpt given for {', '.join(extra)}, which is not in --methods")


def run_compare(
    settings: CompareSettings,
    reporter_for: Callable[[str], Reporter] | None = None,
    on_stage: Callable[[str], None] | None = None,
) -> CompareResult:
    """Train what is missing, evaluate every method and map kind, and write the comparison files."""
    say = on_stage or (lambda _text: None)
    out = Path(settings.out)
    check_output_dir(out)
    device = resolve_device(settings.device)
    runs: dict[str, LoadedRun] = {}
    seconds: dict[str, float] = {}
    workers = default_workers(settings.data) if settings.workers is None else settings.workers
    autocast = evaluation_autocast(device, settings.amp)
    channels_last = wants_channels_last(settings.channels_last, device)
    for method, path in settings.ckpts.items():  # a bad checkpoint fails before anything is trained or written
        runs[method] = load_run(Path(path), device)
        held = runs[method].model.config.method
        if held != method:
            raise UserError(f"--ckpt {method}={path} holds a {held} model")

    ckpt_paths: dict[str, Path] = {}
    for method in settings.methods:
        if method in settings.ckpts:
            ckpt_paths[method] = Path(settings.ckpts[method])
            continue
        say(f"training {method} (same recipe and budget for every method)")
        cfg = TrainConfig(method=method, data=settings.data, out=out / method, backbone=settings.backbone,
                          epochs=settings.epochs, batch_size=settings.batch_size, seed=settings.seed,
                          device=settings.device, amp=settings.amp, channels_last=settings.channels_last,
                          workers=settings.workers, val_split=settings.val_split,
                          model_options=settings.model_options)
        with timer(seconds, f"train:{method}"):
            ckpt_paths[method] = trained_checkpoint(train(cfg, reporter_for(method) if reporter_for else None),
                                                    settings.checkpoint)

    rows: list[dict[str, Any]] = []
    curves: dict[str, pd.DataFrame] = {}
    thresholds: dict[tuple[str, str], float] = {}
    test_ds = None
    with MapScorer(scoring_processes(settings.scoring_processes)) as scorer:  # contour work of every evaluation
        for method, path in ckpt_paths.items():
            if method not in runs:  # trained here; given checkpoints were loaded above
                runs[method] = load_run(path, device)
            run = runs[method]
            own = own_map_kinds(run.model)
            kinds = own + [k for k in settings.extra_maps if k not in own]
            for kind in settings.extra_maps:
                find_map_kind(method, kind).check_available(run.model)
            results = {}
            for split in (settings.val_split, settings.test_split):
                say(f"evaluating {method} on {split} ({', '.join(kinds)})")
                ds, _ = open_eval_dataset(run, EvalSettings(ckpt=path, data=settings.data, split=split))
                if split == settings.test_split:
                    test_ds = ds
                loader = make_loader(ds, settings.batch_size or 128, shuffle=False, workers=workers, seed=settings.seed)
                model = run.model.to(memory_format=torch.channels_last) if channels_last else run.model
                with timer(seconds, f"eval:{method}:{split}"):
                    counters = evaluate(model, loader, num_classes=len(run.class_names), device=device,
                                        with_boxes=ds.has_boxes, with_masks=ds.has_masks, map_kinds=kinds,
                                        threshold_step=settings.threshold_step, autocast=autocast,
                                        channels_last=channels_last, scorer=scorer)
                results[split] = {k: summarize(c, run.class_names) for k, c in counters.items()}
            for kind in kinds:
                test, val = results[settings.test_split][kind], results[settings.val_split][kind]
                row = {"method": method, "map": kind, "default_map": kind == default_map_kind(method)}
                row.update({k: v for k, v in test.metrics.items() if not isinstance(v, list)})
                row["val_top1"] = val.metrics["top1"]
                row["val_max_box_acc_v2"] = val.metrics.get("max_box_acc_v2", float("nan"))
                row["val_pxap"] = val.metrics.get("pxap", float("nan"))
                row["val_best_threshold"] = val.metrics.get("best_threshold", float("nan"))
                thresholds[(method, kind)] = float(row["val_best_threshold"])
                rows.append(row)
                if len(test.curves.columns) > 1:
                    curves[f"{method} ({kind})"] = test.curves
    table = pd.DataFrame(rows)
    table = table[[c for c in COMPARE_COLUMNS if c in table.columns]]
    out.mkdir(parents=True, exist_ok=True)

    files = {"csv": out / "compare.csv", "json": out / "compare.json", "report": out / "report.md"}
    table.to_csv(files["csv"], index=False)
    with timer(seconds, "figures"):
        if curves:
            files["curves"] = plot_curves(curves, out / "curves.png",
                                          title=f"BoxAcc vs threshold — {settings.data} test")
        if test_ds is not None and test_ds.has_boxes and settings.grid_images > 0:
            files["grid"] = _grid(runs, test_ds, thresholds, settings, device, out / "grid.png")
    files["json"].write_text(json.dumps({"data": settings.data, "seed": settings.seed,
                                         "checkpoints": {m: str(p) for m, p in ckpt_paths.items()},
                                         "checkpoint_rule": settings.checkpoint,
                                         "seconds": {k: round(v, 2) for k, v in seconds.items()},
                                         "rows": table.to_dict("records")}, indent=2, default=float))
    files["report"].write_text(report_markdown(table, settings, ckpt_paths, files))
    return CompareResult(table, out, files, seconds)


def scoring_processes(asked: int | None) -> int:
    """Return how many processes do compare's contour work: as asked, else one per core up to 8."""
    return max(1, asked) if asked is not None else usable_cores()


def trained_checkpoint(result: TrainResult, which: str) -> Path:
    """Return the checkpoint of a finished run that ``which`` names ("last", "best" or "best_top1")."""
    if which == "last":
        return result.last
    if which == "best":
        return result.best
    return result.best_by.get("val_top1", result.best)


@contextmanager
def timer(seconds: dict[str, float], key: str) -> Iterator[None]:
    """Add the wall time of the block to ``seconds[key]``."""
    start = time.perf_counter()
    try:
        yield
    finally:
        seconds[key] = seconds.get(key, 0.0) + time.perf_counter() - start


@torch.no_grad()
def _grid(runs: dict[str, LoadedRun], ds: Any, thresholds: dict[tuple[str, str], float],
          settings: CompareSettings, device: torch.device, path: Path) -> Path:
    """Draw the same test images under every (method, map kind) with its box at the validation threshold."""
    n = min(settings.grid_images, len(ds))
    picks = np.linspace(0, len(ds) - 1, n).round().astype(int).tolist()
    batch = collate_samples([ds[i] for i in picks])
    images = denormalize(batch.images).permute(0, 2, 3, 1).numpy()
    size = (batch.images.shape[-2], batch.images.shape[-1])
    columns: dict[str, list[np.ndarray]] = {}
    boxes: dict[str, list[np.ndarray]] = {}
    for method, run in runs.items():
        x = batch.images.to(device)
        kinds = [kind for kind in own_map_kinds(run.model) if (method, kind) in thresholds]
        out = run.model(x, **forward_options(method, kinds))
        for kind in kinds:
            maps = score_maps(run.model, out, batch.labels.to(device), size, kind, x).cpu().numpy()
            name = method if len(get_method(method).map_kinds) == 1 else f"{method}:{kind}"
            columns[name] = list(maps)
            tau = thresholds[(method, kind)]
            boxes[name] = [largest_box(m, tau)[None] if np.isfinite(tau) else np.zeros((0, 4)) for m in maps]
    class_names = next(iter(runs.values())).class_names
    titles = [class_names[int(c)] for c in batch.labels]
    return save_grid(path, list(images), columns, boxes, [b.numpy() for b in batch.boxes], titles)


def report_markdown(table: pd.DataFrame, settings: CompareSettings, ckpts: dict[str, Path],
                    files: dict[str, Path]) -> str:
    """Return report.md: what was compared, the table, each method's notes on it, and the figures."""
    lines = [f"# saolctl compare — {settings.data}", ""]
    lines.append(f"Methods: {', '.join(settings.methods)}; seed {settings.seed}; the same recipe and budget for "
                 "every method trained here. Numbers are on the test split under the reference protocol (metrics in "
                 "percent; MaxBoxAcc = V1 at IoU 50; MaxBoxAccV2 = mean of V2 over IoU 30/50/70); thresholds for "
                 "boxes drawn in the figure were chosen on the validation split.")
    lines.append("")
    lines.append("Checkpoints: " + ", ".join(f"{m}: `{p}`" for m, p in ckpts.items()))
    lines.append("")
    lines.append(f"Methods trained here are evaluated at their {CHECKPOINT_WORDS[settings.checkpoint]} "
                 f"(`--checkpoint {settings.checkpoint}`).")
    lines.append("")
    shown = [c for c in REPORT_COLUMNS if c in table]
    lines.append(markdown_table(table[shown]))
    lines.append("")
    for method in settings.methods:
        lines += get_method(method).report_notes(table)
    if "curves" in files:
        lines += ["## BoxAcc vs threshold", "", f"![curves]({files['curves'].name})", ""]
    if "grid" in files:
        lines += ["## Maps on the same test images", "",
                  "Rows: images; columns: input, then each method's map (ground truth in yellow, the predicted box at "
                  "the validation threshold in cyan).", "", f"![grid]({files['grid'].name})", ""]
    lines += ["Files: `compare.csv`, `compare.json`" + (", `curves.png`" if "curves" in files else "")
              + (", `grid.png`" if "grid" in files else "") + ".", ""]
    return "\n".join(lines)
