"""Tables: pandas frames as Markdown and as rich tables."""

from __future__ import annotations

import math

import pandas as pd
from rich.table import Table
from rich.text import Text


def _cell(v: object) -> str:
    if isinstance(v, float):
        return "—" if math.isnan(v) else f"{v:.2f}"
    return str(v)


def markdown_table(df: pd.DataFrame) -> str:
    """Return a GitHub Markdown table of a frame (floats with 2 decimals, NaN as a dash)."""
    head = "| " + " | ".join(str(c) for c in df.columns) + " |"
    sep = "|" + "|".join("---" for _ in df.columns) + "|"
    rows = ["| " + " | ".join(_cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([head, sep, *rows])


def rich_table(df: pd.DataFrame, title: str, headers: dict[str, str] | None = None) -> Table:
    """Return a rich table of a frame (floats with 2 decimals, NaN as a dash).

    Titles, headers and cells are plain text (a ``[...]`` in a path or a class name is shown, not read as rich
    markup); ``headers`` renames columns for display. A cell too wide for the terminal folds onto more lines
    instead of being cut with an ellipsis.
    """
    table = Table(title=Text(title))
    for c in df.columns:
        table.add_column(Text(str((headers or {}).get(c, c))), overflow="fold",
                         justify="left" if df[c].dtype == object else "right")
    for row in df.itertuples(index=False):
        table.add_row(*(Text(_cell(v)) for v in row))
    return table
