"""The contour and histogram work of an evaluation, in this process or in a pool of worker processes.

A chunk of maps with their ground truth (at each map's size) is scored into box and mask counters. With
one process the chunk goes straight into the evaluation's counters; with several, each worker scores a
share into fresh counters and sends them back, and the main process sums them in. Counters are integer
counts, so the result is identical for any number of processes and any order.
"""

from __future__ import annotations

import multiprocessing
import signal
import sys
from collections import Counter, deque
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Protocol, Sequence

import numpy as np

from saolctl.data.maps_dir import MapRef, load_maps
from saolctl.data.split_targets import ImageTargets
from saolctl.localization.contours import level_candidates_v1_v2
from saolctl.localization.evaluators import BoxEvaluator, MaskEvaluator

if TYPE_CHECKING:
    from saolctl.engine.evaluate import EvalCounters


@dataclass(frozen=True)
class MapChunk:
    """Maps with their ground truth at each map's own size, ready to score."""

    maps: Sequence[np.ndarray]  # B maps (H_i, W_i) in [0, 1]
    boxes: Sequence[np.ndarray]  # B GT box arrays (n_i, 4) in the map's pixels; (0, 4) = not localized
    labels: np.ndarray  # (B,) int64 GT class (its per-class V1 counters count the image)
    class_correct: np.ndarray | None  # (B,) bool top-1 right, or None when no prediction is known
    masks: Sequence[np.ndarray | None] | None = None  # B object masks (H_i, W_i) bool, None = no mask
    ignore: Sequence[np.ndarray | None] | None = None  # B ignore masks (H_i, W_i) bool or None
    shapes: Counter = field(default_factory=Counter)  # "HxW" -> number of maps (what a map file held)

    def materialize(self) -> MapChunk:
        """Return the chunk itself (its maps are in hand)."""
        return self


@dataclass(frozen=True)
class MapFileChunk:
    """Map files with the ground truth of their images in the original frame; read and checked by the scorer."""

    refs: Sequence[MapRef]
    targets: Sequence[ImageTargets]
    class_correct: np.ndarray | None  # (B,) bool or None
    normalize: bool = False

    def materialize(self) -> MapChunk:
        """Read and check every map, and resize each image's ground truth to its map's size."""
        maps, boxes, masks, ignores = [], [], [], []
        shapes: Counter = Counter()
        for m, t in zip(load_maps(list(self.refs), self.normalize), self.targets):  # m: (H, W)
            size = (m.shape[1], m.shape[0])  # (w, h)
            obj, ign = t.masks_at(size)
            maps.append(m)
            boxes.append(t.boxes_at(size))
            masks.append(obj)
            ignores.append(ign)
            shapes[f"{m.shape[0]}x{m.shape[1]}"] += 1
        labels = np.asarray([t.label for t in self.targets], np.int64)
        return MapChunk(maps, boxes, labels, self.class_correct, masks, ignores, shapes)


class Job(Protocol):
    """Anything that yields a MapChunk to score."""

    def materialize(self) -> MapChunk: ...


def accumulate_chunk(chunk: MapChunk, box_v2: BoxEvaluator | None, box_v1: Callable[[int], BoxEvaluator],
                     mask: MaskEvaluator | None) -> None:
    """Add a chunk to box counters (V2, and V1 of each image's class; None: no boxes) and the mask histograms."""
    for i, score_map in enumerate(chunk.maps):
        correct = None if chunk.class_correct is None else bool(chunk.class_correct[i])
        if box_v2 is not None:
            gt = chunk.boxes[i]
            v1, v2 = level_candidates_v1_v2(score_map) if len(gt) else (None, None)  # no box: counted as skipped
            box_v2.accumulate_candidates(v2, gt, correct)
            box_v1(int(chunk.labels[i])).accumulate_candidates(v1, gt, correct)
        obj = None if chunk.masks is None else chunk.masks[i]
        if mask is not None and obj is not None:
            ign = None if chunk.ignore is None else chunk.ignore[i]
            mask.accumulate(score_map[None], obj[None], None if ign is None else ign[None])


@dataclass
class ChunkCounts:
    """What a worker counted for one chunk: V2 and per-class V1 box counters, mask histograms, map shapes."""

    box_v2: np.ndarray | None
    box_v1: dict[int, np.ndarray]
    mask: np.ndarray | None
    shapes: Counter


