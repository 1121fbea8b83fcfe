"""BoxEvaluator and MaskEvaluator: the golden numbers of the reference implementation (exactly), counters,
merging, inputs."""

from __future__ import annotations

import ast
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from saolctl.localization.contours import (
    LevelCandidates,
    boxes_at_threshold,
    integer_thresholds,
    largest_box,
    level_candidates,
    quantize,
)
from saolctl.localization.evaluators import (
    BoxEvaluator,
    MaskEvaluator,
    default_thresholds,
    image_box_scores,
    scores_from_candidates,
)

DELTAS = np.array([0.3, 0.5, 0.7])


# --------------------------------------------------------------------------------------------------
# golden set (../shared/golden): the reference's own outputs on stored maps
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def box_golden(shared_dir: Path) -> dict[str, np.ndarray]:
    """Return the box inputs and expected outputs merged into one dict."""
    golden = shared_dir / "golden"
    out = dict(np.load(golden / "box_inputs.npz"))
    out.update(dict(np.load(golden / "box_expected.npz")))
    return out


@pytest.fixture(scope="module")
def mask_golden(shared_dir: Path) -> dict[str, np.ndarray]:
    """Return the mask inputs and expected outputs merged into one dict."""
    golden = shared_dir / "golden"
    out = dict(np.load(golden / "mask_inputs.npz"))
    out.update(dict(np.load(golden / "mask_expected.npz")))
    return out


