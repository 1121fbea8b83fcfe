"""Localize objects in images with a checkpoint: overlay PNGs plus one CSV/JSON row per image."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd
import torch

from saolctl.data import collate_samples, denormalize, load_eval_image
from saolctl.data.images import is_image_file, read_rgb
from saolctl.engine.eval_run import EvalSettings, LoadedRun, load_run, open_eval_dataset
from saolctl.engine.device import resolve_device
from saolctl.engine.validation import check_int, check_output_dir, check_unit_interval
from saolctl.errors import UserError
from saolctl.localization.contours import largest_box
from saolctl.localization.maps import default_map_kind, find_map_kind, forward_options, score_maps
from saolctl.report.figures import save_overlay



@dataclass(frozen=True)
class LocalizeSettings:
    """What to localize and how; ``None`` fields come from the checkpoint."""

    ckpt: Path
    inputs: tuple[Path, ...] = ()  # image files or folders; empty = a few images of the evaluation split
    threshold: float | None = None  # default: the checkpoint's best validation threshold
    target: str = "pred"  # "pred" or a class name / index
    map_kind: str | None = None
    num_samples: int = 8
    device: str = "auto"

    def __post_init__(self) -> None:
        """Check the ranges before anything is loaded or written."""
        check_unit_interval("--threshold", self.threshold, optional=True)
        check_int("--num", self.num_samples, 1)


def expand_inputs(inputs: tuple[Path, ...]) -> list[Path]:
    """Return the image files named, or found (sorted) in the folders named."""
    files: list[Path] = []
    for p in inputs:
        if p.is_dir():
            found = sorted(q for q in p.rglob("*") if q.is_file() and is_image_file(q))
            if not found:
                raise UserError(f"no images found in folder {p}")
            files.extend(found)
        elif p.is_file():
            files.append(p)
        else:
            raise UserError(f"image not found: {p}")
    return files


def box_to_original(box: np.ndarray, size: int, orig_wh: tuple[int, int]) -> list[int]:
    """Map an inclusive box in S x S pixels to the original image's pixels (covering the same area)."""
    w, h = orig_wh
    x0, y0, x1, y1 = (int(v) for v in box)
    return [
        int(math.floor(x0 * w / size)),
        int(math.floor(y0 * h / size)),
        min(int(math.ceil((x1 + 1) * w / size)) - 1, w - 1),
        min(int(math.ceil((y1 + 1) * h / size)) - 1, h - 1),
    ]


def resolve_target(target: str, class_names: list[str]) -> int | None:
    """Return the class index a --target names, or None for the predicted class."""
    if target == "pred":
        return None
    if target in class_names:
        return class_names.index(target)
    if target.lstrip("-").isdigit() and 0 <= int(target) < len(class_names):
        return int(target)
    raise UserError(f"--target must be 'pred', a class name or an index < {len(class_names)}; got {target!r}")


def _items(run: LoadedRun, settings: LocalizeSettings) -> Iterator[tuple[str, torch.Tensor, tuple[int, int], np.ndarray | None, np.ndarray, int | None]]:
    """Yield (name, input (3, S, S), original (w, h), GT boxes in S px or None, display image, label)."""
    if settings.inputs:
        for path in expand_inputs(settings.inputs):
            # user photos upright as their EXIF orientation says (a phone's portrait shot); boxes in that frame
            x, orig = load_eval_image(path, run.img_size, upright=True)
            display = np.asarray(read_rgb(path, upright=True), dtype=np.float32) / 255.0  # as the input, any mode
            yield str(path), x, orig, None, display, None
        return
    ds, _ = open_eval_dataset(run, EvalSettings(ckpt=settings.ckpt))
    n = min(settings.num_samples, len(ds))
    picks = np.linspace(0, len(ds) - 1, n).round().astype(int).tolist() if n else []
    for i in picks:
        batch = collate_samples([ds[i]])
        if len(batch.labels) == 0:  # unreadable image, skipped with a warning
            continue
        image = denormalize(batch.images)[0].permute(1, 2, 0).numpy()
        w, h = (int(v) for v in batch.orig_sizes[0])
        yield (batch.paths[0], batch.images[0], (w, h), batch.boxes[0].numpy(), image, int(batch.labels[0]))


@torch.no_grad()
def run_localize(settings: LocalizeSettings, out_dir: Path) -> pd.DataFrame:
    """Localize every input; write overlays/<name>.png, predictions.csv and predictions.json to out_dir."""
    device = resolve_device(settings.device)
    run = load_run(settings.ckpt, device)
    method = run.model.config.method
    kind = settings.map_kind or default_map_kind(method)
    find_map_kind(method, kind).check_available(run.model)
    target_idx = resolve_target(settings.target, run.class_names)
    threshold = settings.threshold
    if threshold is None:
        threshold = run.ckpt.get("best_threshold")
    if threshold is None:
        raise UserError("the checkpoint has no best threshold (its validation split had no boxes): pass --threshold")
    if not 0.0 <= float(threshold) < 1.0:
        raise UserError(f"--threshold must be in [0, 1), got {threshold}")
    check_output_dir(out_dir)
    for path in expand_inputs(settings.inputs):  # every given image must decode before anything is written
        read_rgb(path)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    for n, (name, x, orig, gt, display, label) in enumerate(_items(run, settings)):
        images = x[None].to(device)  # (1, 3, S, S)
        out = run.model(images, **forward_options(method, [kind]))
        probs = out.probs[0]
        pred = int(probs.argmax())
        cls = pred if target_idx is None else target_idx
        smap = score_maps(run.model, out, torch.tensor([cls], device=device), (run.img_size, run.img_size), kind,
                          images)[0]
        box = largest_box(smap.cpu().numpy(), float(threshold))  # (4,) inclusive, S px
        box_orig = box_to_original(box, run.img_size, orig)
        row: dict[str, Any] = {
            "image": name, "predicted_class": run.class_names[pred], "predicted_index": pred,
            "score": float(probs[pred]), "map_class": run.class_names[cls], "map": kind,
            "threshold": float(threshold), "x0": box_orig[0], "y0": box_orig[1], "x1": box_orig[2], "y1": box_orig[3],
        }
        if label is not None:
            row["true_class"] = run.class_names[label]
        stem = f"{n:04d}_{Path(name.replace(':', '_')).stem}"
        # the overlay is drawn on the image as shown to the user: the original photo for files,
        # the evaluated S x S image for dataset samples (whose boxes are in S px)
        if gt is None:
            dh, dw = display.shape[:2]
            up = torch.nn.functional.interpolate(smap[None, None].cpu(), size=(dh, dw), mode="bilinear",
                                                 align_corners=False)[0, 0].numpy()
            pred_draw, gt_draw = np.array([box_orig]), None
        else:
            up, pred_draw, gt_draw = smap.cpu().numpy(), box[None], gt
        title = f"{row['predicted_class']} ({row['score']:.2f})" + (f" | true: {row['true_class']}" if label is not None else "")
        save_overlay(out_dir / "overlays" / f"{stem}.png", display, up, pred_draw, gt_draw, title)
        row["overlay"] = str(Path("overlays") / f"{stem}.png")
        rows.append(row)
    df = pd.DataFrame(rows)
    df.to_csv(out_dir / "predictions.csv", index=False)
    (out_dir / "predictions.json").write_text(json.dumps(rows, indent=2))
    return df
