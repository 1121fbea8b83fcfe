"""saolctl's training loop vs a bare PyTorch loop: same model, data, batch and optimiser, side by side.

Usage: python bench/bench_train_loop.py [--method cam] [--rounds 3] [--threads 2]

Each round runs one epoch of a bare loop (DataLoader -> forward -> cross-entropy -> backward -> step) and one
epoch of `saolctl.engine.train` (its images/s counts the training epoch only, not validation), both on the
embedded digits train split with the digits recipe's model, batch and AdamW settings and CutMix off, so
both loops do the same arithmetic. Prints the ratio of medians (saolctl / bare). Never used by the tests.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from saolctl.data import make_loader, open_dataset
from saolctl.engine.recipes import DIGITS
from saolctl.engine.optim import make_optimizer
from saolctl.engine.train import TrainConfig, train
from saolctl.models import create_model


def bare_epoch(method: str, seed: int) -> float:
    """Run one epoch of a plain loop and return its images/s."""
    torch.manual_seed(seed)
    ds = open_dataset("digits", "train", train=True, img_size=DIGITS.img_size, seed=seed)
    loader = make_loader(ds, DIGITS.batch_size, shuffle=True, workers=0, seed=seed, drop_last=True)
    model = create_model(DIGITS.backbone, method, len(ds.class_names), cutmix_prob=0.0).train()
    optimizer = make_optimizer(DIGITS, model)
    seen, t0 = 0, time.perf_counter()
    for batch in loader:
        out = model(batch.images)
        loss = F.cross_entropy(out.logits, batch.labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        seen += len(batch.labels)
    return seen / (time.perf_counter() - t0)


def saolctl_epoch(method: str, seed: int, out: Path) -> float:
    """Run one epoch of saolctl's loop and return its training images/s."""
    cfg = TrainConfig(method=method, out=out, epochs=1, seed=seed, device="cpu", model_options={"cutmix_prob": 0.0})
    return float(train(cfg).history["train_images_per_s"].iloc[0])


def main() -> None:
    """Measure and print."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--method", default="cam")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    bare, ours = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            bare.append(bare_epoch(args.method, r))
            ours.append(saolctl_epoch(args.method, r, Path(tmp) / f"run{r}"))
            print(f"round {r + 1}: bare {bare[-1]:.1f} img/s, saolctl {ours[-1]:.1f} img/s", flush=True)
    ratio = statistics.median(ours) / statistics.median(bare)
    print(f"{args.method} on digits ({DIGITS.backbone}, {DIGITS.img_size} px, batch {DIGITS.batch_size}, "
          f"{args.threads} threads): saolctl / bare = {ratio:.3f}")


if __name__ == "__main__":
    main()
