"""`saolctl localize`: where the model looks — overlays and boxes for images or a dataset split."""

from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console

from saolctl.cli.errors import is_debug, user_errors
from saolctl.engine.localize_run import LocalizeSettings, run_localize
from saolctl.errors import UserError
from saolctl.report.tables import rich_table


HEADERS = {"predicted_class": "predicted", "true_class": "true class"}


def shown_images(paths: list[str]) -> tuple[list[str], str | None]:
    """Return the image paths relative to the folder they share (file names for one folder), and that folder.

    Keeps the table readable at 80 columns; predictions.csv keeps the full paths.
    """
    parents = [os.path.dirname(p) for p in paths]
    if not paths or not all(parents):
        return paths, None  # dataset samples ("digits:<i>") or bare file names: shown as they are
    try:
        common = os.path.commonpath(parents)
    except ValueError:  # absolute and relative paths mixed
        return paths, None
    return [os.path.relpath(p, common) for p in paths], common


def localize_command(
    ctx: typer.Context,
    images: Optional[List[Path]] = typer.Argument(None, help="Image files or folders (default: a few images of the checkpoint's evaluation split)."),
    ckpt: Path = typer.Option(..., "--ckpt", help="Checkpoint."),
    threshold: Optional[float] = typer.Option(None, "--threshold", help="Map threshold in [0, 1) (default: the checkpoint's best validation threshold)."),
    target: str = typer.Option("pred", "--target", help="'pred' or a class name / index whose map is drawn."),
    map_kind: Optional[str] = typer.Option(None, "--map", help="Map kind (default: the method's default; `saolctl methods` lists each method's kinds)."),
    num: int = typer.Option(8, "--num", help="How many split images to take when no images are given."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    out: Path = typer.Option(Path("runs/localize"), "--out", "-o", help="Output folder."),
) -> None:
    """Draw each image's map, predicted box and class; write predictions.csv/json with boxes in image pixels."""
    with user_errors(is_debug(ctx)):
        if threshold is not None and not 0.0 <= threshold < 1.0:
            raise UserError(f"--threshold must be in [0, 1), got {threshold}")
        if num < 1:
            raise UserError(f"--num must be at least 1, got {num}")
        settings = LocalizeSettings(ckpt=ckpt, inputs=tuple(images or ()), threshold=threshold, target=target,
                                    map_kind=map_kind, num_samples=num, device=device)
        df = run_localize(settings, out)
        cols = [c for c in ["image", "predicted_class", "score", "true_class", "x0", "y0", "x1", "y1"] if c in df]
        shown, folder = shown_images([str(p) for p in df["image"]])
        table = df[cols].assign(image=shown)
        if folder:
            Console().print(f"images in {folder}", markup=False)
        Console().print(rich_table(table, f"localize — threshold {df['threshold'].iloc[0]:.3f}, map {df['map'].iloc[0]}",
                                   headers=HEADERS))
        Console().print(f"wrote {out}/predictions.csv, predictions.json and {len(df)} overlays in {out}/overlays/",
                        markup=False)


def register(app: typer.Typer) -> None:
    """Add the command to the app."""
    app.command("localize")(localize_command)
