"""Speed of the evaluation's contour work in 1 process against N worker processes, side by side.

Usage (from the repo root)::

    .venv/bin/python bench/bench_eval_workers.py [--smooth 300] [--noisy 30] [--workers 2] [--repeat 3]

Two paths are timed, each with 1 process and with ``--workers`` processes, alternating, ``--repeat`` times
(the best time of each is reported):

- ``eval --maps``: a WSOL-metadata root (sizes file, no images) and a folder of ``<image_id>.npy`` maps
  scored by ``run_maps_eval`` (maps read, checked and scored in the workers; outputs and the curves figure
  written), and its scoring stage alone (the ``MapFileChunk`` jobs it submits);
- maps in hand, as ``eval --ckpt`` hands them over: ``MapScorer.submit`` of ``MapChunk`` batches of 64
  (the maps travel to the workers), V1 + V2 + per-class counters, then ``drain``.

Maps: 224 x 224 CAM-like maps (bench_evaluators.py's smooth and noisy generators), 1-2 GT boxes each,
10 classes. The script checks that every worker count gives identical numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_evaluators import gt_boxes_for, noisy_maps, smooth_maps  # noqa: E402

from saolctl.engine.evaluate import EvalCounters, summarize  # noqa: E402
from saolctl.data.maps_dir import open_map_folder  # noqa: E402
from saolctl.data.split_targets import open_split_targets  # noqa: E402
from saolctl.engine.map_scoring import MapChunk, MapFileChunk, MapScorer, split_evenly  # noqa: E402
from saolctl.engine.maps_eval import CHUNK, MapsEvalSettings, run_maps_eval  # noqa: E402


def write_root(root: Path, maps_dir: Path, maps: np.ndarray, boxes: list[np.ndarray], labels: np.ndarray) -> None:
    """Write a WSOL-metadata root (ids, labels, sizes, boxes; no images) and one .npy per image."""
    meta = root / "metadata" / "test"
    meta.mkdir(parents=True)
    ids = [f"bench/{i:05d}.jpg" for i in range(len(maps))]
    (maps_dir / "bench").mkdir(parents=True)
    for image_id, m in zip(ids, maps):
        np.save(maps_dir / f"{image_id}.npy", m)
    size = maps.shape[1]
    files = {
        "image_ids.txt": ids,
        "class_labels.txt": [f"{i},{k}" for i, k in zip(ids, labels)],
        "image_sizes.txt": [f"{i},{size},{size}" for i in ids],
        "localization.txt": [f"{i},{','.join(str(int(v)) for v in b)}" for i, bs in zip(ids, boxes) for b in bs],
    }
    for name, lines in files.items():
        (meta / name).write_text("\n".join(lines) + "\n")


def time_maps_eval(root: Path, maps_dir: Path, out: Path, workers: int) -> tuple[float, str]:
    """Return the seconds of one `eval --maps` run and its eval.json text (meta dropped)."""
    start = time.perf_counter()
    report, _, _ = run_maps_eval(MapsEvalSettings(maps=maps_dir, data=str(root), split="test", workers=workers), out)
    seconds = time.perf_counter() - start
    return seconds, json.dumps(report.metrics, sort_keys=True)


def time_file_jobs(root: Path, maps_dir: Path, workers: int) -> tuple[float, str]:
    """Return the seconds of `eval --maps`' scoring stage alone (the jobs it submits: read, check, score)."""
    targets = open_split_targets(str(root), "test")
    folder = open_map_folder(maps_dir, targets.ids)
    start = time.perf_counter()
    counters = EvalCounters(10, np.arange(0, 1, 0.001), True, False)
    with MapScorer(workers) as scorer:
        for part in split_evenly(len(targets), 8 * scorer.processes, CHUNK):
            scorer.submit(counters, MapFileChunk(folder.refs[part], targets.images[part], None))
        scorer.drain()
    seconds = time.perf_counter() - start
    return seconds, json.dumps(summarize(counters, [str(k) for k in range(10)]).metrics, sort_keys=True)


def time_in_hand(maps: np.ndarray, boxes: list[np.ndarray], labels: np.ndarray, workers: int) -> tuple[float, str]:
    """Return the seconds to score maps handed over in batches of 64 (the `eval --ckpt` path) and the metrics."""
    start = time.perf_counter()
    counters = EvalCounters(10, np.arange(0, 1, 0.001), True, False)
    counters.num_images = len(maps)
    correct = labels % 3 > 0
    with MapScorer(workers) as scorer:
        for b in range(0, len(maps), 64):
            batch = slice(b, min(len(maps), b + 64))
            for part in split_evenly(batch.stop - batch.start, scorer.processes, 64):
                s = slice(batch.start + part.start, batch.start + part.stop)
                scorer.submit(counters, MapChunk(maps[s], boxes[s], labels[s], correct[s]))
        scorer.drain()
    seconds = time.perf_counter() - start
    return seconds, json.dumps(summarize(counters, [str(k) for k in range(10)]).metrics, sort_keys=True)


def main() -> None:
    """Time both paths with 1 and N processes and print a table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smooth", type=int, default=300)
    parser.add_argument("--noisy", type=int, default=30)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    maps = np.concatenate([smooth_maps(args.smooth, 224), noisy_maps(args.noisy, 224)])
    order = np.random.default_rng(3).permutation(len(maps))  # noisy maps spread over the run
    maps = maps[order]
    boxes = gt_boxes_for(maps)
    labels = np.arange(len(maps)) % 10
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"{len(maps)} maps 224x224 ({args.smooth} smooth, {args.noisy} noisy); {platform.processor() or platform.machine()}, "
          f"{cores} cores available, Python {platform.python_version()}, numpy {np.__version__}")
    with tempfile.TemporaryDirectory() as tmp:
        root, maps_dir = Path(tmp) / "root", Path(tmp) / "maps"
        write_root(root, maps_dir, maps, boxes, labels)
        PATHS = (("eval --maps (whole command)", lambda w: time_maps_eval(root, maps_dir, Path(tmp) / f"o{w}", w)),
                 ("eval --maps (scoring stage)", lambda w: time_file_jobs(root, maps_dir, w)),
                 ("maps in hand (--ckpt's scoring)", lambda w: time_in_hand(maps, boxes, labels, w)))
        times: dict[tuple[str, int], list[float]] = {}
        results: dict[tuple[str, int], set[str]] = {}
        for _ in range(args.repeat):
            for workers in (1, args.workers):
                for path, run in PATHS:
                    seconds, metrics = run(workers)
                    times.setdefault((path, workers), []).append(seconds)
                    results.setdefault((path, workers), set()).add(metrics)
    print(f"\n| path | 1 process (s) | {args.workers} processes (s) | speed-up | ms/map (1 / {args.workers}) | identical |")
    print("|---|---:|---:|---:|---:|---|")
    for path, _ in PATHS:
        one, many = min(times[path, 1]), min(times[path, args.workers])
        same = len(results[path, 1] | results[path, args.workers]) == 1
        print(f"| {path} | {one:.2f} | {many:.2f} | {one / many:.2f}x | "
              f"{1000 * one / len(maps):.1f} / {1000 * many / len(maps):.1f} | {'yes' if same else 'NO'} |")


if __name__ == "__main__":
    main()
