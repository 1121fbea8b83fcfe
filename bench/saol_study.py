"""SAOL localization study (issue 8) and the methods table (issue 14): every variant x seed through `compare`.

Each (variant, seed) is one `run_compare` call with the variant's model options, so every number is
what `saolctl compare -O ...` reports (test split; thresholds and map choice on val). Each run leaves
OUT/runs/<variant>/seed<k>/study_rows.csv; a rerun skips what is done, and several processes may share
OUT. At the end: OUT/results.csv (all rows), OUT/summary.csv (mean and std over seeds) and
OUT/table.md (the ablation table).

    python bench/saol_study.py --data digits --seeds 0,1,2 --variants cam,saol,ent0.3
    python bench/saol_study.py --data ../shared/data/pets3 --backbone efficientnet_lite0 --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from saolctl.engine.compare_run import CompareSettings, run_compare
from saolctl.localization.maps import default_map_kind
from saolctl.methods import list_methods

# The paper's reading of SPEC 1.3 with none of our additions, and CutMix p = 0.5. Every variant states its
# options on top of this, so the study does not change when the recipes' defaults do.
PAPER: dict[str, Any] = {"cutmix_prob": 0.5, "ss1_weight": 1.0, "ss2_weight": 1.0, "att_entropy": 0.0,
                         "att_ss_weight": 0.0, "att_cam_weight": 0.0, "saol_grid": "last", "saol_att_kernel": 1}
_CHANGES: dict[str, tuple[str, dict[str, Any]]] = {
    "cam": ("cam", {}),
    "abn": ("abn", {}),
    "saol": ("saol", {}),
    "ent0.1": ("saol", {"att_entropy": 0.1}),
    "ent0.3": ("saol", {"att_entropy": 0.3}),
    "ent1.0": ("saol", {"att_entropy": 1.0}),
    "attss": ("saol", {"att_ss_weight": 1.0}),
    "grid16": ("saol", {"saol_grid": "penultimate"}),
    "k3": ("saol", {"saol_att_kernel": 3}),
    # a public re-implementation's reading (issue 15): 3x3 convs in the attention and the tap projections,
    # taps resized bilinearly; otherwise the paper's reading
    "reimpl": ("saol", {"saol_kernel": 3, "saol_att_kernel": 3, "saol_resize": "bilinear"}),
    "attcam": ("saol", {"att_cam_weight": 1.0}),
    "noss2": ("saol", {"ss2_weight": 0.0}),
    "attss-ss2": ("saol", {"att_ss_weight": 1.0, "ss2_weight": 0.0}),
    "cam-cm25": ("cam", {"cutmix_prob": 0.25}),
    "saol-cm25": ("saol", {"cutmix_prob": 0.25}),
    "attss-ss2-cm25": ("saol", {"att_ss_weight": 1.0, "ss2_weight": 0.0, "cutmix_prob": 0.25}),
}
# name -> (method, model options); CAM and ABN get only the CutMix option (they ignore SAOL's)
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    name: (method, {**PAPER, **change} if method == "saol" else {"cutmix_prob": PAPER["cutmix_prob"], **change})
    for name, (method, change) in _CHANGES.items()
}
# The recipe as shipped (its own model options, whatever they are when the study runs): what the quickstart
# and `saolctl compare` train today. Unlike the variants above, these change when the recipes do.
VARIANTS.update({f"recipe-{method}": (method, {}) for method in list_methods()})

METRICS = ["top1", "max_box_acc", "max_box_acc_v2", "top1_loc", "pxap", "val_top1", "val_max_box_acc_v2", "val_pxap",
           "train_images_per_s"]


def run_one(variant: str, seed: int, args: argparse.Namespace, out: Path) -> pd.DataFrame:
    """Train and compare one variant with one seed; return its rows (one per map kind)."""
    method, options = VARIANTS[variant]
    run_dir = out / "runs" / variant / f"seed{seed}"
    settings = CompareSettings(methods=(method,), data=args.data, out=run_dir, seed=seed, epochs=args.epochs,
                               backbone=args.backbone, device="cpu", grid_images=0, model_options=options)
    t0 = time.perf_counter()
    result = run_compare(settings)
    wall = time.perf_counter() - t0
    history = pd.read_csv(run_dir / method / "metrics.csv")
    rows = result.table.copy()
    rows.insert(0, "seed", seed)
    rows.insert(0, "variant", variant)
    rows["train_images_per_s"] = float(history["train_images_per_s"].mean())
    rows["wall_s"] = wall
    rows.to_csv(run_dir / "study_rows.csv", index=False)  # what `collect` reads: runs may go in parallel
    return rows


def collect(out: Path) -> pd.DataFrame:
    """Return every finished run's rows under OUT/runs (several study processes may share OUT)."""
    old = out / "results.csv"
    if old.exists():  # rows of runs recorded before study_rows.csv existed
        for (variant, seed), rows in pd.read_csv(old).groupby(["variant", "seed"]):
            path = out / "runs" / str(variant) / f"seed{seed}" / "study_rows.csv"
            if path.parent.is_dir() and not path.exists():
                rows.to_csv(path, index=False)
    parts = [pd.read_csv(f) for f in sorted((out / "runs").glob("*/seed*/study_rows.csv"))]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def summarize(results: pd.DataFrame) -> pd.DataFrame:
    """Return mean and std over seeds of every metric, per (variant, map)."""
    cols = [c for c in METRICS if c in results]
    g = results.groupby(["variant", "map"], sort=False)[cols]
    summary = g.mean().add_suffix("_mean").join(g.std(ddof=0).add_suffix("_std"))
    summary["seeds"] = g.size()
    return summary.reset_index()