def score_job(job: Job, thresholds: np.ndarray, iou_thresholds: np.ndarray, with_boxes: bool,
              with_masks: bool) -> ChunkCounts:
    """Score one job into fresh counters (what a worker process runs)."""
    chunk = job.materialize()
    v2 = BoxEvaluator(thresholds, iou_thresholds, multi_contour=True) if with_boxes else None
    v1: dict[int, BoxEvaluator] = {}

    def v1_of(label: int) -> BoxEvaluator:
        if label not in v1:
            v1[label] = BoxEvaluator(thresholds, iou_thresholds, multi_contour=False)
        return v1[label]

    mask = MaskEvaluator(thresholds=thresholds) if with_masks else None
    accumulate_chunk(chunk, v2, v1_of, mask)
    return ChunkCounts(None if v2 is None else v2.counters, {k: ev.counters for k, ev in v1.items()},
                       None if mask is None else mask.counters, chunk.shapes)


def fold_counts(counters: "EvalCounters", part: ChunkCounts) -> None:
    """Add a worker's counts into an evaluation's counters."""
    if part.box_v2 is not None:
        counters.box_v2.load_counters(counters.box_v2.counters + part.box_v2)
    for label, values in part.box_v1.items():
        ev = counters.box_v1[label]
        ev.load_counters(ev.counters + values)
    if part.mask is not None and counters.mask is not None:
        counters.mask.load_counters(counters.mask.counters + part.mask)


def _init_worker() -> None:
    """Make a worker process single-threaded and leave Ctrl-C to the main process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(1)


def _context() -> multiprocessing.context.BaseContext:
    """Return 'fork' where the platform has it (workers start in milliseconds), else 'spawn'."""
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else "spawn")


class MapScorer:
    """Scores jobs into evaluation counters: in this process (``processes`` <= 1) or in a worker pool.

    ``submit`` returns at once with a pool (at most ``4 * processes`` jobs in flight); ``drain`` waits for
    every job and folds the counts in submission order, so the first failing job (in order) raises.
    """

    def __init__(self, processes: int = 1) -> None:
        self.processes = max(1, int(processes))
        self.shapes: Counter = Counter()  # map shapes seen ("HxW" -> count)
        self._pending: deque[tuple["EvalCounters", Future[ChunkCounts]]] = deque()
        self._pool: ProcessPoolExecutor | None = None
        if self.processes > 1:
            self._pool = ProcessPoolExecutor(self.processes, mp_context=_context(), initializer=_init_worker)
            for f in [self._pool.submit(int) for _ in range(self.processes)]:  # start every worker now
                f.result()

    def submit(self, counters: "EvalCounters", job: Job) -> None:
        """Score a job into ``counters`` (now, or later in a worker: call :meth:`drain` before reading them)."""
        if self._pool is None:
            chunk = job.materialize()
            accumulate_chunk(chunk, counters.box_v2 if counters.with_boxes else None,
                             counters.box_v1.__getitem__, counters.mask)
            self.shapes.update(chunk.shapes)
            return
        while len(self._pending) >= 4 * self.processes:
            self._fold_oldest()
        future = self._pool.submit(score_job, job, counters.thresholds, counters.box_v2.iou_thresholds,
                                   counters.with_boxes, counters.mask is not None)
        self._pending.append((counters, future))

    def _fold_oldest(self) -> None:
        """Wait for the oldest job and add its counts."""
        counters, future = self._pending.popleft()
        part = future.result()
        fold_counts(counters, part)
        self.shapes.update(part.shapes)

    def drain(self) -> None:
        """Wait for every job in flight and add its counts."""
        while self._pending:
            self._fold_oldest()

    def close(self) -> None:
        """Stop the workers (jobs not yet folded are dropped)."""
        self._pending.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __enter__(self) -> MapScorer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def split_evenly(n: int, parts: int, most: int) -> list[slice]:
    """Return consecutive slices covering range(n): about ``parts`` of them, none longer than ``most``."""
    size = max(1, min(most, -(-n // max(1, parts))))
    return [slice(start, min(n, start + size)) for start in range(0, n, size)]
