"""Speed of saolctl's BoxEvaluator against a straightforward OpenCV implementation of the reference protocol.

Usage (one core; OpenCV is needed only here: ``pip install opencv-python-headless``)::

    OMP_NUM_THREADS=1 python bench/bench_evaluators.py [--n 20] [--size 224] [--repeat 1]

For each kind of map (smooth CAM-like maps, the same maps with noise), the script evaluates every map
with 1000 thresholds twice: with the reference loop (per threshold: ``cv2.threshold``,
``cv2.findContours(RETR_TREE, CHAIN_APPROX_SIMPLE)``, largest ``contourArea`` for V1 or every contour for
V2, ``boundingRect``, IoU with the GT boxes; written as the reference's ``compute_bboxes_from_scoremaps``
and ``BoxEvaluator.accumulate``) and with saolctl's :class:`BoxEvaluator`. It checks that the per-threshold
correct counts are identical, prints the time per image and the speed ratio, and the peak memory
(tracemalloc) of the saolctl evaluator for N and 4N images.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import tracemalloc
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
from scipy import ndimage  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from saolctl.localization.contours import level_candidates_v1_v2  # noqa: E402
from saolctl.localization.evaluators import BoxEvaluator  # noqa: E402

IOU_THRESHOLDS = (30, 50, 70)


def smooth_maps(n: int, size: int, seed: int = 0) -> np.ndarray:
    """Return n CAM-like maps (n, size, size) float32: 1-3 Gaussian bumps on a 7x7 grid, bicubic-upsampled."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:7, 0:7]
    out = np.empty((n, size, size), np.float32)
    for i in range(n):
        grid = 0.15 * rng.random((7, 7))
        for _ in range(int(rng.integers(1, 4))):
            cy, cx = rng.uniform(0, 6, 2)
            sigma, amp = rng.uniform(0.6, 1.5), rng.uniform(0.5, 1.0)
            grid += amp * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma**2))
        up = ndimage.zoom(grid, size / 7, order=3)
        out[i] = (up - up.min()) / (up.max() - up.min())
    return out


def noisy_maps(n: int, size: int, seed: int = 1) -> np.ndarray:
    """Return n smooth maps with Gaussian pixel noise (sigma 0.15), min-max normalised, float32."""
    rng = np.random.default_rng(seed)
    out = smooth_maps(n, size, seed + 100).astype(np.float64)
    out += rng.normal(0, 0.15, out.shape)
    lo = out.min(axis=(1, 2), keepdims=True)
    hi = out.max(axis=(1, 2), keepdims=True)
    return ((out - lo) / (hi - lo)).astype(np.float32)


def gt_boxes_for(maps: np.ndarray, seed: int = 2) -> list[np.ndarray]:
    """Return one or two plausible GT boxes per map (around its brightest region, jittered)."""
    rng = np.random.default_rng(seed)
    boxes = []
    for m in maps:
        ys, xs = np.nonzero(m > 0.5)
        box = np.array([xs.min(), ys.min(), xs.max(), ys.max()]) + rng.integers(-8, 9, 4)
        box = np.clip(box, 0, m.shape[1] - 1)
        box[2:] = np.maximum(box[2:], box[:2])
        extra = np.array([[0, 0, m.shape[1] // 3, m.shape[0] // 3]])
        boxes.append(np.vstack([box[None], extra]) if rng.random() < 0.5 else box[None])
    return boxes


class ReferenceLoop:
    """The reference protocol written plainly with OpenCV: one findContours call per threshold."""

    def __init__(self, multi_contour: bool, lean: bool = False) -> None:
        import cv2

        cv2.setNumThreads(1)
        self.cv2 = cv2
        self.multi_contour = multi_contour
        self.lean = lean  # compute max8 once per map instead of once per threshold (as the reference does)
        self.thresholds = list(np.arange(0, 1, 0.001))
        self.num_correct = np.zeros((len(self.thresholds), len(IOU_THRESHOLDS)), np.int64)

    def boxes(self, scoremap: np.ndarray) -> tuple[np.ndarray, list[int]]:
        """Return every threshold's candidate boxes (concatenated) and their counts (as the reference)."""
        cv2 = self.cv2
        height, width = scoremap.shape
        image = np.expand_dims((scoremap * 255).astype(np.uint8), 2)
        max8 = np.max(image)
        all_boxes, counts = [], []
        for threshold in self.thresholds:
            level = int(threshold * (max8 if self.lean else np.max(image)))
            _, binary = cv2.threshold(image, level, 255, cv2.THRESH_BINARY)
            contours = cv2.findContours(binary, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)[0]
            if len(contours) == 0:
                all_boxes.append(np.zeros((1, 4), np.int64))
                counts.append(1)
                continue
            if not self.multi_contour:
                contours = [max(contours, key=cv2.contourArea)]
            found = []
            for contour in contours:
                x, y, w, h = cv2.boundingRect(contour)
                found.append([x, y, min(x + w, width - 1), min(y + h, height - 1)])
            all_boxes.append(np.asarray(found))
            counts.append(len(contours))
        return np.concatenate(all_boxes), counts

    def accumulate(self, scoremap: np.ndarray, gt: np.ndarray) -> None:
        """Count the thresholds at which the best IoU reaches each delta."""
        boxes, counts = self.boxes(scoremap)
        a, b = boxes[:, None, :], gt[None, :, :]
        iw = np.maximum(0, np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]) + 1)
        ih = np.maximum(0, np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]) + 1)
        inter = iw * ih
        union = ((a[..., 2] - a[..., 0] + 1) * (a[..., 3] - a[..., 1] + 1)
                 + (b[..., 2] - b[..., 0] + 1) * (b[..., 3] - b[..., 1] + 1) - inter)
        per_box = (inter / union).max(axis=1)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        best = np.maximum.reduceat(per_box, starts)
        for d, delta in enumerate(IOU_THRESHOLDS):
            self.num_correct[:, d] += best >= delta / 100


