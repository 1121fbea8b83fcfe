"""`saolctl methods`: list the registered methods, their map kinds, loss terms and options."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from saolctl.cli.errors import is_debug, user_errors
from saolctl.localization.maps import map_kind_names
from saolctl.methods.registry import all_methods


def methods_command(ctx: typer.Context) -> None:
    """List the registered methods (saolctl's own and plugins): paper, map kinds (default first), loss terms, options."""
    with user_errors(is_debug(ctx)):
        table = Table(title="saolctl methods")
        table.add_column("name", no_wrap=True)
        for col in ("paper", "map kinds", "loss terms", "options"):
            table.add_column(col, overflow="fold")  # wraps at 80 columns, never cut with an ellipsis
        for method in all_methods():
            row = (method.name, method.paper, ", ".join(map_kind_names(method.name)), ", ".join(method.term_names()),
                   ", ".join(o.name for o in method.all_options()) or "—")
            table.add_row(*(Text(v) for v in row))
        Console().print(table)


def register(app: typer.Typer) -> None:
    """Add the command to the app."""
    app.command("methods")(methods_command)
