"""Contours of thresholded maps: hand-made cases with exact boxes, the all-levels algorithm against the
one-threshold labelling, and (when OpenCV is installed) the one-threshold labelling against OpenCV."""

from __future__ import annotations

import numpy as np
import pytest

from saolctl.localization.contours import (
    ContourSet,
    boxes_at_threshold,
    contours_at_level,
    integer_thresholds,
    largest_box,
    level_candidates,
    quantize,
)


def _canvas(height: int, width: int, pixels: list[tuple[int, int]]) -> np.ndarray:
    """Return a (H, W) map with value 1 at the given (x, y) pixels and 0 elsewhere."""
    m = np.zeros((height, width))
    for x, y in pixels:
        m[y, x] = 1.0
    return m


def _rect(m: np.ndarray, x0: int, y0: int, x1: int, y1: int, value: float = 1.0) -> np.ndarray:
    """Fill the inclusive rectangle x0..x1, y0..y1 of m with value and return m."""
    m[y0: y1 + 1, x0: x1 + 1] = value
    return m


def _boxes(m: np.ndarray, tau: float = 0.5) -> list[tuple[int, ...]]:
    """Return the V2 boxes of m at tau in OpenCV order as tuples."""
    return [tuple(int(v) for v in b) for b in boxes_at_threshold(m, tau, multi_contour=True)]


def _fast(m: np.ndarray, level: int, multi: bool) -> list[tuple[int, ...]]:
    """Return the candidate boxes of the all-levels algorithm at one integer level, sorted."""
    cand = level_candidates(m, multi)
    return sorted(tuple(int(v) for v in b) for b in cand.boxes[cand.level == level])


# --------------------------------------------------------------------------------------------------
# hand-made cases
# --------------------------------------------------------------------------------------------------


def test_single_pixel_box_is_one_past_its_pixel() -> None:
    m = _canvas(8, 10, [(5, 3)])
    assert _boxes(m) == [(5, 3, 6, 4)]
    assert tuple(largest_box(m, 0.5)) == (5, 3, 6, 4)


def test_pixel_in_bottom_right_corner_is_clipped() -> None:
    m = _canvas(8, 10, [(9, 7)])
    assert _boxes(m) == [(9, 7, 9, 7)]
    assert _fast(m, 0, True) == [(9, 7, 9, 7)]


def test_nothing_above_threshold_gives_the_empty_box() -> None:
    assert _boxes(np.zeros((6, 6))) == [(0, 0, 0, 0)]
    assert tuple(largest_box(np.zeros((6, 6)), 0.3)) == (0, 0, 0, 0)
    cand = level_candidates(np.zeros((6, 6)), True)
    assert cand.max8 == 0 and cand.boxes.shape == (0, 4)
    assert _boxes(np.full((6, 6), 0.5), tau=0.999) != [(0, 0, 0, 0)]  # the maximum always stays foreground


def test_ring_gives_component_and_grown_hole_box() -> None:
    m = _rect(np.zeros((12, 12)), 1, 1, 8, 8)
    _rect(m, 3, 3, 6, 6, 0.0)  # 4x4 hole
    assert _boxes(m) == [(1, 1, 9, 9), (2, 2, 8, 8)]  # hole 3..6 grown: (3 - 1, 3 - 1, 6 + 2, 6 + 2)
    assert tuple(largest_box(m, 0.5)) == (1, 1, 9, 9)
    assert _fast(m, 100, True) == [(1, 1, 9, 9), (2, 2, 8, 8)]
    assert _fast(m, 100, False) == [(1, 1, 9, 9)]


def test_hole_reaching_outside_only_diagonally_is_a_hole() -> None:
    m = _rect(np.zeros((6, 6)), 1, 1, 3, 3)
    m[2, 2] = 0.0  # the hole pixel
    m[1, 1] = 0.0  # its diagonal neighbour (1, 1) is background touching the outside
    m[1, 2] = m[2, 1] = 1.0
    boxes = _boxes(m)
    assert (1, 1, 4, 4) in boxes and len(boxes) == 2
    assert (1, 1, 4, 4) in _fast(m, 10, True)


