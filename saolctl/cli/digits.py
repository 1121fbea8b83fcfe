"""`saolctl digits`: write the embedded default dataset to disk so it can be looked at."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from saolctl.cli.errors import is_debug, user_errors
from saolctl.data import DigitsConfig, write_digits
from saolctl.engine.validation import check_output_dir


def digits_command(
    ctx: typer.Context,
    out: Path = typer.Option(Path("digits-data"), "--out", "-o", help="Folder to write (WSOL metadata layout)."),
    seed: int = typer.Option(0, "--seed", help="Random seed (the same seed gives the same images)."),
    train_size: int = typer.Option(DigitsConfig().train_size, "--train-size", help="Images in train."),
    val_size: int = typer.Option(DigitsConfig().val_size, "--val-size", help="Images in val."),
    test_size: int = typer.Option(DigitsConfig().test_size, "--test-size", help="Images in test."),
) -> None:
    """Write the embedded digits dataset (images, masks, boxes) in the WSOL metadata layout."""
    with user_errors(is_debug(ctx)):
        config = DigitsConfig(train_size=train_size, val_size=val_size, test_size=test_size)
        check_output_dir(out)  # a path inside a file or an unwritable folder is bad input, before anything is written
        root = write_digits(out, config, seed)
        Console().print(f"wrote {train_size + val_size + test_size} images to {root} "
                        f"(open it with --data {root})", markup=False)


def register(app: typer.Typer) -> None:
    """Add the command to the app."""
    app.command("digits")(digits_command)
