"""Classification and localization over a loader, as counters (SPEC section 2).

Everything accumulates into counters (accuracy counts, the box evaluators' per-threshold counts, the
mask evaluator's histograms), so memory does not grow with the number of images and distributed ranks
can sum what they counted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
import contextlib
from functools import partial
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from saolctl.errors import UserError
from saolctl.engine.distributed import unwrap_model
from saolctl.engine.map_scoring import MapChunk, MapScorer, split_evenly
from saolctl.localization.evaluators import BoxEvaluator, MaskEvaluator
from saolctl.localization.maps import default_map_kind, forward_options, score_maps

IOU_THRESHOLDS = (30, 50, 70)


@dataclass
class EvalCounters:
    """Every counter an evaluation keeps; ``merge`` sums two of them (workers, ranks)."""

    num_classes: int
    thresholds: np.ndarray
    with_boxes: bool = True
    with_masks: bool = False
    num_images: int = 0
    num_skipped: int = 0  # unreadable images dropped by the loader
    top1: int = 0
    top5: int = 0
    class_images: np.ndarray = field(init=False)  # (K,)
    class_top1: np.ndarray = field(init=False)  # (K,)
    box_v1: list[BoxEvaluator] = field(init=False)  # one per class: summing them gives the global V1
    box_v2: BoxEvaluator = field(init=False)
    mask: MaskEvaluator | None = field(init=False)

    def __post_init__(self) -> None:
        k = self.num_classes
        self.class_images = np.zeros(k, dtype=np.int64)
        self.class_top1 = np.zeros(k, dtype=np.int64)
        self.box_v1 = [self._box(False) for _ in range(k)]
        self.box_v2 = self._box(True)
        self.mask = MaskEvaluator(thresholds=self.thresholds) if self.with_masks else None

    def _box(self, multi_contour: bool) -> BoxEvaluator:
        return BoxEvaluator(thresholds=self.thresholds, iou_thresholds=IOU_THRESHOLDS, multi_contour=multi_contour)

    def merge(self, other: "EvalCounters") -> None:
        """Add another set of counters into this one."""
        self.num_images += other.num_images
        self.num_skipped += other.num_skipped
        self.top1 += other.top1
        self.top5 += other.top5
        self.class_images += other.class_images
        self.class_top1 += other.class_top1
        for a, b in zip(self.box_v1, other.box_v1):
            a.merge(b)
        self.box_v2.merge(other.box_v2)
        if self.mask is not None and other.mask is not None:
            self.mask.merge(other.mask)

    def as_array(self) -> np.ndarray:
        """Return every counter as one int64 vector (sum it across ranks, then :meth:`load_array`)."""
        parts = [np.array([self.num_images, self.num_skipped, self.top1, self.top5], np.int64),
                 self.class_images, self.class_top1, *(ev.counters for ev in self.box_v1), self.box_v2.counters]
        if self.mask is not None:
            parts.append(self.mask.counters)
        return np.concatenate(parts).astype(np.int64)

    def load_array(self, values: np.ndarray) -> None:
        """Replace every counter with a vector laid out as :meth:`as_array`."""
        v = np.asarray(values, dtype=np.int64).reshape(-1)
        if v.size != self.as_array().size:
            raise ValueError(f"expected {self.as_array().size} counters, got {v.size}")
        self.num_images, self.num_skipped, self.top1, self.top5 = (int(x) for x in v[:4])
        k, at = self.num_classes, 4
        self.class_images, self.class_top1 = v[at:at + k].copy(), v[at + k:at + 2 * k].copy()
        at += 2 * k
        for ev in [*self.box_v1, self.box_v2, *([self.mask] if self.mask is not None else [])]:
            n = ev.counters.size
            ev.load_counters(v[at:at + n])
            at += n

    def global_v1(self) -> BoxEvaluator:
        """Return the V1 evaluator of all classes together (sum of the per-class counters)."""
        total = self._box(False)
        for ev in self.box_v1:
            total.merge(ev)
        return total


@dataclass(frozen=True)
class EvalReport:
    """What an evaluation measured: headline metrics, BoxAcc curves, per-class table."""

    metrics: dict[str, Any]
    curves: pd.DataFrame  # one row per threshold
    per_class: pd.DataFrame  # one row per class


def accumulate_batch(
    counters: dict[str, EvalCounters],
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    boxes: list[torch.Tensor],
    masks: torch.Tensor | None,
    ignore: torch.Tensor | None,
    *,
    target: str,
    scorer: MapScorer | None = None,
    on_maps: Callable[[str, np.ndarray], None] | None = None,
) -> None:
    """Run the model once on a batch and add what each map kind got right to its counters.

    ``scorer`` does the contour work (default: in this process; a pool's counts land after ``drain``);
    ``on_maps(kind, maps)`` receives each kind's scored maps (B, S, S) float32.
    """
    out = model(images, **forward_options(model.config.method, counters))  # one pass serves every kind
    logits = out.logits  # (B, K)
    top5 = logits.topk(min(5, logits.shape[1]), dim=1).indices  # (B, 5)
    pred = top5[:, 0]
    correct = pred == labels
    labels_np = labels.cpu().numpy()
    correct_np = correct.cpu().numpy()
    n_top5 = int((top5 == labels[:, None]).any(dim=1).sum())
    targets = labels if target == "gt" else pred
    size = (images.shape[-2], images.shape[-1])
    gt = [b.cpu().numpy() for b in boxes]
    for kind, c in counters.items():
        c.num_images += len(labels_np)
        c.top1 += int(correct_np.sum())
        c.top5 += n_top5
        np.add.at(c.class_images, labels_np, 1)
        np.add.at(c.class_top1, labels_np, correct_np.astype(np.int64))
        if not c.with_boxes and c.mask is None:
            continue
        maps = score_maps(model, out, targets, size, kind, images).float().cpu().numpy()  # (B, S, S)
        if on_maps is not None:
            on_maps(kind, maps)
        masks_np = None if c.mask is None or masks is None else masks.cpu().numpy()  # (B, S, S) bool
        ignore_np = None if masks_np is None or ignore is None else ignore.cpu().numpy()
        chunks = scorer or MapScorer()  # V1 and V2 candidates of a map share most of their work
        for part in split_evenly(len(maps), chunks.processes, 64):
            chunks.submit(c, MapChunk(maps[part], gt[part], labels_np[part], correct_np[part],
                                      None if masks_np is None else masks_np[part],
                                      None if ignore_np is None else ignore_np[part]))


@torch.no_grad()
def evaluate(
    model: nn.Module,
    batches: Iterable[Any],
    *,
    num_classes: int,
    device: torch.device,
    with_boxes: bool,
    with_masks: bool,
    map_kinds: Sequence[str] | None = None,
    target: str = "gt",
    threshold_step: float = 0.001,
    on_batch: Callable[[int], None] | None = None,
    autocast: Callable[[], Any] | None = None,
    channels_last: bool = False,
    scorer: MapScorer | None = None,
    on_maps: Callable[[np.ndarray, str, np.ndarray], None] | None = None,
) -> dict[str, EvalCounters]:
    """Evaluate a model over batches (saolctl.data.Batch); return filled counters per map kind.

    Every map kind shares one forward pass per batch; the default is the method's default map.
    ``channels_last`` feeds the images in torch.channels_last memory format (as the model's weights).
    ``scorer`` runs the contour work (e.g. in worker processes; default: here); ``on_maps(indices, kind,
    maps)`` receives the dataset indices (B,) and the scored maps (B, S, S) float32 of every batch.
    """
    if target not in ("gt", "pred"):
        raise UserError(f"target must be 'gt' or 'pred', got {target!r}")
    if not 0.0 < threshold_step < 1.0:
        raise UserError(f"threshold step must be in (0, 1), got {threshold_step}")
    model.eval()
    net = unwrap_model(model)
    kinds = list(map_kinds) if map_kinds else [default_map_kind(net.config.method)]
    thresholds = np.arange(0, 1, threshold_step)
    counters = {k: EvalCounters(num_classes, thresholds, with_boxes, with_masks) for k in kinds}
    context = autocast or contextlib.nullcontext
    for batch in batches:
        images = batch.images.to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        labels = batch.labels.to(device, non_blocking=True)
        for c in counters.values():
            c.num_skipped += int(batch.num_skipped)
        if len(labels) == 0:
            continue
        with context():
            accumulate_batch(counters, net, images, labels, batch.boxes, batch.masks, batch.ignore, target=target,
                             scorer=scorer, on_maps=None if on_maps is None else partial(on_maps, batch.indices.numpy()))
        if on_batch is not None:
            on_batch(len(labels))
    if scorer is not None:
        scorer.drain()
    return counters


def summarize(counters: EvalCounters, class_names: list[str]) -> EvalReport:
    """Turn counters into headline metrics (percent), BoxAcc curves and a per-class table."""
    n = max(counters.num_images, 1)
    metrics: dict[str, Any] = {
        "top1": 100.0 * counters.top1 / n,
        "top5": 100.0 * counters.top5 / n,
        "num_images": counters.num_images,
        "num_skipped_unreadable": counters.num_skipped,
    }
    thresholds = counters.thresholds
    curves = pd.DataFrame({"threshold": thresholds})
    per_class = pd.DataFrame(
        {
            "class": class_names,
            "num_images": counters.class_images,
            "top1": 100.0 * counters.class_top1 / np.maximum(counters.class_images, 1),
        }
    )
    if counters.with_boxes:
        v1 = counters.global_v1().compute()
        v2 = counters.box_v2.compute()
        i50 = IOU_THRESHOLDS.index(50)
        metrics.update(
            {
                "max_box_acc": float(v1.max_box_acc[i50]),
                "max_box_acc_v2": float(v2.mean),
                "box_acc_iou30": float(v2.max_box_acc[0]),
                "box_acc_iou50": float(v2.max_box_acc[1]),
                "box_acc_iou70": float(v2.max_box_acc[2]),
                "best_threshold": float(v1.best_threshold[i50]),
                "best_threshold_v2": [float(t) for t in v2.best_threshold],
                "gt_known_loc": float(v1.gt_known_loc),
                "top1_loc": float(v1.top1_loc),
                "num_localized": int(v1.num_images),
                "num_without_boxes": int(v1.num_skipped),
            }
        )
        curves["v1_iou50"] = v1.box_acc[:, i50]
        for j, d in enumerate(IOU_THRESHOLDS):
            curves[f"v2_iou{d}"] = v2.box_acc[:, j]
        best_k = int(v1.best_threshold_index[i50])
        loc = []
        for ev in counters.box_v1:
            r = ev.compute()
            loc.append(float(r.box_acc[best_k, i50]) if r.num_images else float("nan"))
        per_class["gt_known_loc"] = loc
    if counters.mask is not None:
        m = counters.mask.compute()
        metrics["pxap"] = float(m.pxap)
    return EvalReport(metrics, curves, per_class)
