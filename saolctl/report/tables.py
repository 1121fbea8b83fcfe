"""Tables: pandas frames as Markdown and as rich tables."""

from __future__ import annotations

import math

import pandas as pd
from rich.table import Table


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


def rich_table(df: pd.DataFrame, title: str) -> Table:
    """Return a rich table of a frame (floats with 2 decimals, NaN as a dash)."""
    table = Table(title=title)
    for c in df.columns:
        table.add_column(str(c), justify="left" if df[c].dtype == object else "right")
    for row in df.itertuples(index=False):
        table.add_row(*(_cell(v) for v in row))
    return table
