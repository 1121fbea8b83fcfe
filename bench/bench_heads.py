"""Cost of each method vs CAM: params, FLOPs, and inference / training-step time ratios side by side.

Usage: python bench/bench_heads.py [--backbones resnet18,resnet50,efficientnet_lite0] [--classes 1000]
       [--batch 8] [--size 224] [--repeats 5] [--threads 2] [--methods cam,cutmix,...]

Every registered method (or those named) with its own default options (or, with ``--recipe``, that recipe's
options for it), i.e. its own objective: CutMix only where the method trains with it (cutmix, saol), HaS's
hiding, ACoL's second branch, and so on; where the recipe turns SAOL's L_ss2 off, SAOL also with it on. Inference is a forward pass plus the method's default map. Timings are interleaved (cam, cutmix,
..., cam, ...) in one process and reported as ratios of medians to CAM, so machine noise affects every
method alike. Never used by the tests.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from saolctl.engine.recipes import DIGITS, PHOTOS
from saolctl.localization.maps import default_map_kind, forward_options, score_maps
from saolctl.methods import list_methods
from saolctl.models import create_model, create_objective


def count_params(module: torch.nn.Module) -> int:
    """Return the number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def forward_flops(model: torch.nn.Module, x: torch.Tensor) -> int:
    """Return FLOPs (2 x MACs) of one inference forward pass."""
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops()


def time_it(fn: Callable[[], None]) -> float:
    """Return the wall time of one call in seconds."""
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    """Measure and print the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbones", default="resnet18,resnet50,efficientnet_lite0")
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-timing", action="store_true")
    ap.add_argument("--methods", default=None, help="comma-separated (default: every registered method)")
    ap.add_argument("--recipe", choices=("none", "digits", "photos"), default="none",
                    help="each method with that recipe's options for it (default: the methods' own defaults)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch, 3, args.size, args.size, generator=g)
    labels = torch.randint(0, args.classes, (args.batch,), generator=g)
    print(f"# methods vs CAM ({args.recipe} options) at {args.size} px, K={args.classes}, batch {args.batch}, {args.threads} threads, "
          f"torch {torch.__version__}")
    print("| backbone | method | head params | total params | GFLOPs (fwd, per image) | FLOPs vs cam "
          "| inference (fwd + map) / cam | train step / cam |")
    print("|---|---|---|---|---|---|---|---|")
    for name in args.backbones.split(","):
        torch.manual_seed(0)
        methods = args.methods.split(",") if args.methods else list_methods()
        recipe = {"none": None, "digits": DIGITS, "photos": PHOTOS}[args.recipe]
        options = {m: recipe.options_for(m) if recipe else {} for m in methods}
        variants = {m: create_model(name, m, args.classes, **options.get(m, {}))
                    for m in ["cam", *(m for m in methods if m != "cam")]}
        if "saol" in variants and options["saol"].get("ss2_weight", 1.0) != 1.0:  # the recipes turn L_ss2 off
            variants["saol (with ss2)"] = create_model(name, "saol", args.classes, **{**options["saol"], "ss2_weight": 1.0})
        backbone_params = count_params(variants["cam"].backbone)
        flops = {k: forward_flops(m, x[:1]) for k, m in variants.items()}
        fwd: dict[str, list[float]] = {k: [] for k in variants}
        step: dict[str, list[float]] = {k: [] for k in variants}
        if not args.no_timing:
            optim = {k: torch.optim.SGD(m.parameters(), lr=1e-3) for k, m in variants.items()}
            objectives = {k: create_objective(m.config) for k, m in variants.items()}
            for r in range(args.repeats + 1):  # first round warms up and is dropped
                for k, m in variants.items():
                    m.eval()

                    def infer(m: torch.nn.Module = m) -> None:
                        with torch.no_grad():
                            kind = default_map_kind(m.config.method)
                            out = m(x, **forward_options(m.config.method, [kind]))
                            score_maps(m, out, labels, (args.size, args.size), kind, x)

                    t_f = time_it(infer)
                    m.train()
                    rng = np.random.default_rng(r)  # same CutMix draws for every method

                    def train_step(m: torch.nn.Module = m, k: str = k) -> None:
                        optim[k].zero_grad(set_to_none=True)
                        objectives[k](m, x, labels, rng).total.backward()
                        optim[k].step()

                    t_s = time_it(train_step)
                    if r > 0:
                        fwd[k].append(t_f)
                        step[k].append(t_s)
        for k, m in variants.items():
            head = count_params(m) - backbone_params
            head_desc = head  # ABN: includes the attention branch (a stride-1 copy of the last stage)
            f_ratio = flops[k] / flops["cam"]
            if args.no_timing:
                t_fwd = t_step = "-"
            else:
                t_fwd = f"{statistics.median(fwd[k]) / statistics.median(fwd['cam']):.3f}"
                t_step = f"{statistics.median(step[k]) / statistics.median(step['cam']):.3f}"
            print(f"| {name} | {k} | {head_desc / 1e6:.3f} M | {count_params(m) / 1e6:.2f} M "
                  f"| {flops[k] / 1e9:.3f} | {f_ratio:.3f} | {t_fwd} | {t_step} |", flush=True)


if __name__ == "__main__":
    main()