def _gt_lists(g: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Return the GT boxes of every golden image as a list of (n_i, 4) arrays."""
    return [g["gt_boxes"][i, : g["gt_count"][i]] for i in range(len(g["scoremaps"]))]


@pytest.fixture(scope="module", params=["v1", "v2"])
def evaluated(request: pytest.FixtureRequest, box_golden: dict[str, np.ndarray]) -> tuple[str, BoxEvaluator]:
    """Return (variant, evaluator that accumulated the whole golden set in two batches)."""
    variant = request.param
    ev = BoxEvaluator(box_golden["cam_thresholds"], (30, 50, 70), multi_contour=variant == "v2")
    gts = _gt_lists(box_golden)
    maps = box_golden["scoremaps"].astype(np.float64)  # the reference ran on the float64-widened maps
    ev.accumulate(maps[:50], gts[:50])
    ev.accumulate(maps[50:], gts[50:])
    return variant, ev


def test_golden_thresholds_and_integer_levels(box_golden: dict[str, np.ndarray]) -> None:
    assert np.array_equal(default_thresholds(), box_golden["cam_thresholds"])
    q_max = np.array([quantize(m).max() for m in box_golden["scoremaps"]])
    assert np.array_equal(q_max, box_golden["max_u8"])
    levels = np.stack([integer_thresholds(box_golden["cam_thresholds"], m) for m in q_max])
    assert np.array_equal(levels, box_golden["thr_u8"])


def test_golden_box_curves_and_finals_exact(evaluated: tuple[str, BoxEvaluator],
                                            box_golden: dict[str, np.ndarray]) -> None:
    v, ev = evaluated
    res = ev.compute()
    assert res.num_images == 90 and res.num_skipped == 0
    assert np.array_equal(res.num_correct, box_golden[f"{v}_num_correct"])
    assert np.array_equal(res.box_acc, box_golden[f"{v}_box_acc"])  # count * 100.0 / N, bit for bit
    assert np.array_equal(res.max_box_acc, box_golden[f"{v}_max_box_acc"])
    assert res.mean == float(box_golden[f"{v}_max_box_acc_mean"])
    assert np.array_equal(res.best_threshold_index, box_golden[f"{v}_best_thr_idx"])
    assert np.array_equal(res.best_threshold, box_golden[f"{v}_best_thr"])
    assert res.gt_known_loc == box_golden[f"{v}_max_box_acc"][1]


@pytest.fixture(scope="module")
def golden_candidates(box_golden: dict[str, np.ndarray]) -> dict[str, list[LevelCandidates]]:
    """Return the per-level candidates of every golden map, for V1 and V2."""
    maps = box_golden["scoremaps"].astype(np.float64)
    return {"v1": [level_candidates(m, False) for m in maps], "v2": [level_candidates(m, True) for m in maps]}


def test_golden_per_image_exact(box_golden: dict[str, np.ndarray],
                                golden_candidates: dict[str, list[LevelCandidates]]) -> None:
    thresholds = box_golden["cam_thresholds"]
    gts = _gt_lists(box_golden)
    for v in ("v1", "v2"):
        for i, (cand, gt) in enumerate(zip(golden_candidates[v], gts)):
            best, count = scores_from_candidates(cand, gt, thresholds)
            assert np.array_equal(best[:, None] >= DELTAS[None], box_golden[f"{v}_correct"][i]), (v, i)
            assert np.array_equal(count, box_golden[f"{v}_num_boxes"][i]), (v, i)
            assert np.abs(best - box_golden[f"{v}_best_iou"][i]).max() <= 1e-6, (v, i)
    for i in (0, 45, 61, 79):  # the public one-image entry point gives the same
        best, count = image_box_scores(box_golden["scoremaps"][i].astype(np.float64), gts[i], thresholds, True)
        assert np.array_equal(count, box_golden["v2_num_boxes"][i])
        assert np.abs(best - box_golden["v2_best_iou"][i]).max() <= 1e-6


def test_golden_selected_boxes(box_golden: dict[str, np.ndarray],
                               golden_candidates: dict[str, list[LevelCandidates]]) -> None:
    sel_levels = box_golden["thr_u8"][:, box_golden["sel_threshold_idx"]]  # (N, 9)
    counts = box_golden["v2_sel_box_count"].ravel()
    starts = np.concatenate([[0], np.cumsum(counts)])
    flat = box_golden["v2_sel_boxes_flat"]
    for i, (v1, v2) in enumerate(zip(golden_candidates["v1"], golden_candidates["v2"])):
        for s, level in enumerate(sel_levels[i]):
            k = i * sel_levels.shape[1] + s
            expected_v2 = Counter(map(tuple, flat[starts[k]: starts[k + 1]].tolist()))
            if v1.max8 == 0:  # no contour at any level: the single box (0, 0, 0, 0)
                assert box_golden["v1_sel_boxes"][i, s].tolist() == [0, 0, 0, 0]
                assert expected_v2 == Counter([(0, 0, 0, 0)])
                continue
            assert v1.boxes[v1.level == level].tolist() == [box_golden["v1_sel_boxes"][i, s].tolist()]
            assert Counter(map(tuple, v2.boxes[v2.level == level].tolist())) == expected_v2
    for i in (0, 64, 72, 78, 79, 87):  # the one-threshold path, in OpenCV's order, on a few cases
        tau = box_golden["sel_thresholds"][3]
        k = i * sel_levels.shape[1] + 3
        got = boxes_at_threshold(box_golden["scoremaps"][i].astype(np.float64), tau, multi_contour=True)
        assert Counter(map(tuple, got.tolist())) == Counter(map(tuple, flat[starts[k]: starts[k + 1]].tolist()))
        v1_box = largest_box(box_golden["scoremaps"][i].astype(np.float64), tau)
        assert v1_box.tolist() == box_golden["v1_sel_boxes"][i, 3].tolist()


def test_golden_gt_resize(box_golden: dict[str, np.ndarray]) -> None:
    from saolctl.data.boxes import resize_boxes

    out = np.stack([resize_boxes(b, tuple(s), 224)[0]
                    for b, s in zip(box_golden["resize_in_boxes"], box_golden["resize_in_sizes"])])
    assert np.array_equal(out, box_golden["resize_out_boxes"])
    for i in range(len(box_golden["scoremaps"])):
        n = box_golden["gt_count"][i]
        resized = resize_boxes(box_golden["gt_boxes_orig"][i, :n], tuple(box_golden["image_sizes"][i]), 224)
        assert np.array_equal(resized, box_golden["gt_boxes"][i, :n])


def _golden_masks(g: dict[str, np.ndarray]) -> np.ndarray:
    """Return the union of the instance masks of every golden mask image (M, H, W)."""
    return np.stack([g["instance_masks"][i, : g["instance_count"][i]].any(axis=0) for i in range(len(g["scoremaps"]))])


def test_golden_pxap_exact(mask_golden: dict[str, np.ndarray]) -> None:
    masks = _golden_masks(mask_golden)
    ignore = mask_golden["ignore_region"]
    gt = masks.astype(np.uint8) + 255 * (ignore & ~masks).astype(np.uint8)
    assert np.array_equal(gt, mask_golden["gt_mask"])
    ev = MaskEvaluator(mask_golden["cam_thresholds"])
    ev.accumulate(mask_golden["scoremaps"][:13], masks[:13], ignore[:13])
    ev.accumulate(mask_golden["scoremaps"][13:], masks[13:], ignore[13:])
    res = ev.compute()
    assert np.array_equal(ev.bin_edges, mask_golden["bin_edges"])
    assert np.array_equal(res.gt_true_hist, mask_golden["gt_true_score_hist"])
    assert np.array_equal(res.gt_false_hist, mask_golden["gt_false_score_hist"])
    for key in ("tp", "fn", "fp", "tn"):
        assert np.array_equal(getattr(res, key), mask_golden[key])
    assert abs(res.pxap - float(mask_golden["pxap"])) <= 1e-6
    for key in ("precision", "recall"):
        got, expected = getattr(res, key), mask_golden[key]
        assert np.array_equal(np.isnan(got), np.isnan(expected))
        assert np.nanmax(np.abs(got - expected)) <= 1e-12


def test_golden_pxap_per_image(mask_golden: dict[str, np.ndarray]) -> None:
    masks = _golden_masks(mask_golden)
    for i in range(len(masks)):
        ev = MaskEvaluator(mask_golden["cam_thresholds"])
        ev.accumulate(mask_golden["scoremaps"][i: i + 1], masks[i: i + 1], mask_golden["ignore_region"][i: i + 1])
        res = ev.compute()
        assert np.array_equal(res.gt_true_hist, mask_golden["per_image_true_hist"][i])
        assert np.array_equal(res.gt_false_hist, mask_golden["per_image_false_hist"][i])
        expected = mask_golden["per_image_pxap"][i]
        if np.isnan(expected):
            assert np.isnan(res.pxap)
        else:
            assert abs(res.pxap - expected) <= 1e-6


# --------------------------------------------------------------------------------------------------
# hand-made evaluation cases
# --------------------------------------------------------------------------------------------------


def _square_map(size: int = 32) -> np.ndarray:
    """Return a map with one bright 8x8 square at x, y = 4..11 (box (4, 4, 12, 12) at any tau)."""
    m = np.zeros((size, size))
    m[4:12, 4:12] = 1.0
    return m


def test_several_gt_boxes_best_one_counts() -> None:
    thresholds = np.array([0.5])
    far = np.array([[20, 20, 30, 30]])
    best_far, _ = image_box_scores(_square_map(), far, thresholds, True)
    best_both, _ = image_box_scores(_square_map(), np.vstack([far, [[4, 4, 12, 12]]]), thresholds, True)
    assert best_far[0] == 0.0 and best_both[0] == 1.0


def test_iou_tie_at_delta_counts_as_correct() -> None:
    # candidate (4, 4, 12, 12) has 81 pixels; a GT box inside it with 81 * 0.5 pixels is impossible, use
    # a GT of 9 x 18 = 162 pixels containing the candidate's 81: IoU = 81 / 162 = 0.5 exactly
    gt = np.array([[4, 4, 12, 21]])
    best, _ = image_box_scores(_square_map(), gt, np.array([0.5]), False)
    assert best[0] == 0.5
    ev = BoxEvaluator(np.array([0.5]), (50, 70))
    ev.accumulate(_square_map()[None], [gt])
    assert ev.compute().num_correct.tolist() == [[1, 0]]


def test_top1_loc_gt_known_and_skipped_images() -> None:
    maps = np.stack([_square_map()] * 4)
    good, bad = np.array([[4, 4, 12, 12]]), np.array([[20, 20, 30, 30]])
    ev = BoxEvaluator(np.array([0.2, 0.5]), (30, 50, 70))
    ev.accumulate(maps, [good, good, bad, np.zeros((0, 4))], class_correct=np.array([True, False, True, True]))
    res = ev.compute()
    assert res.num_images == 3 and res.num_skipped == 1
    assert res.gt_known_loc == pytest.approx(200 / 3)
    assert res.top1_loc == pytest.approx(100 / 3)
    assert res.best_threshold_index.tolist() == [0, 0, 0]
    ev2 = BoxEvaluator(np.array([0.2, 0.5]))
    ev2.accumulate(maps[:1], [good])  # no class information
    assert np.isnan(ev2.compute().top1_loc) and ev2.compute().gt_known_loc == 100.0


def test_empty_evaluators_give_nan() -> None:
    res = BoxEvaluator(np.array([0.5])).compute()
    assert res.num_images == 0 and np.isnan(res.box_acc).all() and np.isnan(res.mean)
    assert np.isnan(MaskEvaluator(np.array([0.0, 0.5])).compute().pxap)


# --------------------------------------------------------------------------------------------------
# counters: merge, DDP vector, memory
# --------------------------------------------------------------------------------------------------


def _random_batch(seed: int, n: int) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
    """Return n random smooth 24x24 maps, GT boxes and class flags."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    maps = ndimage.uniform_filter(rng.random((n, 24, 24)), (0, 5, 5))
    maps = (maps - maps.min(axis=(1, 2), keepdims=True)) / np.ptp(maps, axis=(1, 2), keepdims=True)
    boxes = []
    for _ in range(n):
        x0, y0 = rng.integers(0, 12, 2)
        boxes.append(np.array([[x0, y0, x0 + rng.integers(3, 12), y0 + rng.integers(3, 12)]]))
    return maps, boxes, rng.random(n) < 0.6


@pytest.mark.parametrize("multi", [False, True])
def test_merge_equals_single_pass(multi: bool) -> None:
    maps, boxes, cls = _random_batch(0, 12)
    thresholds = np.arange(0, 1, 0.01)
    whole = BoxEvaluator(thresholds, multi_contour=multi)
    whole.accumulate(maps, boxes, cls)
    a, b = BoxEvaluator(thresholds, multi_contour=multi), BoxEvaluator(thresholds, multi_contour=multi)
    a.accumulate(maps[:5], boxes[:5], cls[:5])
    b.accumulate(maps[5:], boxes[5:], cls[5:])
    summed = a + b
    assert np.array_equal(summed.compute().box_acc, whole.compute().box_acc)
    assert summed.compute().top1_loc == whole.compute().top1_loc
    c = BoxEvaluator(thresholds, multi_contour=multi)
    c.load_counters(a.counters + b.counters)  # what an all-reduce of `counters` does
    assert np.array_equal(c.counters, whole.counters)
    d = BoxEvaluator(thresholds, multi_contour=multi)
    d.load_state_dict(a.merge(b).state_dict())
    assert np.array_equal(d.counters, whole.counters)
    with pytest.raises(ValueError):
        whole.merge(BoxEvaluator(thresholds, multi_contour=not multi))


def test_mask_merge_equals_single_pass() -> None:
    maps, _, _ = _random_batch(1, 6)
    masks = maps > 0.6
    ignore = (maps > 0.4) & (maps < 0.5)
    whole = MaskEvaluator()
    whole.accumulate(maps, masks, ignore)
    a, b = MaskEvaluator(), MaskEvaluator()
    a.accumulate(maps[:2], masks[:2], ignore[:2])
    b.accumulate(maps[2:], masks[2:], ignore[2:])
    assert (a + b).compute().pxap == whole.compute().pxap
    c = MaskEvaluator()
    c.load_state_dict(a.merge(b).state_dict())
    assert np.array_equal(c.counters, whole.counters)


def test_memory_is_flat() -> None:
    maps, boxes, _ = _random_batch(2, 8)
    ev = BoxEvaluator()
    ev.accumulate(maps[:2], boxes[:2])
    size = ev.counters.size
    ev.accumulate(maps, boxes)
    ev.accumulate(maps, boxes)
    assert ev.counters.size == size == 3 + 2 * 1000 * 3
    mev = MaskEvaluator()
    mev.accumulate(maps[:1], maps[:1] > 0.5)
    size = mev.counters.size
    mev.accumulate(maps, maps > 0.5)
    assert mev.counters.size == size == 1 + 2 * 1002


# --------------------------------------------------------------------------------------------------
# inputs
# --------------------------------------------------------------------------------------------------


def test_invalid_inputs_raise() -> None:
    ev = BoxEvaluator(np.array([0.5]))
    good = np.zeros((1, 8, 8))
    box = [np.array([[0, 0, 3, 3]])]
    with pytest.raises(ValueError, match="NaN"):
        ev.accumulate(np.full((1, 8, 8), np.nan), box)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        ev.accumulate(good + 1.5, box)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        ev.accumulate(good - 0.1, box)
    with pytest.raises(ValueError, match="shape"):
        ev.accumulate(np.zeros((8, 8)), box)
    with pytest.raises(ValueError, match="maps but"):
        ev.accumulate(good, box * 2)
    with pytest.raises(ValueError, match=r"\(n, 4\)"):
        ev.accumulate(good, [np.array([0, 0, 3])])
    with pytest.raises(ValueError, match="x0 <= x1"):
        ev.accumulate(good, [np.array([[3, 0, 0, 3]])])
    with pytest.raises(ValueError, match="integer"):
        ev.accumulate(good, [np.array([[0.5, 0, 3, 3]])])
    with pytest.raises(ValueError, match="class_correct"):
        ev.accumulate(good, box, class_correct=np.array([True, False]))
    mev = MaskEvaluator(np.array([0.0, 0.5]))
    with pytest.raises(ValueError, match="shape"):
        mev.accumulate(good, np.zeros((1, 8, 9), bool))
    with pytest.raises(ValueError, match="shape"):
        mev.accumulate(good, np.zeros((1, 8, 8), bool), ignore=np.zeros((8, 8), bool))
    with pytest.raises(ValueError):
        MaskEvaluator(np.array([0.5, 0.2]))
    with pytest.raises(ValueError):
        BoxEvaluator(np.array([0.5, 1.5]))
    assert ev.num_images == 0  # nothing was counted


class _FakeTensor:
    """A minimal torch-like object: detach().cpu().numpy()."""

    def __init__(self, array: np.ndarray) -> None:
        self.array = array

    def detach(self) -> _FakeTensor:
        return self

    def cpu(self) -> _FakeTensor:
        return self

    def numpy(self) -> np.ndarray:
        return self.array


def test_tensor_like_inputs_and_float32() -> None:
    maps, boxes, cls = _random_batch(3, 3)
    a, b = BoxEvaluator(np.array([0.3, 0.6])), BoxEvaluator(np.array([0.3, 0.6]))
    a.accumulate(maps, boxes, cls)
    b.accumulate(_FakeTensor(maps), [_FakeTensor(x) for x in boxes], _FakeTensor(cls))
    assert np.array_equal(a.counters, b.counters)
    torch = pytest.importorskip("torch")
    c = BoxEvaluator(np.array([0.3, 0.6]))
    c.accumulate(torch.from_numpy(maps), [torch.from_numpy(x) for x in boxes], torch.from_numpy(cls))
    assert np.array_equal(a.counters, c.counters)


def test_evaluator_modules_do_not_import_torch() -> None:
    root = Path(__file__).resolve().parents[1] / "saolctl" / "localization"
    for name in ("evaluators.py", "contours.py"):
        tree = ast.parse((root / name).read_text())
        top_level = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
        modules = [a.name for n in top_level if isinstance(n, ast.Import) for a in n.names]
        modules += [n.module or "" for n in top_level if isinstance(n, ast.ImportFrom)]
        assert all(m.split(".")[0] in {"__future__", "collections", "dataclasses", "numpy", "scipy", "saolctl"}
                   for m in modules), modules
        assert not any(m.startswith("saolctl.data") for m in modules)  # saolctl.data imports torch
