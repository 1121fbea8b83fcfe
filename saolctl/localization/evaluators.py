"""WSOL evaluators that reproduce the reference protocol (clovaai/wsolevaluation) exactly.

- :class:`BoxEvaluator`: BoxAcc(tau, delta) per threshold, MaxBoxAcc (``multi_contour=False``, the largest
  contour's box) or MaxBoxAccV2 (``multi_contour=True``, every contour's box), GT-known Loc and Top-1 Loc.
- :class:`MaskEvaluator`: PxAP, the area under the pixel precision-recall curve, from two score histograms.

Both keep counters only (per-threshold counts, histograms): memory does not grow with the number of
images, and two evaluators (DDP ranks, workers) combine with :meth:`merge` / ``+`` or by summing their
``counters`` arrays. Inputs may be numpy arrays or torch tensors (anything with ``.detach().cpu().numpy()``);
torch is never imported here. The rules, and how they were checked against the reference's own numbers,
are in docs/metrics.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from saolctl.localization.contours import LevelCandidates, integer_thresholds, level_candidates

__all__ = [
    "BoxEvaluator",
    "BoxResult",
    "MaskEvaluator",
    "MaskResult",
    "default_thresholds",
    "image_box_scores",
    "scores_from_candidates",
]


def default_thresholds(step: float = 0.001) -> np.ndarray:
    """Return the reference's CAM thresholds ``numpy.arange(0, 1, step)`` (float64, (T,))."""
    return np.arange(0, 1, step)


def _to_numpy(x: object) -> np.ndarray:
    """Return x as a numpy array; torch tensors (or look-alikes) are detached and moved to the CPU."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        x = x.detach().cpu().numpy()  # type: ignore[union-attr]
    return np.asarray(x)


def _check_maps(maps: object) -> np.ndarray:
    """Return maps as a (B, H, W) numeric array after checking shape, finiteness and range [0, 1]."""
    arr = _to_numpy(maps)
    if arr.ndim != 3:
        raise ValueError(f"score maps must have shape (B, H, W), got {arr.shape}")
    if arr.dtype == bool:
        arr = arr.astype(np.float64)
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise ValueError(f"score maps must be numeric, got dtype {arr.dtype}")
    if arr.size:
        if np.issubdtype(arr.dtype, np.floating) and np.isnan(arr).any():
            raise ValueError("score maps contain NaN (normalise constant or invalid maps to zeros first)")
        low, high = arr.min(), arr.max()
        if low < 0 or high > 1:
            raise ValueError(f"score maps must lie in [0, 1], got values in [{low}, {high}]")
    return arr


def _check_thresholds(thresholds: object) -> np.ndarray:
    """Return thresholds as float64 (T,) after checking they are finite values in [0, 1]."""
    t = np.asarray(thresholds, dtype=np.float64).reshape(-1)
    if t.size == 0 or not np.isfinite(t).all() or t.min() < 0 or t.max() > 1:
        raise ValueError("thresholds must be a non-empty sequence of finite values in [0, 1]")
    return t


def _check_boxes(boxes: object) -> np.ndarray:
    """Return one image's GT boxes as int64 (n, 4) inclusive x0y0x1y1 after checking them."""
    arr = _to_numpy(boxes)
    if arr.size == 0:
        return np.zeros((0, 4), np.int64)
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError(f"GT boxes of an image must have shape (n, 4), got {arr.shape}")
    as_int = arr.astype(np.int64)
    if not np.array_equal(as_int, arr):
        raise ValueError("GT boxes must hold integer pixel coordinates")
    if (as_int[:, 2] < as_int[:, 0]).any() or (as_int[:, 3] < as_int[:, 1]).any():
        raise ValueError("GT boxes must satisfy x0 <= x1 and y0 <= y1 (inclusive x0y0x1y1)")
    return as_int


def _box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Return the (n, m) float64 IoU of inclusive boxes (saolctl.data.boxes.box_iou, imported lazily)."""
    from saolctl.data.boxes import box_iou  # the data package imports torch; keep it out of import time

    return box_iou(a, b)


def image_box_scores(score_map: object, gt_boxes: object, thresholds: Sequence[float] | np.ndarray,
                     multi_contour: bool) -> tuple[np.ndarray, np.ndarray]:
    """Return one (H, W) map's best IoU over candidates and GT boxes (T,) and its candidate count (T,)."""
    arr = _check_maps(_to_numpy(score_map)[None])[0]
    gt = _check_boxes(gt_boxes)
    if gt.shape[0] == 0:
        raise ValueError("an image needs at least one GT box to be scored")
    return _image_scores(arr, gt, _check_thresholds(thresholds), multi_contour)


