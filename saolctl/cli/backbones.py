"""`saolctl backbones`: list the registered backbones."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from saolctl.models import backbone_info, list_backbones


def backbones_command() -> None:
    """List the registered backbones with their stages and pretrained-weights source."""
    table = Table(title="saolctl backbones")
    for col in ("name", "description", "default px", "pretrained weights"):
        table.add_column(col)
    for name in list_backbones():
        info = backbone_info(name)
        table.add_row(name, info.description, str(info.default_img_size), info.pretrained_source)
    Console().print(table)


def register(app: typer.Typer) -> None:
    """Add the command to the app."""
    app.command("backbones")(backbones_command)