def test_several_components_in_opencv_order_and_v1_tie() -> None:
    m = _canvas(8, 8, [(1, 1), (5, 1), (3, 4)])
    assert _boxes(m) == [(3, 4, 4, 5), (5, 1, 6, 2), (1, 1, 2, 2)]  # last discovered first
    assert tuple(largest_box(m, 0.5)) == (3, 4, 4, 5)  # equal areas (0): the first listed wins
    assert _fast(m, 0, False) == [(3, 4, 4, 5)]


def test_three_equal_squares_tie_goes_to_the_lowest() -> None:
    m = np.zeros((20, 20))
    for x0, y0 in ((2, 2), (10, 2), (6, 12)):
        _rect(m, x0, y0, x0 + 3, y0 + 3)
    assert tuple(largest_box(m, 0.5)) == (6, 12, 10, 16)
    assert _fast(m, 50, False) == [(6, 12, 10, 16)]


def test_thin_line_and_diagonal_chain_have_zero_area() -> None:
    m = _canvas(12, 16, [(x, 1) for x in range(1, 12)] + [(x, x) for x in range(4, 10)])
    contours = contours_at_level(quantize(m), 0)
    assert contours.area.tolist() == [0.0, 0.0]
    assert _boxes(m) == [(4, 4, 10, 10), (1, 1, 12, 2)]  # the diagonal's first pixel comes later
    assert tuple(largest_box(m, 0.5)) == (4, 4, 10, 10)  # tie at area 0: the later first pixel
    assert _fast(m, 0, False) == [(4, 4, 10, 10)]
    diagonal = _canvas(8, 8, [(i, i) for i in range(8)])
    assert _boxes(diagonal) == [(0, 0, 7, 7)]  # one 8-connected component


def test_polygon_area_not_pixel_count_decides_v1() -> None:
    m = _canvas(16, 16, [(x, 1) for x in range(16)])  # 16 pixels, area 0
    _rect(m, 10, 10, 12, 12)  # 9 pixels, area 4
    assert sorted(contours_at_level(quantize(m), 0).area.tolist()) == [0.0, 4.0]
    assert tuple(largest_box(m, 0.5)) == (10, 10, 13, 13)
    assert _fast(m, 0, False) == [(10, 10, 13, 13)]


def test_rectangle_area_and_hole_does_not_reduce_it() -> None:
    solid = _rect(np.zeros((12, 12)), 2, 3, 8, 6)  # 7 x 4 pixels
    assert contours_at_level(quantize(solid), 0).area.tolist() == [(7 - 1) * (4 - 1)]
    ring = solid.copy()
    ring[4:6, 4:7] = 0.0
    contours = contours_at_level(quantize(ring), 0)
    assert contours.area[~contours.is_hole].tolist() == [18.0]
    assert contours.is_hole.tolist() == [False, True]


def test_component_inside_a_hole() -> None:
    m = _rect(np.zeros((15, 15)), 1, 1, 11, 11)
    _rect(m, 3, 3, 9, 9, 0.0)
    _rect(m, 5, 6, 7, 7)  # island
    contours = contours_at_level(quantize(m), 0)
    assert [tuple(b) for b in contours.boxes] == [(1, 1, 12, 12), (2, 2, 11, 11), (5, 6, 8, 8)]
    assert contours.parent.tolist() == [-1, 0, 1]
    assert tuple(largest_box(m, 0.5)) == (1, 1, 12, 12)
    assert _fast(m, 0, True) == sorted([(1, 1, 12, 12), (2, 2, 11, 11), (5, 6, 8, 8)])


def test_levels_follow_relative_integer_threshold() -> None:
    m = np.array([[0.1, 0.2, 0.3], [0.0, 0.25, 0.3]])  # raw map, max8 = 76
    q = quantize(m)
    assert q.max() == 76 and q[0, 0] == 25  # floor(255 * m)
    assert integer_thresholds(np.array([0.0, 0.5, 0.999]), 76).tolist() == [0, 38, 75]
    # strictly greater: at tau = 0.999 only the two 76s stay foreground
    assert _boxes(m, 0.999) == [(2, 0, 2, 1)]  # y1 clipped to H - 1 = 1
    # the six (max8, k) pairs where int(tau_k * max8) is one below floor(k * max8 / 1000)
    taus = np.arange(0, 1, 0.001)
    for max8, k in ((50, 580), (100, 290), (100, 580), (200, 145), (200, 290), (200, 580)):
        assert integer_thresholds(taus, max8)[k] == k * max8 // 1000 - 1


