"""The Typer app: global options and one module per command."""

from __future__ import annotations

from typing import Optional

import typer

from saolctl import __version__
from saolctl.cli import backbones, compare, digits, localize, methods, train
from saolctl.cli import eval as eval_cmd

app = typer.Typer(
    name="saolctl",
    help="Train classifiers whose output layer keeps location (SAOL, CAM, ABN) and evaluate how they localize.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"saolctl {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    ctx: typer.Context,
    version: Optional[bool] = typer.Option(None, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
) -> None:
    """saolctl: output layers that keep location, and WSOL evaluation under the reference protocol."""
    ctx.obj = {"debug": debug}


for module in (train, eval_cmd, localize, compare, methods, backbones, digits):
    module.register(app)


def main() -> None:
    """Run the CLI."""
    app()