def time_reference(maps: np.ndarray, boxes: list[np.ndarray], multi: bool,
                   lean: bool) -> tuple[float, np.ndarray]:
    """Return seconds per image and the counts of the reference loop (maps widened to float64)."""
    ref = ReferenceLoop(multi, lean)
    start = time.perf_counter()
    for m, gt in zip(maps, boxes):
        ref.accumulate(m.astype(np.float64), gt)
    return (time.perf_counter() - start) / len(maps), ref.num_correct


def time_saolctl(maps: np.ndarray, boxes: list[np.ndarray], multi: bool, repeat: int) -> tuple[float, np.ndarray]:
    """Return seconds per image (best of ``repeat``) and the counts of saolctl's BoxEvaluator."""
    best = float("inf")
    ev = BoxEvaluator(iou_thresholds=IOU_THRESHOLDS, multi_contour=multi)
    for _ in range(repeat):
        ev = BoxEvaluator(iou_thresholds=IOU_THRESHOLDS, multi_contour=multi)
        start = time.perf_counter()
        ev.accumulate(maps, boxes)
        best = min(best, (time.perf_counter() - start) / len(maps))
    return best, ev.num_correct


def time_saolctl_both(maps: np.ndarray, boxes: list[np.ndarray], repeat: int) -> tuple[float, np.ndarray, np.ndarray]:
    """Return seconds per image (best of ``repeat``) and the V1 and V2 counts scored from one contour pass."""
    best = float("inf")
    v1 = v2 = BoxEvaluator()
    for _ in range(repeat):
        v1 = BoxEvaluator(iou_thresholds=IOU_THRESHOLDS, multi_contour=False)
        v2 = BoxEvaluator(iou_thresholds=IOU_THRESHOLDS, multi_contour=True)
        start = time.perf_counter()
        for m, gt in zip(maps, boxes):
            c1, c2 = level_candidates_v1_v2(m)
            v1.accumulate_candidates(c1, gt)
            v2.accumulate_candidates(c2, gt)
        best = min(best, (time.perf_counter() - start) / len(maps))
    return best, v1.num_correct, v2.num_correct


def peak_memory(maps: np.ndarray, boxes: list[np.ndarray], copies: int) -> float:
    """Return the peak traced memory (MiB) of accumulating ``copies`` passes over the maps one by one."""
    ev = BoxEvaluator(multi_contour=True)
    tracemalloc.start()
    for _ in range(copies):
        for m, gt in zip(maps, boxes):
            ev.accumulate(m[None], [gt])
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak / 2**20


def main() -> None:
    """Run the benchmark and print a table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20, help="maps per kind")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeat", type=int, default=3, help="saolctl timing: best of this many passes")
    parser.add_argument("--lean-reference", action="store_true",
                        help="reference loop computes max8 once per map (the reference recomputes it per threshold)")
    args = parser.parse_args()
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass
    BoxEvaluator().accumulate(np.zeros((1, 8, 8)), [np.array([[0, 0, 1, 1]])])  # warm imports
    print(f"{args.n} maps per kind, {args.size}x{args.size}, 1000 thresholds, deltas {IOU_THRESHOLDS}, one core,"
          f" reference {'lean (max8 once per map)' if args.lean_reference else 'as written (max8 per threshold)'}")
    print(f"{'maps':8s} {'variant':8s} {'reference ms/img':>17s} {'saolctl ms/img':>15s} {'speed-up':>9s}  identical")
    for kind, maps in (("smooth", smooth_maps(args.n, args.size)), ("noisy", noisy_maps(args.n, args.size))):
        boxes = gt_boxes_for(maps)
        ref_time, ref_counts = 0.0, {}
        for multi, name in ((False, "V1"), (True, "V2")):
            t_ref, n_ref = time_reference(maps, boxes, multi, args.lean_reference)
            t_ours, n_ours = time_saolctl(maps, boxes, multi, args.repeat)
            ref_time, ref_counts[name] = ref_time + t_ref, n_ref
            same = np.array_equal(n_ref, n_ours)
            print(f"{kind:8s} {name:8s} {t_ref * 1e3:17.2f} {t_ours * 1e3:15.2f} {t_ref / t_ours:8.1f}x  {same}")
            if not same:
                raise SystemExit("results differ from the reference loop")
        # what `eval` reports: V1 and V2 both; the reference runs once per variant, saolctl traces contours once
        t_both, n1, n2 = time_saolctl_both(maps, boxes, args.repeat)
        same = np.array_equal(ref_counts["V1"], n1) and np.array_equal(ref_counts["V2"], n2)
        print(f"{kind:8s} {'V1+V2':8s} {ref_time * 1e3:17.2f} {t_both * 1e3:15.2f} {ref_time / t_both:8.1f}x  {same}")
        if not same:
            raise SystemExit("results differ from the reference loop")
    maps = smooth_maps(args.n, args.size)
    boxes = gt_boxes_for(maps)
    m1, m4 = peak_memory(maps, boxes, 1), peak_memory(maps, boxes, 4)
    print(f"peak traced memory, V2 evaluator: {args.n} images {m1:.2f} MiB, {4 * args.n} images {m4:.2f} MiB")


if __name__ == "__main__":
    main()
