"""`saolctl backbones`: list the registered backbones."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from saolctl.models import backbone_info, list_backbones


def backbones_command() -> None:
    """List the registered backbones with their stages and pretrained-weights source."""
    table = Table(title="saolctl backbones")
    table.add_column("name", no_wrap=True)
    for col in ("description", "default px", "pretrained weights"):
        table.add_column(col, overflow="fold")  # wraps at 80 columns, never cut with an ellipsis
    for name in list_backbones():
        info = backbone_info(name)
        table.add_row(*(Text(str(v)) for v in (name, info.description, info.default_img_size, info.pretrained_source)))
    Console().print(table)


def register(app: typer.Typer) -> None:
    """Add the command to the app."""
    app.command("backbones")(backbones_command)
