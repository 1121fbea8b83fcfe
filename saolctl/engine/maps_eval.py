"""Score anyone's saved heatmaps (`eval --maps`): wsolevaluation's map folders against any layout saolctl reads.

Maps are scored as given (no renormalisation unless asked), against ground truth resized to each map's own
size; the outputs are those of `eval --ckpt` (eval.json, curves, per-class table) without the
classification numbers, which only a predictions file can give.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from saolctl.data import DigitsConfig, has_split
from saolctl.data.loader import usable_cores
from saolctl.data.maps_dir import open_map_folder, read_manifest
from saolctl.data.predictions import read_predictions
from saolctl.data.split_targets import SplitTargets, open_split_targets
from saolctl.engine.eval_run import write_eval_outputs
from saolctl.engine.evaluate import EvalCounters, EvalReport, summarize
from saolctl.engine.map_scoring import MapFileChunk, MapScorer, split_evenly
from saolctl.engine.validation import check_int, check_output_dir, check_unit_interval
from saolctl.errors import UserError

CHUNK = 16  # maps per job: small enough to balance noisy (slow) and smooth (fast) maps over the workers


@dataclass(frozen=True)
class MapsEvalSettings:
    """Which maps to score against which data, and how."""

    maps: Path  # folder of <image_id>.npy files, or one .npz keyed by image id
    data: str | None = None  # None: the data `--save-maps` recorded beside the maps
    split: str | None = None  # None: the recorded split, else test where the data has it, else val
    format: str | None = None
    boxes_dir: str | None = None
    normalize: bool = False  # min-max normalise every map instead of refusing values outside [0, 1]
    predictions: Path | None = None  # image_id -> predicted class: adds top-1 and Top-1 Loc
    threshold_step: float = 0.001
    workers: int | None = None  # processes for the contour work (None: one per core up to 8)

    def __post_init__(self) -> None:
        """Check the ranges before anything is read."""
        check_unit_interval("--thresholds-step", self.threshold_step, open_low=True)
        check_int("--workers", self.workers, 0, optional=True)


@dataclass(frozen=True)
class MapsSource:
    """The data the maps are scored against, and what the maps' folder says about them."""

    data: str
    split: str
    format: str | None
    digits: DigitsConfig | None
    seed: int
    manifest: dict[str, Any]  # saolctl_maps.json of the folder ({} when none or of other data)


def resolve_source(settings: MapsEvalSettings) -> MapsSource:
    """Return the data and split to score against: the options, else what ``--save-maps`` recorded."""
    manifest = read_manifest(settings.maps) if settings.maps.is_dir() else None
    data = settings.data or (str(manifest["data"]) if manifest and manifest.get("data") else None)
    if data is None:
        raise UserError(f"give --data ROOT: the dataset whose images the maps in {settings.maps} are of")
    same = manifest is not None and data == manifest.get("data")
    own = dict(manifest) if same else {}
    digits = DigitsConfig.from_dict(own["digits"]) if own.get("digits") else None
    fmt = settings.format or own.get("data_format")
    split = settings.split or own.get("split") or ("test" if has_split(data, "test", fmt) else "val")
    return MapsSource(data, str(split), fmt, digits, int(own.get("seed", 0)), own)


def _counters(targets: SplitTargets, correct: np.ndarray | None, threshold_step: float) -> EvalCounters:
    """Return counters with the image and classification counts filled in (the maps add the rest)."""
    labels = np.asarray([t.label for t in targets.images], np.int64)
    counters = EvalCounters(len(targets.class_names), np.arange(0, 1, threshold_step), targets.has_boxes,
                            targets.has_masks)
    counters.num_images = len(labels)
    np.add.at(counters.class_images, labels, 1)
    if correct is not None:
        counters.top1 = int(correct.sum())
        np.add.at(counters.class_top1, labels, correct.astype(np.int64))
    return counters


def without_classification(report: EvalReport, with_top1: bool) -> EvalReport:
    """Drop the numbers maps alone cannot give: top-5 always, top-1 and Top-1 Loc without predictions."""
    drop = {"top5"} | (set() if with_top1 else {"top1", "top1_loc"})
    metrics = {k: v for k, v in report.metrics.items() if k not in drop}
    per_class = report.per_class if with_top1 else report.per_class.drop(columns=["top1"])
    return EvalReport(metrics, report.curves, per_class)


def run_maps_eval(
    settings: MapsEvalSettings, out_dir: Path | None = None, on_start: Callable[[int], None] | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> tuple[EvalReport, dict[str, Any], Path]:
    """Score a folder of maps; write eval.json, curves.csv/png, per_class.csv only when every map was scored."""
    if out_dir is not None:
        check_output_dir(out_dir)
    source = resolve_source(settings)
    targets = open_split_targets(source.data, source.split, format=source.format,
                                 boxes_dir=Path(settings.boxes_dir) if settings.boxes_dir else None,
                                 digits=source.digits, seed=source.seed)
    if not targets.has_boxes and not targets.has_masks:
        raise UserError(f"{source.data} ({source.split}) has no GT boxes or masks: there is nothing to score maps on")
    folder = open_map_folder(settings.maps, targets.ids)
    labels = np.asarray([t.label for t in targets.images], np.int64)
    preds = read_predictions(settings.predictions, targets.ids, targets.class_names) if settings.predictions else None
    correct = None if preds is None else preds.classes == labels  # (N,) bool
    out_dir = out_dir or settings.maps.parent / f"{settings.maps.stem}-eval-{source.split}"
    check_output_dir(out_dir)
    counters = _counters(targets, correct, settings.threshold_step)
    workers = usable_cores() if settings.workers is None else settings.workers
    if on_start is not None:
        on_start(len(targets))
    with MapScorer(workers) as scorer:
        most = CHUNK if folder.root.is_dir() else len(targets)  # an archive is opened once per job: few, large jobs
        for part in split_evenly(len(targets), 8 * scorer.processes, most):
            scorer.submit(counters, MapFileChunk(folder.refs[part], targets.images[part],
                                                 None if correct is None else correct[part], settings.normalize))
            if on_batch is not None:
                on_batch(part.stop - part.start)
        scorer.drain()
        shapes = dict(sorted(scorer.shapes.items()))
    report = without_classification(summarize(counters, targets.class_names), preds is not None)
    report.metrics["num_extra_maps"] = len(folder.extra)
    own = source.manifest
    meta = {
        "maps": str(settings.maps), "checkpoint": own.get("checkpoint"), "method": own.get("method", "maps"),
        "backbone": own.get("backbone"), "map": own.get("map", settings.maps.name), "target": own.get("target"),
        "data": source.data, "split": source.split, "map_shapes": shapes, "normalize": settings.normalize,
        "predictions": None if preds is None else str(preds.path),
        "predictions_unused": None if preds is None else preds.unused,
        "extra_maps": folder.extra[:10], "threshold_step": settings.threshold_step,
    }
    write_eval_outputs(report, meta, out_dir)
    return report, meta, out_dir
