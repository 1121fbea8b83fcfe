"""Training-step time of each speed option (--amp, --channels-last, --compile) vs the plain step, on CPU.

Usage: python bench/bench_speed_options.py [--method saol] [--backbone cifar_resnet20] [--img-size 64]
       [--batch 64] [--repeats 5] [--steps 5] [--threads 2] [--no-compile]

One process builds the model once per option (same seed, so the same weights) and times full training
steps (CutMix-ed forward of the method's objective, backward, AdamW step) on one fixed batch of the
embedded digits. The options are interleaved: every repeat times ``--steps`` steps of each option in
turn, so slow drifts of a shared machine hit all of them alike. Warm-up steps (and torch.compile's
compilation) are not timed. Prints the median and fastest step time of each option and their ratios to
the plain step's (ratio < 1: faster); on a shared, loaded machine the fastest repeat is the steadier figure. CPU only; bench/gpu_check.py measures the CUDA paths. Never used by the tests.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any, Callable

import numpy as np
import torch

from saolctl.data import make_loader, open_dataset
from saolctl.engine.recipes import DIGITS
from saolctl.engine.device import autocast_factory, compile_model
from saolctl.engine.optim import make_optimizer
from saolctl.models import build_model, create_objective, make_config

OPTIONS: dict[str, dict[str, bool]] = {
    "plain": {},
    "amp (bf16)": {"amp": True},
    "channels-last": {"channels_last": True},
    "amp + channels-last": {"amp": True, "channels_last": True},
    "compile": {"compile": True},
}


def make_step(method: str, backbone: str, images: torch.Tensor, labels: torch.Tensor, seed: int,
              amp: bool = False, channels_last: bool = False, compile: bool = False) -> Callable[[], None]:
    """Return a function that runs one training step with the given options (model built here, seeded)."""
    device = torch.device("cpu")
    torch.manual_seed(seed)
    cfg = make_config(backbone, method, 10)
    net = build_model(cfg, pretrained=False, init=None).train()
    x = images
    if channels_last:
        net = net.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        x = images.contiguous(memory_format=torch.channels_last)
    model = compile_model(net, device) if compile else net
    objective = create_objective(cfg)
    optimizer = make_optimizer(DIGITS, net)
    autocast = autocast_factory(device, amp)
    rng = np.random.default_rng(seed)

    def step() -> None:
        with autocast():
            terms = objective(model, x, labels, rng)
        optimizer.zero_grad(set_to_none=True)
        terms.total.backward()
        optimizer.step()

    return step


def main() -> None:
    """Time every option and print the table."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--method", default="saol")
    p.add_argument("--backbone", default=DIGITS.backbone)
    p.add_argument("--img-size", type=int, default=DIGITS.img_size)
    p.add_argument("--batch", type=int, default=DIGITS.batch_size)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-compile", action="store_true", help="Skip torch.compile (it takes minutes on CPU).")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    ds = open_dataset("digits", "train", train=True, img_size=args.img_size, seed=args.seed)
    batch = next(iter(make_loader(ds, args.batch, shuffle=True, workers=0, seed=args.seed)))
    options = {k: v for k, v in OPTIONS.items() if not (args.no_compile and v.get("compile"))}
    steps: dict[str, Callable[[], None]] = {}
    for name, opts in options.items():
        t0 = time.perf_counter()
        steps[name] = make_step(args.method, args.backbone, batch.images, batch.labels, args.seed, **opts)
        for _ in range(args.warmup):
            steps[name]()
        print(f"{name}: built and warmed up in {time.perf_counter() - t0:.1f} s", flush=True)

    times: dict[str, list[float]] = {name: [] for name in steps}
    for r in range(args.repeats):
        for name, step in steps.items():
            t0 = time.perf_counter()
            for _ in range(args.steps):
                step()
            times[name].append((time.perf_counter() - t0) / args.steps)
        print(f"repeat {r + 1}/{args.repeats} done", flush=True)

    base, base_min = statistics.median(times["plain"]), min(times["plain"])
    info: dict[str, Any] = {"torch": torch.__version__, "threads": torch.get_num_threads(), "method": args.method,
                            "backbone": args.backbone, "img_size": args.img_size, "batch": args.batch}
    print("\n" + ", ".join(f"{k}={v}" for k, v in info.items()))
    print(f"{'option':<22} {'median ms/step':>15} {'min':>8} {'max':>8} {'ratio (median)':>15} {'ratio (min)':>12}")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name:<22} {1000 * med:>15.1f} {1000 * min(ts):>8.1f} {1000 * max(ts):>8.1f} {med / base:>15.2f} "
              f"{min(ts) / base_min:>12.2f}")


if __name__ == "__main__":
    main()
