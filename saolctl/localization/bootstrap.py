"""Paired bootstrap over test images: confidence intervals for the difference of two methods' metrics.

Two methods scored on the same images differ partly because of which images the test split happens to
hold. Resampling the images (with replacement, the same draw for both methods and for every seed) and
recomputing each metric on the draw gives the spread of that difference. MaxBoxAcc is a maximum over CAM
thresholds, so it is recomputed (threshold included) on every draw, as the reference would on that split.

Inputs are per-image records: a (N, T) array of each image's best box IoU at each CAM threshold (what
:func:`saolctl.localization.evaluators.image_box_scores` returns per image) and a (N,) array of top-1
correctness. Seeds enter as lists of such arrays; the statistic is the mean over seeds.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["Interval", "box_hits", "max_box_acc", "paired_bootstrap", "resample_weights", "top1"]

Statistic = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (per-image records, weights (B, N)) -> (B,)


@dataclass(frozen=True)
class Interval:
    """A difference (b - a) on the full test set and its bootstrap percentile interval."""

    estimate: float
    low: float
    high: float
    level: float  # e.g. 0.95
    draws: int

    def __str__(self) -> str:
        return f"{self.estimate:+.1f} [{self.low:+.1f}, {self.high:+.1f}]"


def box_hits(best_iou: np.ndarray, iou_thresholds: Sequence[float] = (30, 50, 70)) -> np.ndarray:
    """Return (N, T, D) booleans: image n's box at CAM threshold t has IoU >= delta_d (percent)."""
    best = np.asarray(best_iou, np.float64)
    if best.ndim != 2:
        raise ValueError(f"best IoU must have shape (N, T), got {best.shape}")
    cut = np.asarray(iou_thresholds, np.float64) / 100.0
    return best[:, :, None] >= cut[None, None, :]


def max_box_acc(hits: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Return MaxBoxAcc (mean over IoU thresholds of the best accuracy over CAM thresholds), percent, (B,).

    ``hits`` is (N, T, D) from :func:`box_hits`; ``weights`` (B, N) counts how often each image is drawn.
    With V2 hits (every contour, deltas 30/50/70) this is MaxBoxAccV2.
    """
    n, t, d = hits.shape
    counts = weights @ hits.reshape(n, t * d).astype(np.float64)  # (B, T*D)
    acc = counts.reshape(-1, t, d) * 100.0 / weights.sum(axis=1)[:, None, None]
    return acc.max(axis=1).mean(axis=1)


def top1(correct: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Return top-1 accuracy in percent (B,) of per-image correctness (N,) under draw weights (B, N)."""
    return weights @ np.asarray(correct, np.float64) * 100.0 / weights.sum(axis=1)


def resample_weights(n: int, draws: int, seed: int) -> np.ndarray:
    """Return (draws, n) counts of n images drawn with replacement, one row per bootstrap draw."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(n, np.full(n, 1.0 / n), size=draws).astype(np.float64)


def paired_bootstrap(stat: Statistic, a: Sequence[np.ndarray], b: Sequence[np.ndarray], *, draws: int = 2000,
                     seed: int = 0, level: float = 0.95) -> Interval:
    """Return the interval of mean_seeds stat(b) - mean_seeds stat(a) over image resamples shared by all.

    ``a`` and ``b`` hold one per-image record per seed (any number each), all over the same N test images
    in the same order.
    """
    if not a or not b:
        raise ValueError("each side needs at least one seed's per-image records")
    n = len(a[0])
    if any(len(x) != n for x in [*a, *b]):
        raise ValueError("every record must cover the same test images")
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    full = np.ones((1, n))

    def diff(weights: np.ndarray) -> np.ndarray:
        return (np.mean([stat(x, weights) for x in b], axis=0)
                - np.mean([stat(x, weights) for x in a], axis=0))  # (B,)

    samples = diff(resample_weights(n, draws, seed))
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(samples, [tail, 100.0 - tail])
    return Interval(float(diff(full)[0]), float(low), float(high), level, draws)