def _image_scores(score_map: np.ndarray, gt: np.ndarray, thresholds: np.ndarray,
                  multi_contour: bool) -> tuple[np.ndarray, np.ndarray]:
    """Return best IoU (T,) and candidate count (T,) per threshold for a checked map and GT boxes (n, 4)."""
    return scores_from_candidates(level_candidates(score_map, multi_contour), gt, thresholds)


def scores_from_candidates(cand: LevelCandidates, gt: np.ndarray,
                           thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return best IoU (T,) and candidate count (T,) per threshold from a map's per-level candidates."""
    level = integer_thresholds(thresholds, cand.max8)  # (T,) int(tau * max8)
    empty_iou = float(_box_iou(np.zeros((1, 4), np.int64), gt).max())  # no contour: box (0, 0, 0, 0)
    best = np.full(cand.max8 + 1, empty_iou)  # best[max8] stands for "no contour"
    count = np.ones(cand.max8 + 1, np.int64)
    if cand.boxes.shape[0]:
        per_box = _box_iou(cand.boxes, gt).max(axis=1)  # (P,)
        best[: cand.max8] = -1.0  # every level below max8 has a candidate
        np.maximum.at(best, cand.level, per_box)
        count[: cand.max8] = np.bincount(cand.level, minlength=cand.max8)[: cand.max8]
    slot = np.minimum(level, cand.max8)  # thresholds at or above the maximum leave no foreground
    return best[slot], count[slot]


@dataclass(frozen=True)
class BoxResult:
    """Box-accuracy results (percent). Arrays are read-only; D = number of IoU thresholds (delta).

    box_acc (T, D): BoxAcc per threshold tau and delta; max_box_acc (D,): its maximum over tau;
    best_threshold_index (D,): first tau index reaching it; best_threshold (D,); mean: mean of
    max_box_acc (MaxBoxAccV2 when multi_contour); num_correct (T, D); gt_known_loc: BoxAcc at the best tau
    for delta = 50; top1_loc: percent of images whose class is right and whose box is correct at that
    (tau, 50) (NaN unless class correctness was given for every image).
    """

    box_acc: np.ndarray
    max_box_acc: np.ndarray
    best_threshold: np.ndarray
    best_threshold_index: np.ndarray
    mean: float
    num_correct: np.ndarray
    num_images: int
    num_skipped: int
    gt_known_loc: float
    top1_loc: float
    thresholds: np.ndarray
    iou_thresholds: np.ndarray
    multi_contour: bool = field(default=True)


def _frozen(a: np.ndarray) -> np.ndarray:
    """Return a read-only copy of an array."""
    out = np.array(a, copy=True)
    out.setflags(write=False)
    return out


class BoxEvaluator:
    """Accumulates BoxAcc counters over batches of score maps with GT boxes (reference protocol)."""

    def __init__(self, thresholds: Sequence[float] | np.ndarray | None = None,
                 iou_thresholds: Sequence[int] = (30, 50, 70), multi_contour: bool = True) -> None:
        """Set thresholds tau (default arange(0, 1, 0.001)), IoU thresholds delta (percent), V1/V2 candidates."""
        self.thresholds = _check_thresholds(default_thresholds() if thresholds is None else thresholds)  # (T,)
        self.iou_thresholds = np.asarray(iou_thresholds, dtype=np.int64).reshape(-1)  # (D,)
        if self.iou_thresholds.size == 0 or (self.iou_thresholds < 0).any() or (self.iou_thresholds > 100).any():
            raise ValueError("iou_thresholds must be percentages in [0, 100]")
        self.multi_contour = bool(multi_contour)
        self._cut = self.iou_thresholds.astype(np.float64) / 100  # the reference's delta / 100
        self.reset()

    def reset(self) -> None:
        """Zero every counter."""
        shape = (self.thresholds.size, self.iou_thresholds.size)
        self.num_correct = np.zeros(shape, np.int64)  # (T, D) box-correct images
        self.num_correct_top1 = np.zeros(shape, np.int64)  # (T, D) box-correct and class-correct images
        self.num_images = 0  # images with at least one GT box
        self.num_skipped = 0  # images without GT box
        self.num_class_known = 0  # images accumulated with class correctness

    def accumulate(self, maps: object, gt_boxes: Sequence[object], class_correct: object | None = None) -> None:
        """Add a batch: maps (B, H, W) in [0, 1], gt_boxes B arrays (n_i, 4), class_correct (B,) or None."""
        arr = _check_maps(maps)
        if len(gt_boxes) != arr.shape[0]:
            raise ValueError(f"got {arr.shape[0]} maps but {len(gt_boxes)} GT box arrays")
        boxes = [_check_boxes(b) for b in gt_boxes]
        correct_cls = None
        if class_correct is not None:
            correct_cls = _to_numpy(class_correct).reshape(-1).astype(bool)
            if correct_cls.size != arr.shape[0]:
                raise ValueError(f"class_correct must have shape ({arr.shape[0]},), got {correct_cls.shape}")
        for i, (score_map, gt) in enumerate(zip(arr, boxes)):
            if gt.shape[0] == 0:
                self.num_skipped += 1
                continue
            best, _ = _image_scores(score_map, gt, self.thresholds, self.multi_contour)
            self._add(best, None if correct_cls is None else bool(correct_cls[i]))

    def accumulate_candidates(self, cand: LevelCandidates | None, gt_boxes: object,
                              class_correct: bool | None = None) -> None:
        """Add one image from its precomputed candidates (V1 or V2, matching this evaluator) and GT boxes (n, 4).

        An image without GT box is counted as skipped; its candidates are not needed (None).
        """
        gt = _check_boxes(gt_boxes)
        if gt.shape[0] == 0:
            self.num_skipped += 1
            return
        if cand is None:
            raise ValueError("an image with GT boxes needs its candidates")
        best, _ = scores_from_candidates(cand, gt, self.thresholds)
        self._add(best, class_correct)

    def _add(self, best: np.ndarray, class_correct: bool | None) -> None:
        """Count one image's best IoU per threshold (T,) against every delta."""
        correct = best[:, None] >= self._cut[None, :]  # (T, D)
        self.num_correct += correct
        self.num_images += 1
        if class_correct is not None:
            self.num_class_known += 1
            if class_correct:
                self.num_correct_top1 += correct

    def compute(self) -> BoxResult:
        """Return the results so far (NaN values when no image with a GT box was accumulated)."""
        n = self.num_images
        with np.errstate(invalid="ignore", divide="ignore"):
            box_acc = self.num_correct * 100.0 / n if n else np.full(self.num_correct.shape, np.nan)
        if n:
            best_idx = box_acc.argmax(axis=0)
            max_acc = box_acc.max(axis=0)
            best_thr = self.thresholds[best_idx]
        else:
            best_idx = np.full(self.iou_thresholds.size, -1, np.int64)
            max_acc = np.full(self.iou_thresholds.size, np.nan)
            best_thr = np.full(self.iou_thresholds.size, np.nan)
        gt_known = top1 = float("nan")
        at50 = np.flatnonzero(self.iou_thresholds == 50)
        if n and at50.size:
            d = int(at50[0])
            k = int(best_idx[d])
            gt_known = float(box_acc[k, d])
            if self.num_class_known == n:
                top1 = float(self.num_correct_top1[k, d] * 100.0 / n)
        return BoxResult(
            box_acc=_frozen(box_acc), max_box_acc=_frozen(max_acc), best_threshold=_frozen(best_thr),
            best_threshold_index=_frozen(best_idx), mean=float(np.mean(max_acc)),
            num_correct=_frozen(self.num_correct), num_images=n, num_skipped=self.num_skipped,
            gt_known_loc=gt_known, top1_loc=top1, thresholds=_frozen(self.thresholds),
            iou_thresholds=_frozen(self.iou_thresholds), multi_contour=self.multi_contour,
        )

    # ---- combining evaluators (DDP ranks, workers) ----

    @property
    def counters(self) -> np.ndarray:
        """Return every counter as one int64 vector (sum it across processes, then :meth:`load_counters`)."""
        head = np.array([self.num_images, self.num_skipped, self.num_class_known], np.int64)
        return np.concatenate([head, self.num_correct.ravel(), self.num_correct_top1.ravel()])

    def load_counters(self, counters: object) -> None:
        """Replace the counters with a vector laid out as :attr:`counters` (e.g. after an all-reduce)."""
        c = _to_numpy(counters).astype(np.int64).reshape(-1)
        size = self.num_correct.size
        if c.size != 3 + 2 * size:
            raise ValueError(f"expected {3 + 2 * size} counters, got {c.size}")
        self.num_images, self.num_skipped, self.num_class_known = (int(v) for v in c[:3])
        self.num_correct = c[3: 3 + size].reshape(self.num_correct.shape).copy()
        self.num_correct_top1 = c[3 + size:].reshape(self.num_correct.shape).copy()

    def _check_compatible(self, other: BoxEvaluator) -> None:
        """Raise ValueError unless other counts the same thresholds and candidates."""
        if not isinstance(other, BoxEvaluator):
            raise TypeError(f"cannot merge BoxEvaluator with {type(other).__name__}")
        if (not np.array_equal(self.thresholds, other.thresholds)
                or not np.array_equal(self.iou_thresholds, other.iou_thresholds)
                or self.multi_contour != other.multi_contour):
            raise ValueError("evaluators differ in thresholds, IoU thresholds or multi_contour")

    def merge(self, other: BoxEvaluator) -> BoxEvaluator:
        """Add another evaluator's counters to this one (in place) and return self."""
        self._check_compatible(other)
        self.load_counters(self.counters + other.counters)
        return self

    def __add__(self, other: BoxEvaluator) -> BoxEvaluator:
        """Return a new evaluator holding the sum of both evaluators' counters."""
        out = BoxEvaluator(self.thresholds, self.iou_thresholds, self.multi_contour)
        out.load_counters(self.counters)
        return out.merge(other)

    def state_dict(self) -> dict[str, object]:
        """Return the configuration and counters (plain numpy/python values)."""
        return {"thresholds": self.thresholds.copy(), "iou_thresholds": self.iou_thresholds.copy(),
                "multi_contour": self.multi_contour, "counters": self.counters}

    def load_state_dict(self, state: dict[str, object]) -> None:
        """Restore a :meth:`state_dict` (its configuration must match this evaluator's)."""
        other = BoxEvaluator(np.asarray(state["thresholds"]), np.asarray(state["iou_thresholds"]).tolist(),
                             bool(state["multi_contour"]))
        self._check_compatible(other)
        self.load_counters(state["counters"])


# --------------------------------------------------------------------------------------------------
# PxAP
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MaskResult:
    """PxAP results. Curves are indexed from the highest score bin down (index 0: scores in [2, 3]).

    pxap: percent (NaN without object pixels or without any positive prediction); precision, recall
    (K,) float64 with NaN where 0/0, K = T + 2; tp, fp, fn, tn (K,) float64 pixel counts;
    gt_true_hist, gt_false_hist (K,) int64 score histograms of object and background pixels.
    """

    pxap: float
    precision: np.ndarray
    recall: np.ndarray
    tp: np.ndarray
    fp: np.ndarray
    fn: np.ndarray
    tn: np.ndarray
    gt_true_hist: np.ndarray
    gt_false_hist: np.ndarray
    thresholds: np.ndarray
    num_images: int


class MaskEvaluator:
    """Accumulates object/background score histograms over batches of maps with GT masks (PxAP)."""

    def __init__(self, thresholds: Sequence[float] | np.ndarray | None = None) -> None:
        """Set the score thresholds (default arange(0, 1, 0.001)), increasing and below 1."""
        self.thresholds = _check_thresholds(default_thresholds() if thresholds is None else thresholds)  # (T,)
        if (np.diff(self.thresholds) <= 0).any() or self.thresholds[-1] >= 1:
            raise ValueError("mask thresholds must increase strictly and stay below 1")
        # bins [t_0, t_1), ..., [t_{T-1}, 1), [1, 2), [2, 3]: the reference's edges
        self.bin_edges = np.concatenate([self.thresholds, [1.0, 2.0, 3.0]])  # (T + 3,)
        self.reset()

    def reset(self) -> None:
        """Zero the histograms."""
        self.gt_true_hist = np.zeros(self.bin_edges.size - 1, np.int64)  # (T + 2,)
        self.gt_false_hist = np.zeros(self.bin_edges.size - 1, np.int64)
        self.num_images = 0

    def _histogram(self, scores: np.ndarray) -> np.ndarray:
        """Return numpy.histogram(scores, bin_edges)[0] (bins [e_i, e_i+1), the last one closed) as int64."""
        edges = self.bin_edges
        index = np.searchsorted(edges, scores, side="right") - 1  # e_index <= score < e_index+1
        index[scores == edges[-1]] = edges.size - 2
        index = index[(index >= 0) & (index < edges.size - 1)]
        return np.bincount(index, minlength=edges.size - 1).astype(np.int64)

    def accumulate(self, maps: object, masks: object, ignore: object | None = None) -> None:
        """Add a batch: maps (B, H, W) in [0, 1], masks (B, H, W) object pixels, ignore (B, H, W) or None."""
        arr = _check_maps(maps)
        obj = _to_numpy(masks)
        if obj.shape != arr.shape:
            raise ValueError(f"masks must have the maps' shape {arr.shape}, got {obj.shape}")
        obj = obj.astype(bool)
        if ignore is None:
            counted_bg = ~obj
        else:
            ign = _to_numpy(ignore)
            if ign.shape != arr.shape:
                raise ValueError(f"ignore must have the maps' shape {arr.shape}, got {ign.shape}")
            counted_bg = ~obj & ~ign.astype(bool)  # ignored = ignore minus object pixels
        for score_map, fg, bg in zip(arr, obj, counted_bg):
            scores = score_map.astype(np.float64)  # compare with the float64 edges, as the reference
            self.gt_true_hist += self._histogram(scores[fg])
            self.gt_false_hist += self._histogram(scores[bg])
            self.num_images += 1

    def compute(self) -> MaskResult:
        """Return PxAP and its curves (the reference's sums; NaN PxAP where the reference would refuse)."""
        true_hist = self.gt_true_hist.astype(np.float64)
        false_hist = self.gt_false_hist.astype(np.float64)
        tp = true_hist[::-1].cumsum()
        fn = true_hist.sum() - tp
        fp = false_hist[::-1].cumsum()
        tn = false_hist.sum() - fp
        with np.errstate(invalid="ignore", divide="ignore"):
            precision = tp / (tp + fp)
            recall = tp / (tp + fn)
        predicted = (tp + fp) != 0
        if (tp + fn <= 0).all() or not predicted.any():
            pxap = float("nan")
        else:
            pxap = float((precision[1:] * np.diff(recall))[predicted[1:]].sum() * 100)
        return MaskResult(
            pxap=pxap, precision=_frozen(precision), recall=_frozen(recall), tp=_frozen(tp), fp=_frozen(fp),
            fn=_frozen(fn), tn=_frozen(tn), gt_true_hist=_frozen(self.gt_true_hist),
            gt_false_hist=_frozen(self.gt_false_hist), thresholds=_frozen(self.thresholds),
            num_images=self.num_images,
        )

    @property
    def counters(self) -> np.ndarray:
        """Return every counter as one int64 vector (sum it across processes, then :meth:`load_counters`)."""
        return np.concatenate([[self.num_images], self.gt_true_hist, self.gt_false_hist]).astype(np.int64)

    def load_counters(self, counters: object) -> None:
        """Replace the counters with a vector laid out as :attr:`counters`."""
        c = _to_numpy(counters).astype(np.int64).reshape(-1)
        k = self.gt_true_hist.size
        if c.size != 1 + 2 * k:
            raise ValueError(f"expected {1 + 2 * k} counters, got {c.size}")
        self.num_images = int(c[0])
        self.gt_true_hist = c[1: 1 + k].copy()
        self.gt_false_hist = c[1 + k:].copy()

    def merge(self, other: MaskEvaluator) -> MaskEvaluator:
        """Add another evaluator's histograms to this one (in place) and return self."""
        if not isinstance(other, MaskEvaluator):
            raise TypeError(f"cannot merge MaskEvaluator with {type(other).__name__}")
        if not np.array_equal(self.thresholds, other.thresholds):
            raise ValueError("evaluators differ in thresholds")
        self.load_counters(self.counters + other.counters)
        return self

    def __add__(self, other: MaskEvaluator) -> MaskEvaluator:
        """Return a new evaluator holding the sum of both evaluators' histograms."""
        out = MaskEvaluator(self.thresholds)
        out.load_counters(self.counters)
        return out.merge(other)

    def state_dict(self) -> dict[str, object]:
        """Return the configuration and counters."""
        return {"thresholds": self.thresholds.copy(), "counters": self.counters}

    def load_state_dict(self, state: dict[str, object]) -> None:
        """Restore a :meth:`state_dict` (its thresholds must match this evaluator's)."""
        if not np.array_equal(np.asarray(state["thresholds"], np.float64), self.thresholds):
            raise ValueError("state thresholds differ from this evaluator's")
        self.load_counters(state["counters"])
