"""Budget curve (issue 15): each metric of each variant's default map against the training budget in epochs.

Every budget is its own study folder (bench/saol_study.py with --epochs E --out DIR): each run has its own
learning-rate schedule over its own budget, so the points are separate trainings, not snapshots of one.

    python bench/saol_budget.py --budget 2=runs/cub-e2 --budget 5=runs/cub-e5 --budget 10=runs/cub-e10 \
        --variants recipe-cam,recipe-saol --seed 0 --title "CUB, 20 classes" --out docs/img/saol-budget-cub.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

METRICS = [("top1", "top-1"), ("max_box_acc_v2", "MaxBoxAccV2"), ("pxap", "PxAP")]


def budget_table(budgets: dict[int, Path], variants: list[str], seed: int) -> pd.DataFrame:
    """Return one row per (variant, epochs): the default map's test metrics of that seed's run."""
    rows = []
    for epochs, study in sorted(budgets.items()):
        for variant in variants:
            path = study / "runs" / variant / f"seed{seed}" / "compare.csv"
            if not path.exists():
                continue
            table = pd.read_csv(path)
            row = table[table["default_map"]].iloc[0]
            rows.append({"variant": variant, "epochs": epochs, "map": row["map"],
                         **{k: float(row[k]) for k, _ in METRICS if k in row}})
    return pd.DataFrame(rows)


def plot(table: pd.DataFrame, title: str, out: Path) -> None:
    """Draw one panel per metric that has values, one line per variant, epochs on a log axis."""
    metrics = [(k, h) for k, h in METRICS if k in table and table[k].notna().any()]
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.6), squeeze=False)
    for ax, (key, label) in zip(axes[0], metrics):
        for variant, part in table.groupby("variant", sort=False):
            part = part.sort_values("epochs")
            name = f"{str(variant).removeprefix('recipe-')} ({part['map'].iloc[0]})"
            ax.plot(part["epochs"], part[key], marker="o", label=name)
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted(table["epochs"].unique()), [str(e) for e in sorted(table["epochs"].unique())])
        ax.set_xlabel("training epochs")
        ax.set_ylabel(f"{label} (test, %)")
        ax.set_title(label)
        ax.grid(alpha=0.3)
    axes[0][0].legend(loc="best", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main() -> None:
    """Collect the runs, print the table and draw the figure."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budget", action="append", required=True, help="EPOCHS=STUDY_DIR, once per budget")
    p.add_argument("--variants", default="recipe-cam,recipe-saol")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--title", default="")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    budgets = {int(e): Path(d) for e, d in (b.split("=", 1) for b in args.budget)}
    table = budget_table(budgets, args.variants.split(","), args.seed)
    if table.empty:
        raise SystemExit("no finished runs in the given study folders")
    plot(table, args.title, args.out)
    print(table.round(1).to_string(index=False))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
