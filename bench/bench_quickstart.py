"""Wall time of the quickstart's main job: `saolctl compare --methods cam,abn,saol` on the embedded default.

Usage: python bench/bench_quickstart.py [--out runs/quickstart-bench] [--seed 0]

Runs the real console script in a subprocess (a new user's command, nothing warm), prints the wall time
against the 5-minute budget and the comparison table it wrote. Never used by the tests.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd


def main() -> None:
    """Run the quickstart command and report its wall time and numbers."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("runs/quickstart-bench"))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    shutil.rmtree(args.out, ignore_errors=True)
    exe = Path(sys.executable).with_name("saolctl")
    cmd = [str(exe), "compare", "--methods", "cam,abn,saol", "--out", str(args.out), "--seed", str(args.seed)]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    table = pd.read_csv(args.out / "compare.csv")
    cols = ["method", "map", "top1", "max_box_acc", "max_box_acc_v2", "gt_known_loc", "top1_loc", "pxap"]
    print(table[cols].to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    for method in ("cam", "abn", "saol"):
        m = pd.read_csv(args.out / method / "metrics.csv")
        print(f"{method}: {len(m)} epochs, {m['train_images_per_s'].median():.0f} train img/s (median epoch)")
    print(f"wall time: {wall:.1f} s ({wall / 60:.2f} min; budget 5 min) — {' '.join(cmd[1:])}")


if __name__ == "__main__":
    main()
