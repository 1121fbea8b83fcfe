"""Wall time of the quickstart's main job, `saolctl compare --methods cam,abn,saol` on the embedded default,
against a baseline revision run side by side on the same machine, with where the time goes.

Usage:
    python bench/bench_quickstart.py [--baseline 68403a9] [--rounds 1] [--out runs/quickstart-bench] [--seed 0]
        [--tree-args=--no-amp]  # '=' because the value starts with '--'

Each round runs the real command (`python -m saolctl compare ...` in a fresh subprocess, nothing warm) once
for the baseline revision (checked out with `git worktree` into a temporary folder and put first on
PYTHONPATH, same venv) and once for this tree, alternating, so that both see the same machine state. It
times the stage lines the command prints ("training cam", "evaluating cam on val", ...) as they arrive,
prints the per-stage table of both, the speed-up (baseline / this tree, per round and of the medians), and
this tree's comparison table. Never used by the tests.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
STAGES = ("training ", "evaluating ")


def run_once(tree: Path, out: Path, seed: int, extra: list[str]) -> tuple[float, list[tuple[str, float]]]:
    """Run the quickstart command of a source tree; return its wall time and (stage, seconds) pairs."""
    shutil.rmtree(out, ignore_errors=True)
    env = {**os.environ, "PYTHONPATH": str(tree), "COLUMNS": "200", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "saolctl", "compare", "--methods", "cam,abn,saol", "--out", str(out),
           "--seed", str(seed), *extra]
    marks: list[tuple[str, float]] = [("start-up (imports, data)", 0.0)]
    t0 = time.perf_counter()
    with subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          cwd=tree) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            text = line.strip()
            if text.startswith(STAGES):
                marks.append((text.split(" (")[0], time.perf_counter() - t0))
            elif text.startswith("compare —") or text.startswith("compare -"):
                marks.append(("figures, report, exit", time.perf_counter() - t0))
        if proc.wait() != 0:
            raise SystemExit(f"{' '.join(cmd)} failed in {tree}")
    wall = time.perf_counter() - t0
    stages = [(name, (marks[i + 1][1] if i + 1 < len(marks) else wall) - at) for i, (name, at) in enumerate(marks)]
    return wall, stages


def eval_seconds_per_map_kind(compare_out: Path) -> pd.DataFrame:
    """Time `eval` of each compared checkpoint on the test split, one map kind at a time (this tree, in-process)."""
    import json

    from saolctl.engine.eval_run import EvalSettings, run_eval

    saved = json.loads((compare_out / "compare.json").read_text())
    table = pd.read_csv(compare_out / "compare.csv")
    rows = []
    for method, ckpt in saved["checkpoints"].items():
        for kind in table.loc[table["method"] == method, "map"]:
            t0 = time.perf_counter()
            report, _, _ = run_eval(EvalSettings(ckpt=Path(ckpt), split="test", map_kind=kind, device="cpu"),
                                    out_dir=compare_out / "eval-per-kind" / f"{method}-{kind}")
            rows.append({"method": method, "map": kind, "seconds": time.perf_counter() - t0,
                         "images": report.metrics["num_images"]})
    return pd.DataFrame(rows)


def checkout(rev: str) -> Path:
    """Return a temporary worktree of a revision of this repository."""
    folder = Path(tempfile.mkdtemp(prefix=f"saolctl-{rev}-"))
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(folder), rev], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return folder


def main() -> None:
    """Run both trees side by side and print the stage table, the speed-up and the comparison table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", default="68403a9", help="git revision to compare against ('' for none)")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path("runs/quickstart-bench"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tree-args", default="", help="extra compare options for this tree only, e.g. --tree-args=--no-amp")
    args = ap.parse_args()
    trees = {"this tree": REPO}
    base_tree = checkout(args.baseline) if args.baseline else None
    if base_tree is not None:
        trees = {f"baseline {args.baseline}": base_tree, **trees}
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; python {platform.python_version()}")
    walls: dict[str, list[float]] = {name: [] for name in trees}
    tables: dict[str, pd.Series] = {}
    try:
        for r in range(args.rounds):
            for name, tree in trees.items():
                out = (args.out / name.replace(" ", "-")).resolve()
                extra = shlex.split(args.tree_args) if tree == REPO else []
                wall, stages = run_once(tree, out, args.seed, extra)
                walls[name].append(wall)
                tables[name] = pd.Series(dict(stages)).add(tables.get(name, 0.0), fill_value=0.0)
                print(f"round {r + 1}: {name}: {wall:.1f} s", flush=True)
    finally:
        if base_tree is not None:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(base_tree)], check=False)
    stage_table = pd.DataFrame({name: t / args.rounds for name, t in tables.items()}).fillna(0.0)
    print("\nseconds per stage (mean over rounds):")
    print(stage_table.to_string(float_format=lambda v: f"{v:.1f}"))
    medians = {name: float(pd.Series(w).median()) for name, w in walls.items()}
    for name, m in medians.items():
        print(f"{name}: median wall {m:.1f} s ({m / 60:.2f} min) over {args.rounds} round(s): {walls[name]}")
    if base_tree is not None:
        base = f"baseline {args.baseline}"
        ratios = [b / t for b, t in zip(walls[base], walls["this tree"])]
        print(f"speed-up (baseline / this tree): per round {[round(x, 2) for x in ratios]}, "
              f"of the medians {medians[base] / medians['this tree']:.2f}x")
    out = (args.out / "this-tree").resolve()
    table = pd.read_csv(out / "compare.csv")
    cols = ["method", "map", "top1", "max_box_acc", "max_box_acc_v2", "gt_known_loc", "top1_loc", "pxap"]
    print(table[cols].to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    for method in ("cam", "abn", "saol"):
        m = pd.read_csv(out / method / "metrics.csv")
        print(f"{method}: {len(m)} epochs, {m['train_images_per_s'].median():.0f} train img/s (median epoch)")
    print("\nevaluation of the test split one map kind at a time (this tree; compare shares one forward pass "
          "among a method's kinds, so its per-split times are less than these sums):")
    print(eval_seconds_per_map_kind(out).to_string(index=False, float_format=lambda v: f"{v:.1f}"))


if __name__ == "__main__":
    main()
