"""Images/s of the eval data pipeline (decode + warp + boxes/masks + collate) and digits generation time.

    .venv/bin/python bench/bench_data.py [--shared ../shared] [--img-size 224] [--seconds 3]

For raccoon_kangaroo (ImageFolder + VOC boxes; train + val, 120 files, one truncated) and pets3
(WSOL metadata with masks; val + test, 60 files) it times whole passes over both splits with
DataLoader workers = 0 and = 2, after one warm-up pass (workers are persistent, so their start-up
is not counted), and prints images/s and the ratio. These sets are tiny (30 to 80 images a split,
one to three batches), so each pass lists every image ``--repeat`` times (a sampler) to measure the
steady state rather than the first batch of an epoch. Then it times generating the default digits
splits in memory (the first call includes importing scikit-learn's loader).
"""

from __future__ import annotations

import argparse
import os
import time
import warnings
from pathlib import Path

import torch

from saolctl.data import DigitsConfig, generate_split, make_loader, open_dataset

REPO = Path(__file__).resolve().parents[1]


def pass_images(loaders: list) -> int:  # type: ignore[type-arg]
    """Run one pass over every loader and return the number of images delivered."""
    return sum(len(batch) for loader in loaders for batch in loader)


def throughput(root: Path, splits: tuple[str, ...], workers: int, img_size: int, seconds: float, repeat: int) -> float:
    """Return images/s of the eval pipeline over the given splits, each pass listing every image `repeat` times."""
    datasets = [open_dataset(root, s, train=False, img_size=img_size) for s in splits]
    loaders = [
        make_loader(ds, 32, shuffle=False, workers=workers, seed=0, sampler=list(range(len(ds))) * repeat)
        for ds in datasets
    ]
    pass_images(loaders)  # warm-up: worker start, file cache
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        n += pass_images(loaders)
    return n / (time.perf_counter() - start)


def main() -> None:
    """Print the data pipeline figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared")
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--repeat", type=int, default=10, help="list each image this many times per pass")
    args = parser.parse_args()
    warnings.simplefilter("ignore")  # the truncated JPEG is skipped on every pass
    torch.set_num_threads(1)
    print(f"cpus: {os.cpu_count()}, torch {torch.__version__}, img_size {args.img_size}")
    cases = [
        ("raccoon_kangaroo", ("train", "val")),
        ("pets3", ("val", "test")),
    ]
    print(f"{'dataset':<18} {'splits':<12} {'workers=0':>12} {'workers=2':>12} {'ratio':>7}")
    for name, splits in cases:
        root = args.shared / "data" / name
        rates = [throughput(root, splits, w, args.img_size, args.seconds, args.repeat) for w in (0, 2)]
        print(f"{name:<18} {'+'.join(splits):<12} {rates[0]:>10.0f}/s {rates[1]:>10.0f}/s {rates[1] / rates[0]:>6.2f}x")
    config = DigitsConfig()
    for label in ("first call", "second call"):
        start = time.perf_counter()
        sizes = [len(generate_split(s, config, seed=0).labels) for s in ("train", "val", "test")]
        print(f"digits generation ({label}): {sum(sizes)} images ({'/'.join(map(str, sizes))}) "
              f"at {config.image_size} px in {time.perf_counter() - start:.2f} s")
    ds = open_dataset("digits", "test", train=False, img_size=64)
    start = time.perf_counter()
    n = pass_images([make_loader(ds, 128, shuffle=False, workers=0, seed=0)])
    print(f"digits eval pipeline at 64 px, workers=0: {n / (time.perf_counter() - start):.0f} images/s")


if __name__ == "__main__":
    main()
