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
from saolctl.engine.eval_run import EvalSettings, run_eval
from saolctl.errors import UserError

HEADLINE = ["top1", "top5", "gt_known_loc", "top1_loc", "max_box_acc", "max_box_acc_v2", "box_acc_iou30",
            "box_acc_iou50", "box_acc_iou70", "best_threshold", "pxap", "num_images", "num_localized",
            "num_without_boxes", "num_skipped_unreadable"]


def eval_command(
    ctx: typer.Context,
    ckpt: Optional[Path] = typer.Option(None, "--ckpt", help="Checkpoint (best.pt or last.pt of a run)."),
    method: Optional[str] = typer.Option(None, "--method", help="Without --ckpt: 'cam' (an off-the-shelf ImageNet classifier's CAM)."),
    backbone: Optional[str] = typer.Option(None, "--backbone", help="Without --ckpt: the pretrained ImageNet backbone."),
    pretrained: bool = typer.Option(False, "--pretrained", help="Without --ckpt: use the backbone's ImageNet weights and 1000-class head."),
    img_size: int = typer.Option(224, "--img-size", help="Without --ckpt: evaluated size S."),
    data: Optional[str] = typer.Option(None, "--data", "-d", help="Data to evaluate on (default: the checkpoint's)."),
    split: Optional[str] = typer.Option(None, "--split", help="Split (default: test where it exists, else val)."),
    map_kind: Optional[str] = typer.Option(None, "--map", help="Map kind: cam; abn: attention|class; saol: contrib|attention|spatial|gapcam."),
    target: str = typer.Option("gt", "--target", help="Class whose map is scored: gt (GT-known) or pred."),
    thresholds_step: float = typer.Option(0.001, "--thresholds-step", help="Step of the CAM thresholds in [0, 1)."),
    batch_size: int = typer.Option(64, "--batch-size", help="Batch size."),
    workers: Optional[int] = typer.Option(None, "--workers", help="DataLoader worker processes (default: 0 for the embedded digits, else one per core up to 8)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    amp: bool = typer.Option(False, "--amp", help="Mixed precision (bfloat16 on CPU, float16 on CUDA)."),
    channels_last: Optional[bool] = typer.Option(None, "--channels-last/--no-channels-last", help="Model and inputs in channels-last memory format (default: on CPU only, where oneDNN's convolutions are faster in it)."),
    data_format: Optional[str] = typer.Option(None, "--format", help="Force a layout: imagefolder, cub, wsol."),
    boxes: Optional[Path] = typer.Option(None, "--boxes", help="Folder of VOC XML boxes (ImageFolder layout)."),
    strict_images: bool = typer.Option(False, "--strict-images", help="Fail on an unreadable image instead of skipping it."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output folder (default: eval-<split> beside the checkpoint)."),
) -> None:
    """Evaluate a checkpoint: top-1/5, MaxBoxAcc, MaxBoxAccV2, GT-known / Top-1 Loc, PxAP."""
    with user_errors(is_debug(ctx)):
        if batch_size < 1:
            raise UserError(f"--batch-size must be at least 1, got {batch_size}")
        if ckpt is None and not (method == "cam" and backbone and pretrained and data):
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
                                strict_images=strict_images)
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


def register(app: typer.Typer) -> None:
    """Add the command to the app."""
    app.command("eval")(eval_command)
