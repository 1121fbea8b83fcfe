"""Paired bootstrap over test images (saolctl.localization.bootstrap)."""

from __future__ import annotations

import numpy as np
import pytest

from saolctl.localization.bootstrap import box_hits, max_box_acc, paired_bootstrap, resample_weights, top1
from saolctl.localization.evaluators import BoxEvaluator, default_thresholds, image_box_scores


def _blob_maps(n: int, seed: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """Return n smooth 32x32 maps with one Gaussian blob each and a GT box near (not on) the blob."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:32, 0:32]
    maps, boxes = [], []
    for _ in range(n):
        cy, cx, s = rng.uniform(8, 24), rng.uniform(8, 24), rng.uniform(3, 8)
        maps.append(np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s)))
        dy, dx = rng.integers(-4, 5, 2)
        boxes.append(np.array([[cx - s + dx, cy - s + dy, cx + s + dx, cy + s + dy]]).clip(0, 31).round().astype(int))
    return np.stack(maps), boxes


def test_max_box_acc_from_per_image_records_equals_the_evaluator() -> None:
    maps, boxes = _blob_maps(40, seed=3)
    thresholds = default_thresholds(0.01)
    evaluator = BoxEvaluator(thresholds, multi_contour=True)
    evaluator.accumulate(maps, boxes)
    best = np.stack([image_box_scores(m, b, thresholds, multi_contour=True)[0] for m, b in zip(maps, boxes)])
    hits = box_hits(best)
    assert hits.shape == (40, thresholds.size, 3)
    assert max_box_acc(hits, np.ones((1, 40)))[0] == pytest.approx(evaluator.compute().mean, abs=1e-9)


def test_box_hits_count_an_iou_equal_to_the_threshold_as_correct() -> None:
    hits = box_hits(np.array([[0.3, 0.5, 0.7, 0.69]]))
    assert hits[0, :, 0].tolist() == [True, True, True, True]  # >= 30
    assert hits[0, :, 1].tolist() == [False, True, True, True]  # >= 50
    assert hits[0, :, 2].tolist() == [False, False, True, False]  # >= 70


def test_max_box_acc_recomputes_the_best_threshold_on_each_draw() -> None:
    # image 0 is right only at threshold 0, image 1 only at threshold 1: drawing image 1 twice moves the best
    hits = np.zeros((2, 2, 1), bool)
    hits[0, 0, 0] = hits[1, 1, 0] = True
    weights = np.array([[1.0, 1.0], [0.0, 2.0], [2.0, 0.0]])
    assert max_box_acc(hits, weights).tolist() == [50.0, 100.0, 100.0]


def test_resample_weights_draw_every_image_count_n_times_and_repeat_with_the_seed() -> None:
    w = resample_weights(7, 50, seed=1)
    assert w.shape == (50, 7) and (w.sum(axis=1) == 7).all()
    assert (w == resample_weights(7, 50, seed=1)).all()
    assert not (w == resample_weights(7, 50, seed=2)).all()


def test_paired_bootstrap_of_a_method_against_itself_is_exactly_zero() -> None:
    rng = np.random.default_rng(0)
    correct = rng.random(200) < 0.6
    interval = paired_bootstrap(top1, [correct], [correct.copy()], draws=300)
    assert (interval.estimate, interval.low, interval.high) == (0.0, 0.0, 0.0)


def test_paired_bootstrap_estimates_the_seed_mean_difference_with_an_interval_around_it() -> None:
    rng = np.random.default_rng(0)
    n = 400
    a = [rng.random(n) < 0.5 for _ in range(2)]
    b = [x | (rng.random(n) < 0.3) for x in a]  # b is right wherever a is, and on more images
    interval = paired_bootstrap(top1, a, b, draws=1000, seed=0)
    expected = np.mean([x.mean() for x in b]) * 100 - np.mean([x.mean() for x in a]) * 100
    assert interval.estimate == pytest.approx(expected)
    assert 0 < interval.low < interval.estimate < interval.high
    assert interval.high - interval.low < 10  # ~ 4 x the standard error of a ~15-point gain on 400 images
    assert str(interval).startswith(f"{expected:+.1f} [")


def test_paired_bootstrap_refuses_records_over_different_images() -> None:
    with pytest.raises(ValueError, match="same test images"):
        paired_bootstrap(top1, [np.ones(5, bool)], [np.ones(6, bool)])
