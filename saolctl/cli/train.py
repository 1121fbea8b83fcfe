"""`saolctl train`: train one method on the embedded digits or a dataset folder."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console

from saolctl.cli.errors import is_debug, user_errors
from saolctl.cli.options import config_file_params, parse_model_options, read_config_file
from saolctl.cli.progress import RichReporter, metrics_table
from saolctl.data import DigitsConfig
from saolctl.engine.distributed import is_main_process
from saolctl.engine.train import SilentReporter, TrainConfig, train


def train_command(
    ctx: typer.Context,
    method: str = typer.Option("saol", "--method", "-m", help="Method (output layer): saol, cam, abn or a plugin; `saolctl methods` lists them."),
    backbone: Optional[str] = typer.Option(None, "--backbone", "-b", help="Backbone name (see `saolctl backbones`); default: the data's recipe."),
    data: str = typer.Option("digits", "--data", "-d", help="'digits' (embedded default) or a dataset folder."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Epochs (default: recipe)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Batch size (default: recipe)."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Peak learning rate of the head (default: recipe)."),
    img_size: Optional[int] = typer.Option(None, "--img-size", help="Square input size S (default: recipe)."),
    pretrained: Optional[bool] = typer.Option(None, "--pretrained/--no-pretrained", help="Start from ImageNet weights (default: recipe)."),
    init: Optional[Path] = typer.Option(None, "--init", help="Load a local backbone state dict."),
    out: Path = typer.Option(Path("runs/train"), "--out", "-o", help="Run folder."),
    resume: bool = typer.Option(False, "--resume", help="Continue from OUT/last.pt."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    amp: Optional[bool] = typer.Option(None, "--amp/--no-amp", help="Mixed precision (bfloat16 on CPU, float16 with a gradient scaler on CUDA); default: on for a CPU with AMX, else off."),
    channels_last: Optional[bool] = typer.Option(None, "--channels-last/--no-channels-last", help="Model and inputs in channels-last memory format (default: on CPU only, where oneDNN's convolutions are faster in it)."),
    compile: bool = typer.Option(False, "--compile", help="torch.compile the model for training (CPU needs a C++ compiler)."),
    workers: Optional[int] = typer.Option(None, "--workers", help="DataLoader worker processes (default: 0 for the embedded digits, else one per core up to 8)."),
    data_format: Optional[str] = typer.Option(None, "--format", help="Force a layout: imagefolder, cub, wsol."),
    boxes: Optional[Path] = typer.Option(None, "--boxes", help="Folder of VOC XML boxes (ImageFolder layout)."),
    strict_images: bool = typer.Option(False, "--strict-images", help="Fail on an unreadable image instead of skipping it."),
    option: Optional[List[str]] = typer.Option(None, "--option", "-O", help="Model option KEY=VALUE (repeatable), e.g. att_entropy=0.3."),
    config: Optional[Path] = typer.Option(None, "--config", help="TOML or JSON file of these options (flags given here win)."),
) -> None:
    """Train a classifier with a SAOL, CAM or ABN output layer (or a registered method's)."""
    with user_errors(is_debug(ctx)):
        given = {k for k in ctx.params if ctx.get_parameter_source(k).name != "DEFAULT"}
        file_opts = read_config_file(config)
        from_file = config_file_params(ctx, file_opts, ("model_options", "digits"), config)
        params = {**ctx.params, **{k: v for k, v in from_file.items() if k not in given}}
        digits = DigitsConfig.from_dict(file_opts["digits"]) if "digits" in file_opts else None
        cfg = TrainConfig(
            method=params["method"], data=str(params["data"]), out=Path(params["out"]),
            backbone=params["backbone"], epochs=params["epochs"], batch_size=params["batch_size"],
            lr=params["lr"], img_size=params["img_size"], pretrained=params["pretrained"],
            init=str(params["init"]) if params["init"] else None, seed=params["seed"], device=params["device"],
            amp=params["amp"], channels_last=params["channels_last"], compile=params["compile"],
            workers=params["workers"], resume=params["resume"],
            format=params["data_format"], boxes_dir=str(params["boxes"]) if params["boxes"] else None,
            strict_images=params["strict_images"], digits=digits,
            model_options={**file_opts.get("model_options", {}), **parse_model_options(params["option"])},
        )
        console = Console()
        main = is_main_process()  # under torchrun only rank 0 draws progress and prints
        result = train(cfg, RichReporter(console, label=cfg.method) if main else SilentReporter())
        if main:
            console.print(metrics_table(f"{cfg.method}: last epoch (validation)", result.metrics))
            console.print(f"run folder: {result.out}  (best: {result.best.name}, last: {result.last.name})", markup=False)


def register(app: typer.Typer) -> None:
    """Add the command to the app."""
    app.command("train")(train_command)