def _pm(mean: float, std: float) -> str:
    return "–" if pd.isna(mean) else f"{mean:.1f} ± {std:.1f}"


def markdown(results: pd.DataFrame, step_ratios: dict[str, float] | None = None) -> str:
    """Return the ablation table: one row per variant, mean ± std over seeds (test split, percent).

    Columns: top-1; MaxBoxAccV2 of every map kind; PxAP of the default map where masks exist; the
    training-step time as a ratio to CAM's from bench/bench_saol_variants.py when given (the study's
    own throughput is not used: runs share the machine with whatever else runs).
    """
    s = summarize(results)
    kinds = [k for k in ("cam", "contrib", "attention", "spatial", "gapcam") if k in set(s["map"])]
    has_pxap = "pxap_mean" in s and s["pxap_mean"].notna().any()
    head = ["variant", "seeds", "top-1"] + [f"V2 {k}" for k in kinds] + (["PxAP (default map)"] if has_pxap else [])
    head += ["val-chosen map"] + (["step time / CAM"] if step_ratios else [])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for variant in sorted(set(s["variant"]), key=lambda v: list(VARIANTS).index(v) if v in VARIANTS else len(VARIANTS)):
        v = s[s["variant"] == variant].set_index("map")
        first = v.iloc[0]
        cells = [variant, str(int(first["seeds"])), _pm(first["top1_mean"], first["top1_std"])]
        for k in kinds:
            cells.append(_pm(v.loc[k, "max_box_acc_v2_mean"], v.loc[k, "max_box_acc_v2_std"]) if k in v.index else "")
        if has_pxap:
            cells.append(_pm(first["pxap_mean"], first["pxap_std"]))
        cells.append(str(v["val_max_box_acc_v2_mean"].idxmax()))
        if step_ratios:
            cells.append(f"{step_ratios[variant]:.2f}" if variant in step_ratios else "–")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def methods_markdown(results: pd.DataFrame) -> str:
    """Return the methods table: one row per variant scored on its method's default map, mean ± std over seeds.

    Columns: top-1, MaxBoxAcc (V1), MaxBoxAccV2, Top-1 Loc and, where masks exist, PxAP (test split, percent).
    """
    s = summarize(results)
    metrics = [("top1", "top-1"), ("max_box_acc", "MaxBoxAcc"), ("max_box_acc_v2", "MaxBoxAccV2"),
               ("top1_loc", "Top-1 Loc"), ("pxap", "PxAP")]
    metrics = [(k, h) for k, h in metrics if f"{k}_mean" in s and s[f"{k}_mean"].notna().any()]
    lines = ["| method | map | seeds | " + " | ".join(h for _, h in metrics) + " |", "|" + "---|" * (3 + len(metrics))]
    for variant in sorted(set(s["variant"]), key=lambda v: list(VARIANTS).index(v) if v in VARIANTS else len(VARIANTS)):
        method = VARIANTS[variant][0] if variant in VARIANTS else variant
        v = s[s["variant"] == variant].set_index("map")
        kind = default_map_kind(method)
        if kind not in v.index:
            continue
        row = v.loc[kind]
        cells = [variant.removeprefix("recipe-"), kind, str(int(row["seeds"]))]
        cells += [_pm(row[f"{k}_mean"], row[f"{k}_std"]) for k, _ in metrics]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    """Run the requested variants and seeds, then write the summary."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="digits")
    p.add_argument("--backbone", default=None)
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--variants", default="cam,saol,ent0.1,ent0.3,ent1.0,attss,grid16,k3,attcam")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--table-only", action="store_true", help="only rebuild results/summary/table from the run folders")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    name = "digits" if args.data == "digits" else Path(args.data).name
    out = args.out or Path("runs/study") / name
    out.mkdir(parents=True, exist_ok=True)
    csv = out / "results.csv"
    for seed in ([] if args.table_only else [int(s) for s in args.seeds.split(",")]):
        for variant in args.variants.split(","):
            if variant not in VARIANTS:
                raise SystemExit(f"unknown variant {variant!r}; valid: {', '.join(VARIANTS)}")
            if (out / "runs" / variant / f"seed{seed}" / "study_rows.csv").exists():
                continue
            rows = run_one(variant, seed, args, out)
            best = rows.sort_values("val_max_box_acc_v2", ascending=False).iloc[0]
            print(f"{variant:>16} seed {seed}: top1 {best['top1']:.1f}  " + "  ".join(
                f"{r['map']} {r['max_box_acc_v2']:.1f}" for _, r in rows.iterrows()) + f"  ({rows['wall_s'].iloc[0]:.0f} s)",
                flush=True)
    results = collect(out)
    results.to_csv(csv, index=False)
    summary = summarize(results)
    summary.to_csv(out / "summary.csv", index=False)
    ratios_csv = out / "step_ratios.csv"
    ratios = dict(pd.read_csv(ratios_csv).itertuples(index=False, name=None)) if ratios_csv.exists() else None
    (out / "table.md").write_text(markdown(results, ratios) + "\n")
    (out / "methods_table.md").write_text(methods_markdown(results) + "\n")
    with pd.option_context("display.width", 200, "display.max_columns", 30):
        print(summary[["variant", "map", "seeds", "top1_mean", "max_box_acc_v2_mean", "max_box_acc_v2_std",
                       "val_top1_mean", "val_max_box_acc_v2_mean"]].round(2).to_string(index=False))


if __name__ == "__main__":
    main()
