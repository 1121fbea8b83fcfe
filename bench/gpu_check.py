"""Check the CUDA paths of the speed options on a GPU, and time them; exits cleanly without CUDA.

Usage: python bench/gpu_check.py [--quick] [--batch 32] [--steps 10] [--out runs/gpu_check]

1. Short training runs of the embedded digits (SAOL, 1 epoch, 2,000 images) through `saolctl.engine.train`
   with each option: plain, --amp (float16 autocast + GradScaler), --channels-last, --compile, and all three;
   each must finish with a finite loss; the AMP run's checkpoint must hold a live GradScaler state.
2. ResNet-50 at 224 px (the photos recipe's backbone, SAOL head, K = 200), full training steps (forward,
   backward with the scaler under AMP, SGD step): median ms/step and images/s of each option.
Prints both tables with the device name, torch and CUDA versions. Exit code 1 when any check failed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from saolctl.data import DigitsConfig
from saolctl.engine.recipes import PHOTOS
from saolctl.engine.device import autocast_factory, compile_model
from saolctl.engine.optim import make_optimizer
from saolctl.engine.train import TrainConfig, train
from saolctl.models import build_model, create_objective, make_config

VARIANTS: dict[str, dict[str, bool]] = {
    "plain": {},
    "amp (fp16 + scaler)": {"amp": True},
    "channels-last": {"channels_last": True},
    "compile": {"compile": True},
    "amp + channels-last + compile": {"amp": True, "channels_last": True, "compile": True},
}


def digits_run(name: str, opts: dict[str, bool], out: Path) -> dict[str, Any]:
    """Train SAOL for one short digits epoch on cuda with the options; return the table row."""
    digits = DigitsConfig(train_size=2000, val_size=500, test_size=500)
    t0 = time.perf_counter()
    result = train(TrainConfig(method="saol", out=out, epochs=1, device="cuda", digits=digits, **opts))
    wall = time.perf_counter() - t0
    loss = float(result.metrics["loss_total"])
    if not np.isfinite(loss):
        raise RuntimeError(f"loss is {loss}")
    if opts.get("amp"):
        scaler = torch.load(result.last, weights_only=True)["scaler"]
        if not scaler or "scale" not in scaler:
            raise RuntimeError(f"AMP on CUDA saved no GradScaler state: {scaler!r}")
    return {"option": name, "wall_s": wall, "train_img_s": float(result.metrics["train_images_per_s"]),
            "loss": loss, "val_top1": float(result.metrics["val_top1"])}


def resnet50_timing(name: str, opts: dict[str, bool], batch: int, steps: int, warmup: int) -> dict[str, Any]:
    """Time full training steps of SAOL on ResNet-50 at 224 px with the options; return the table row."""
    device = torch.device("cuda")
    torch.manual_seed(0)
    cfg = make_config("resnet50", "saol", 200, **PHOTOS.options_for("saol"))
    net = build_model(cfg, pretrained=False, init=None).to(device).train()
    x = torch.randn(batch, 3, 224, 224, device=device)
    y = torch.randint(0, 200, (batch,), device=device)
    if opts.get("channels_last"):
        net = net.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        x = x.contiguous(memory_format=torch.channels_last)
    model = compile_model(net, device) if opts.get("compile") else net
    objective = create_objective(cfg)
    optimizer = make_optimizer(PHOTOS, net)
    scaler = torch.amp.GradScaler("cuda", enabled=bool(opts.get("amp")))
    autocast = autocast_factory(device, bool(opts.get("amp")))
    rng = np.random.default_rng(0)

    def step() -> None:
        with autocast():
            terms = objective(model, x, y, rng)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(terms.total).backward()
        scaler.step(optimizer)
        scaler.update()

    t0 = time.perf_counter()
    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    warm_s = time.perf_counter() - t0
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    return {"option": name, "warmup_s": warm_s, "ms_step": 1000 * med, "img_s": batch / med,
            "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30}


def print_table(title: str, rows: list[dict[str, Any]]) -> None:
    """Print rows (dicts with the same keys) as a plain text table."""
    print(f"\n{title}")
    if not rows:
        return
    keys = list(rows[0])
    cells = [[f"{r[k]:.2f}" if isinstance(r[k], float) else str(r[k]) for k in keys] for r in rows]
    widths = [max(len(k), *(len(c[i]) for c in cells)) for i, k in enumerate(keys)]
    print("  ".join(k.ljust(w) for k, w in zip(keys, widths)))
    for c in cells:
        print("  ".join(v.ljust(w) for v, w in zip(c, widths)))


def main() -> int:
    """Run the checks; return the exit code."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="Skip the digits runs; time ResNet-50 only.")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--out", type=Path, default=None, help="Folder for the digits runs (default: a temporary one).")
    args = p.parse_args()
    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device here, nothing to check (run it on a machine with a GPU).")
        return 0
    props = torch.cuda.get_device_properties(0)
    print(f"device: {props.name} ({props.total_memory / 2**30:.0f} GiB), torch {torch.__version__}, "
          f"CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}")
    failures: list[str] = []
    digits_rows: list[dict[str, Any]] = []
    timing_rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = args.out or Path(tmp)
        for i, (name, opts) in enumerate(VARIANTS.items()):
            if args.quick:
                break
            try:
                digits_rows.append(digits_run(name, opts, root / f"digits-{i}"))
            except Exception as exc:  # report and go on with the other checks
                failures.append(f"digits {name}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
            torch._dynamo.reset()
        for name, opts in VARIANTS.items():
            try:
                timing_rows.append(resnet50_timing(name, opts, args.batch, args.steps, args.warmup))
            except Exception as exc:
                failures.append(f"resnet50 {name}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
            torch._dynamo.reset()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
    print_table(f"digits, SAOL / cifar_resnet20, 1 epoch of 2,000 images at 64 px, on {props.name}", digits_rows)
    print_table(f"ResNet-50 SAOL (last stride 1) 224 px, batch {args.batch}, training step, on {props.name}",
                timing_rows)
    for f in failures:
        print(f"FAILED {f}")
    print("all checks passed" if not failures else f"{len(failures)} check(s) failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
