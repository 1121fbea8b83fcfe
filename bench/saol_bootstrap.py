"""Bootstrap 95% intervals, over test images, of each variant's difference to a base (issue 15).

Reads the checkpoints that bench/saol_study.py trained (STUDY/runs/<variant>/seed<k>/<method>/last.pt, the
one compare evaluates),
scores each run's default map on the test split once and caches its per-image records (best IoU at every
CAM threshold for MaxBoxAccV2, top-1 correctness) as test_records.npz next to the run. Each record is
checked against the run's compare.csv (the same MaxBoxAccV2 and top-1, to 1e-6). Then, for every variant,
the paired bootstrap of (variant - base) in MaxBoxAccV2 and top-1: the same image draw for both sides and
every seed, the statistic being the mean over seeds (saolctl.localization.bootstrap). Writes
STUDY/bootstrap.md and prints it.

    python bench/saol_bootstrap.py --study runs/study/cub20 --base recipe-cam --variants saol,recipe-saol
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from saolctl.data import make_loader
from saolctl.engine.eval_run import EvalSettings, load_run, open_eval_dataset
from saolctl.localization.bootstrap import box_hits, max_box_acc, paired_bootstrap, top1
from saolctl.localization.evaluators import default_thresholds, image_box_scores
from saolctl.localization.maps import forward_options, score_maps


def test_records(run_dir: Path, threads: int) -> tuple[np.ndarray, np.ndarray]:
    """Return (best IoU (N, T) float32, top-1 correct (N,) bool) of a run's default map on test, cached."""
    cache = run_dir / "test_records.npz"
    table = pd.read_csv(run_dir / "compare.csv")
    row = table[table["default_map"]].iloc[0]
    if not cache.exists():
        torch.set_num_threads(threads)
        method, kind = str(row["method"]), str(row["map"])
        ckpt = run_dir / method / "last.pt"  # what compare evaluates (its default, wsolevaluation's)
        run = load_run(ckpt, torch.device("cpu"))
        ds, _ = open_eval_dataset(run, EvalSettings(ckpt=ckpt, split="test"))
        thresholds = default_thresholds()
        best, correct = [], []
        with torch.no_grad():
            for batch in make_loader(ds, 64, shuffle=False, workers=0, seed=0):
                out = run.model(batch.images, **forward_options(method, [kind]))
                maps = score_maps(run.model, out, batch.labels, tuple(batch.images.shape[-2:]), kind, batch.images)
                correct.append((out.logits.argmax(1) == batch.labels).numpy())
                best += [image_box_scores(m, b.numpy(), thresholds, multi_contour=True)[0]
                         for m, b in zip(maps.float().numpy(), batch.boxes)]
        np.savez_compressed(cache, best_iou=np.stack(best).astype(np.float32), correct=np.concatenate(correct))
    data = np.load(cache)
    best, correct = data["best_iou"], data["correct"]
    ones = np.ones((1, len(correct)))
    v2, t1 = max_box_acc(box_hits(best), ones)[0], top1(correct, ones)[0]
    if abs(v2 - row["max_box_acc_v2"]) > 1e-6 or abs(t1 - row["top1"]) > 1e-6:
        raise SystemExit(f"{run_dir}: records give V2 {v2:.4f} / top-1 {t1:.4f}, compare.csv "
                         f"{row['max_box_acc_v2']:.4f} / {row['top1']:.4f}")
    return best, correct


def main() -> None:
    """Compute and print the intervals."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--study", type=Path, required=True)
    p.add_argument("--base", default="recipe-cam")
    p.add_argument("--variants", required=True)
    p.add_argument("--seeds", default=None, help="e.g. 0,1 (default: every seed the base has; paired seed by seed)")
    p.add_argument("--draws", type=int, default=2000)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    if args.seeds is None:
        seeds = sorted(int(d.name.removeprefix("seed")) for d in (args.study / "runs" / args.base).glob("seed*"))
    else:
        seeds = [int(s) for s in args.seeds.split(",")]

    def records(variant: str) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        dirs = {s: args.study / "runs" / variant / f"seed{s}" for s in seeds}
        return {s: test_records(d, args.threads) for s, d in dirs.items() if (d / "compare.csv").exists()}

    base = records(args.base)
    base_hits = {s: box_hits(b) for s, (b, _) in base.items()}  # shared by every variant's comparison
    lines = [f"Paired bootstrap over test images ({args.draws} draws), variant - {args.base}, mean over seeds; "
             "95% percentile interval in brackets.", "",
             "| variant | seeds | Δ MaxBoxAccV2 | Δ top-1 |", "|---|---|---|---|"]
    for variant in args.variants.split(","):
        mine = records(variant)
        common = sorted(set(mine) & set(base))  # pair seed k with seed k
        if not common:
            lines.append(f"| {variant} | 0 | – | – |")
            continue
        v2 = paired_bootstrap(max_box_acc, [base_hits[s] for s in common], [box_hits(mine[s][0]) for s in common],
                              draws=args.draws, seed=0)
        t1 = paired_bootstrap(top1, [base[s][1] for s in common], [mine[s][1] for s in common], draws=args.draws,
                              seed=0)
        lines.append(f"| {variant} | {len(common)} | {v2} | {t1} |")
    text = "\n".join(lines) + "\n"
    (args.study / "bootstrap.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