# --------------------------------------------------------------------------------------------------
# the all-levels algorithm against the one-threshold labelling
# --------------------------------------------------------------------------------------------------


def _random_maps(seed: int, count: int) -> list[np.ndarray]:
    """Return small maps of several kinds: few levels (plateaus), noise, smooth, sparse, non-square."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    maps = []
    for i in range(count):
        h, w = (int(v) for v in rng.integers(1, 15, 2))
        kind = i % 5
        if kind == 0:
            m = rng.integers(0, 4, (h, w)) / 3.0
        elif kind == 1:
            m = rng.random((h, w))
        elif kind == 2:
            m = ndimage.uniform_filter(rng.random((h, w)), 3)
            m = (m - m.min()) / (np.ptp(m) + 1e-12)
        elif kind == 3:
            m = rng.integers(0, 256, (h, w)) / 255.0 * (rng.random((h, w)) < 0.5)
        else:
            m = (rng.random((h, w)) * 0.3).astype(np.float32)  # raw, max8 < 255
        maps.append(np.clip(m, 0, 1))
    return maps


@pytest.mark.parametrize("seed", [0, 1])
def test_all_levels_match_one_threshold_labelling(seed: int) -> None:
    for m in _random_maps(seed, 50):
        q = quantize(m)
        v1, v2 = level_candidates(m, False), level_candidates(m, True)
        assert v1.max8 == v2.max8 == int(q.max())
        values = np.unique(q)
        cache: dict[int, ContourSet] = {}
        for level in range(int(q.max())):
            same = int(values[values <= level].max(initial=0))  # q > level is the same set as q > same
            if same not in cache:
                cache[same] = contours_at_level(q, same)
            contours = cache[same]
            expected = sorted(tuple(int(v) for v in b) for b in contours.boxes)
            got = sorted(tuple(int(v) for v in b) for b in v2.boxes[v2.level == level])
            assert got == expected, (m, level)
            largest = np.where(contours.is_hole, -1.0, contours.area).argmax()
            assert [tuple(b) for b in v1.boxes[v1.level == level]] == [tuple(contours.boxes[largest])]


def test_all_levels_on_plateaus_and_thin_maps() -> None:
    rng = np.random.default_rng(7)
    base = np.kron(rng.integers(0, 3, (6, 6)), np.ones((5, 5))) / 2.0  # big flat plateaus
    for m in (base, base[:1], base[:, :1], base.T[:7]):
        q = quantize(m)
        v2 = level_candidates(m, True)
        for level in range(int(q.max())):
            expected = sorted(tuple(int(v) for v in b) for b in contours_at_level(q, level).boxes)
            assert sorted(tuple(int(v) for v in b) for b in v2.boxes[v2.level == level]) == expected


# --------------------------------------------------------------------------------------------------
# the one-threshold labelling against OpenCV (optional dependency, installed for the bench)
# --------------------------------------------------------------------------------------------------


def test_one_threshold_matches_opencv_order_boxes_and_areas() -> None:
    cv2 = pytest.importorskip("cv2")
    from scipy import ndimage

    rng = np.random.default_rng(3)
    for i in range(400):
        h, w = (int(v) for v in rng.integers(2, 20, 2))
        img = rng.random((h, w))
        if i % 2:
            img = ndimage.uniform_filter(img, 3)
        fg = img > np.quantile(img, rng.random())
        found = cv2.findContours(fg.astype(np.uint8) * 255, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)[0]
        expected = []
        for c in found:
            x, y, bw, bh = cv2.boundingRect(c)
            expected.append((x, y, min(x + bw, w - 1), min(y + bh, h - 1)))
        contours = contours_at_level(fg.astype(np.uint8), 0)
        assert [tuple(int(v) for v in b) for b in contours.boxes] == expected
        for k, c in enumerate(found):
            if not contours.is_hole[k]:
                assert contours.area[k] == cv2.contourArea(c)
