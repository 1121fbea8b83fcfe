"""`saolctl eval`: classification and WSOL metrics of a checkpoint under the reference protocol."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from saolctl.cli.errors import is_debug, user_errors
from saolctl.cli.progress import metrics_table
from saolctl.engine.distributed import is_main_process
from saolctl.engine.eval_run import PRETRAINED_METHOD, EvalSettings, run_eval
from saolctl.engine.maps_eval import MapsEvalSettings, run_maps_eval
from saolctl.errors import UserError
from saolctl.report.columns import EVAL_HEADLINE

HEADLINE = list(EVAL_HEADLINE)


def eval_command(
    ctx: typer.Context,
    ckpt: Optional[Path] = typer.Option(None, "--ckpt", help="Checkpoint (best.pt or last.pt of a run)."),
    method: Optional[str] = typer.Option(None, "--method", help="Without --ckpt: 'cam' (an off-the-shelf ImageNet classifier's CAM)."),
    backbone: Optional[str] = typer.Option(None, "--backbone", help="Without --ckpt: the pretrained ImageNet backbone."),
    pretrained: bool = typer.Option(False, "--pretrained", help="Without --ckpt: use the backbone's ImageNet weights and 1000-class head."),
    img_size: int = typer.Option(224, "--img-size", help="Without --ckpt: evaluated size S."),
    data: Optional[str] = typer.Option(None, "--data", "-d", help="Data to evaluate on (default: the checkpoint's)."),
    split: Optional[str] = typer.Option(None, "--split", help="Split (default: test where it exists, else val)."),
    map_kind: Optional[str] = typer.Option(None, "--map", help="Map kind (default: the method's; `saolctl methods` lists each method's kinds)."),
    target: str = typer.Option("gt", "--target", help="Class whose map is scored: gt (GT-known) or pred."),
    thresholds_step: float = typer.Option(0.001, "--thresholds-step", help="Step of the CAM thresholds in [0, 1)."),
    batch_size: int = typer.Option(64, "--batch-size", help="Batch size."),
    workers: Optional[int] = typer.Option(None, "--workers", help="DataLoader worker processes, and processes for the contour work when 2 or more (default: 0 for the embedded digits, else one per core up to 8; with --maps one per core up to 8)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    amp: bool = typer.Option(False, "--amp", help="Mixed precision (bfloat16 on CPU, float16 on CUDA)."),
    channels_last: Optional[bool] = typer.Option(None, "--channels-last/--no-channels-last", help="Model and inputs in channels-last memory format (default: on CPU only, where oneDNN's convolutions are faster in it)."),
    data_format: Optional[str] = typer.Option(None, "--format", help="Force a layout: imagefolder, cub, wsol."),
    boxes: Optional[Path] = typer.Option(None, "--boxes", help="Folder of VOC XML boxes (ImageFolder layout)."),
    strict_images: bool = typer.Option(False, "--strict-images", help="Fail on an unreadable image instead of skipping it."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output folder (default: eval-<split> beside the checkpoint)."),
    maps: Optional[Path] = typer.Option(None, "--maps", help="Score these saved maps instead of a checkpoint: a folder of <image_id>.npy files or one .npz keyed by image id (wsolevaluation's convention)."),
    save_maps: Optional[Path] = typer.Option(None, "--save-maps", help="With --ckpt: also write the scored maps, one <image_id>.npy (float32) each, to this folder."),
    normalize: bool = typer.Option(False, "--normalize", help="With --maps: min-max normalise every map instead of refusing values outside [0, 1]."),
    predictions: Optional[Path] = typer.Option(None, "--predictions", help="With --maps: image_id,class lines (CSV) or a JSON object giving each image's predicted class (adds top-1 and Top-1 Loc)."),
) -> None:
    """Evaluate a checkpoint (top-1/5, MaxBoxAcc, MaxBoxAccV2, GT-known / Top-1 Loc, PxAP), or saved maps (--maps)."""
    with user_errors(is_debug(ctx)):
        if maps is not None:
            if ckpt is not None or method or backbone or pretrained or save_maps is not None:
                raise UserError("--maps scores saved maps: it takes no --ckpt, --method, --backbone, --pretrained or --save-maps")
            eval_maps(MapsEvalSettings(maps=maps, data=data, split=split, format=data_format,
                                       boxes_dir=str(boxes) if boxes else None, normalize=normalize,
                                       predictions=predictions, threshold_step=thresholds_step, workers=workers), out)
            return
        if normalize or predictions is not None:
            raise UserError("--normalize and --predictions are for scoring saved maps (--maps DIR)")
        if batch_size < 1:
            raise UserError(f"--batch-size must be at least 1, got {batch_size}")
        if ckpt is None and not (method == PRETRAINED_METHOD and backbone and pretrained and data):
            raise UserError("give --ckpt PATH, or --method cam --backbone NAME --pretrained --data PATH "
                            "for an off-the-shelf ImageNet classifier's CAM")
        if ckpt is not None and (method or backbone or pretrained):
            raise UserError("--method/--backbone/--pretrained are for evaluating without --ckpt; the checkpoint says them")
        if target not in ("gt", "pred"):
            raise UserError(f"--target must be gt or pred, got {target!r}")
        settings = EvalSettings(ckpt=ckpt, data=data, split=split, map_kind=map_kind, target=target,
                                threshold_step=thresholds_step, batch_size=batch_size, workers=workers,
                                device=device, amp=amp, channels_last=channels_last, format=data_format,
                                boxes_dir=str(boxes) if boxes else None,
                                pretrained_backbone=backbone if ckpt is None else None, img_size=img_size,
                                strict_images=strict_images, save_maps=save_maps)
        console = Console()
        main = is_main_process()  # under torchrun only rank 0 draws progress and prints
        with Progress(TextColumn("[bold]evaluating"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                      console=console, transient=True, disable=not main) as progress:
            task = progress.add_task("eval", total=None)
            report, meta, out_dir = run_eval(settings, out,
                                    on_start=lambda n: progress.update(task, total=n),
                                    on_batch=lambda n: progress.advance(task, n))
        if not main:
            return
        title = f"{meta['method']} / {meta['backbone']} — map {meta['map']}, {meta['data']} {meta['split']}"
        console.print(metrics_table(title, report.metrics, HEADLINE))
        console.print(f"wrote {out_dir}/eval.json, curves.csv, curves.png, per_class.csv", markup=False)


def eval_maps(settings: MapsEvalSettings, out: Optional[Path]) -> None:
    """Score saved maps with a progress bar, then print the metrics and what was written."""
    console = Console()
    with Progress(TextColumn("[bold]scoring maps"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=console, transient=True) as progress:
        task = progress.add_task("maps", total=None)
        report, meta, out_dir = run_maps_eval(settings, out, on_start=lambda n: progress.update(task, total=n),
                                              on_batch=lambda n: progress.advance(task, n))
    shapes = ", ".join(f"{k} ({v})" for k, v in meta["map_shapes"].items())
    title = f"maps {meta['maps']} — {meta['data']} {meta['split']}, maps {shapes}"
    console.print(metrics_table(title, report.metrics, HEADLINE + ["num_extra_maps"]))
    if report.metrics["num_extra_maps"]:
        console.print(f"{report.metrics['num_extra_maps']} map files name no image of the split (not evaluated), "
                      f"e.g. {meta['extra_maps'][0]}", markup=False)
    console.print(f"wrote {out_dir}/eval.json, curves.csv, curves.png, per_class.csv", markup=False)


def register(app: typer.Typer) -> None:
    """Add the command to the app."""
    app.command("eval")(eval_command)
