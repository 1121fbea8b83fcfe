"""Figure of typical maps per SAOL variant (issue 8): the same test images, one column per variant.

Reads the seed's checkpoints that bench/saol_study.py trained (OUT/runs/<variant>/seed<k>/<method>/last.pt, the
one compare evaluates; --checkpoint best for best.pt)
and draws each variant's map (its default map, or --map-of VARIANT=KIND) with the box at the threshold
chosen on the validation split (from that run's compare.csv). It also prints, for each SAOL variant,
how spread its attention is on the drawn split: the mean effective number of cells exp(H(A)) and the
mean largest cell weight max A (a collapsed attention has about 1 cell and max A near 1).

    python bench/saol_study_maps.py --study runs/study/digits --variants cam,saol,ent0.3 --out docs/img/x.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from saolctl.data import collate_samples, denormalize, make_loader
from saolctl.engine.eval_run import EvalSettings, load_run, open_eval_dataset
from saolctl.localization.contours import largest_box
from saolctl.localization.maps import forward_options, score_maps
from saolctl.report.figures import save_grid


def main() -> None:
    """Draw the figure."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--study", type=Path, required=True)
    p.add_argument("--variants", required=True)
    p.add_argument("--map-of", action="append", default=[], help="VARIANT=KIND (default: the method's default map)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--images", type=int, default=6)
    p.add_argument("--split", default="test")
    p.add_argument("--checkpoint", default="last", choices=["last", "best"], help="which checkpoint of each run")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    kinds = dict(pair.split("=", 1) for pair in args.map_of)
    device = torch.device("cpu")
    columns: dict[str, list[np.ndarray]] = {}
    boxes: dict[str, list[np.ndarray]] = {}
    batch = ds = None
    spread: list[str] = []
    for variant in args.variants.split(","):
        run_dir = args.study / "runs" / variant / f"seed{args.seed}"
        table = pd.read_csv(run_dir / "compare.csv")
        method = str(table["method"].iloc[0])
        kind = kinds.get(variant) or str(table[table["default_map"]]["map"].iloc[0])
        row = table[table["map"] == kind].iloc[0]
        ckpt = run_dir / method / f"{args.checkpoint}.pt"
        run = load_run(ckpt, device)
        if batch is None:
            ds, _ = open_eval_dataset(run, EvalSettings(ckpt=ckpt, split=args.split))
            picks = np.linspace(0, len(ds) - 1, min(args.images, len(ds))).round().astype(int).tolist()
            batch = collate_samples([ds[i] for i in picks])
        with torch.no_grad():
            out = run.model(batch.images, **forward_options(method, [kind]))
            maps = score_maps(run.model, out, batch.labels, tuple(batch.images.shape[-2:]), kind).numpy()
        if method == "saol":
            loader = make_loader(ds, 128, shuffle=False, workers=0, seed=0)
            cells, peaks = [], []
            with torch.no_grad():
                for b in loader:
                    log_a = run.model(b.images).log_attention.flatten(1)  # (B, H*W)
                    cells.append((-(log_a.exp() * log_a).sum(1)).exp())
                    peaks.append(log_a.exp().max(1).values)
            grid = run.model(batch.images[:1]).log_attention.shape[-2:]
            spread.append(f"{variant:>16}  grid {grid[0]}x{grid[1]}  effective cells {float(torch.cat(cells).mean()):6.1f}"
                          f"  max A {float(torch.cat(peaks).mean()):.3f}")
        name = f"{variant} ({kind})" if method == "saol" else variant
        columns[name] = list(maps)
        tau = float(row["val_best_threshold"])
        boxes[name] = [largest_box(m, tau)[None] for m in maps]
    assert batch is not None and ds is not None
    images = list(denormalize(batch.images).permute(0, 2, 3, 1).numpy())
    titles = [ds.class_names[int(c)] for c in batch.labels]
    save_grid(args.out, images, columns, boxes, [b.numpy() for b in batch.boxes], titles)
    print("\n".join(spread))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
