"""Training-step time of each SAOL study variant as a ratio to CAM, in one process (issue 8).

The digits recipe's setting by default (cifar_resnet20, 64 px, batch 64, 10 classes). Variants run
interleaved, round after round, and the median step time of each is divided by CAM's median from the
same rounds, so slow drifts of a shared machine cancel out. Run it on a quiet machine.

    OMP_NUM_THREADS=2 python bench/bench_saol_variants.py --rounds 5
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from saol_study import VARIANTS  # noqa: E402

from saolctl.models import build_model, create_objective, make_config  # noqa: E402


def step_time(variant: str, args: argparse.Namespace, steps: int) -> float:
    """Return the median seconds of one training step (objective, backward, SGD update) of a variant."""
    method, options = VARIANTS[variant]
    torch.manual_seed(0)
    cfg = make_config(args.backbone, method, args.classes, **options)
    model = build_model(cfg).train()
    objective = create_objective(cfg)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    x = torch.randn(args.batch, 3, args.size, args.size)
    y = torch.randint(0, args.classes, (args.batch,))
    rng = np.random.default_rng(0)
    times = []
    for i in range(steps + 2):
        t0 = time.perf_counter()
        terms = objective(model, x, y, rng)
        opt.zero_grad(set_to_none=True)
        terms.total.backward()
        opt.step()
        if i >= 2:  # warm-up steps are not timed
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    """Print each variant's median step time and its ratio to CAM."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variants", default="cam,saol,ent0.1,attss,attss-ss2,grid16,k3,attcam")
    p.add_argument("--backbone", default="cifar_resnet20")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--csv", type=Path, default=None, help="also write variant,ratio rows here")
    args = p.parse_args()
    names = args.variants.split(",")
    if "cam" not in names:
        names.insert(0, "cam")
    ratios: dict[str, list[float]] = {n: [] for n in names}
    seconds: dict[str, list[float]] = {n: [] for n in names}
    for _ in range(args.rounds):
        round_times = {n: step_time(n, args, args.steps) for n in names}
        for n in names:
            seconds[n].append(round_times[n])
            ratios[n].append(round_times[n] / round_times["cam"])
    print(f"{args.backbone} {args.size}px batch {args.batch}, {torch.get_num_threads()} threads, {args.rounds} rounds")
    print(f"{'variant':>16} {'ms/step':>9} {'x CAM':>7}")
    for n in names:
        print(f"{n:>16} {1000 * statistics.median(seconds[n]):9.1f} {statistics.median(ratios[n]):7.2f}")
    if args.csv:
        rows = ["variant,step_time_ratio"] + [f"{n},{statistics.median(ratios[n]):.4f}" for n in names]
        args.csv.write_text("\n".join(rows) + "\n")


if __name__ == "__main__":
    main()
