"""`saolctl compare`: every method under one protocol on the same images."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import pandas as pd
import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from saolctl.cli.errors import is_debug, user_errors
from saolctl.cli.options import parse_model_options, split_pairs
from saolctl.cli.progress import RichReporter
from saolctl.engine.compare_run import CompareSettings, run_compare
from saolctl.errors import UserError
from saolctl.report.columns import COMPARE_TABLES, SHORT_HEADERS
from saolctl.report.tables import rich_table




def compare_tables(table: pd.DataFrame, data: str) -> list[Table]:
    """Return the final rich tables of a comparison (one row per method and map kind)."""
    out = []
    for part, columns in COMPARE_TABLES:
        shown = [c for c in ("method", "map", *columns) if c in table]
        out.append(rich_table(table[shown], f"compare — {data}: {part} (test split; percent)", headers=SHORT_HEADERS))
    return out


def compare_command(
    ctx: typer.Context,
    methods: str = typer.Option("cam,abn,saol", "--methods", help="Comma-separated methods to compare (`saolctl methods` lists them)."),
    ckpt: Optional[List[str]] = typer.Option(None, "--ckpt", help="METHOD=PATH of a trained checkpoint (repeatable); missing methods are trained."),
    data: str = typer.Option("digits", "--data", "-d", help="'digits' (embedded default) or a dataset folder."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Training epochs for methods trained here (default: recipe)."),
    backbone: Optional[str] = typer.Option(None, "--backbone", "-b", help="Backbone for methods trained here (default: recipe)."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Training batch for methods trained here (default: recipe); evaluation batch (default 128)."),
    amp: Optional[bool] = typer.Option(None, "--amp/--no-amp", help="Mixed precision in training and evaluation (bfloat16 on CPU, float16 on CUDA); default: training only, on a CPU with AMX."),
    channels_last: Optional[bool] = typer.Option(None, "--channels-last/--no-channels-last", help="Model and inputs in channels-last memory format (default: on CPU only, where oneDNN's convolutions are faster in it)."),
    workers: Optional[int] = typer.Option(None, "--workers", help="DataLoader worker processes (default: 0 for the embedded digits, else one per core up to 8)."),
    thresholds_step: float = typer.Option(0.001, "--thresholds-step", help="Step of the CAM thresholds."),
    option: Optional[List[str]] = typer.Option(None, "--option", "-O", help="Model option KEY=VALUE for methods trained here."),
    add_maps: str = typer.Option("", "--add-maps", help="Comma-separated map kinds every method has (post-hoc: gradcam, gradcampp, ...) to evaluate beside each method's own."),
    checkpoint: str = typer.Option("last", "--checkpoint", help="Checkpoint of methods trained here to evaluate: last (wsolevaluation's default), best (val MaxBoxAccV2) or best_top1."),
    out: Path = typer.Option(Path("runs/compare"), "--out", "-o", help="Output folder."),
) -> None:
    """Compare methods (default CAM, ABN and SAOL): table, curves, map grid and report.md."""
    with user_errors(is_debug(ctx)):
        if epochs is not None and epochs < 1:
            raise UserError(f"--epochs must be at least 1, got {epochs}")
        settings = CompareSettings(
            methods=tuple(m.strip() for m in methods.split(",") if m.strip()), ckpts={m: Path(p) for m, p in split_pairs(ckpt, '--ckpt', 'METHOD=PATH')},
            data=data, out=out, seed=seed, epochs=epochs, backbone=backbone, device=device, workers=workers,
            threshold_step=thresholds_step, model_options=parse_model_options(option), batch_size=batch_size,
            amp=amp, channels_last=channels_last, checkpoint=checkpoint,
            extra_maps=tuple(k.strip() for k in add_maps.split(",") if k.strip()),
        )
        console = Console()
        result = run_compare(settings, reporter_for=lambda m: RichReporter(console, label=m),
                             on_stage=lambda text: console.print(Text(text, style="bold")))
        for table in compare_tables(result.table, data):
            console.print(table)
        console.print(f"wrote {', '.join(str(p) for p in result.files.values())}", markup=False)


def register(app: typer.Typer) -> None:
    """Add the command to the app."""
    app.command("compare")(compare_command)
