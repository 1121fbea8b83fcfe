"""Rich progress display for training: one bar per epoch with loss terms, images/s and ETA."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text


class RichReporter:
    """Draws the training loop's progress with rich (implements engine.reporting.Reporter)."""

    def __init__(self, console: Console | None = None, label: str = "") -> None:
        self.console = console or Console()
        self.label = f"{label} " if label else ""
        self.progress: Progress | None = None
        self.task: Any = None
        self.epochs = 0
        self.steps = 0

    def start(self, epochs: int, steps_per_epoch: int, start_epoch: int) -> None:
        """Open the progress display."""
        self.epochs, self.steps = epochs, steps_per_epoch
        self.progress = Progress(
            TextColumn("{task.description}", style="bold", markup=False),  # labels and terms are plain text
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[terms]}", markup=False),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )
        self.progress.start()
        self.task = self.progress.add_task(
            f"{self.label}epoch {start_epoch + 1}/{epochs}", total=(epochs - start_epoch) * steps_per_epoch, terms=""
        )

    def step(self, epoch: int, step: int, terms: dict[str, float], images_per_s: float) -> None:
        """Advance the bar and show the current loss terms."""
        if self.progress is None:
            return
        shown = " ".join(f"{k}={v:.3f}" for k, v in terms.items())
        self.progress.update(
            self.task, advance=1, description=f"{self.label}epoch {epoch + 1}/{self.epochs}",
            terms=f"{shown} {images_per_s:.0f} img/s",
        )

    def epoch_end(self, epoch: int, row: dict[str, Any]) -> None:
        """Print one line of validation results; close the display after the last epoch."""
        parts = [f"{self.label}epoch {epoch + 1}: val top-1 {row.get('val_top1', float('nan')):.2f}"]
        if "val_max_box_acc_v2" in row:
            parts.append(f"MaxBoxAccV2 {row['val_max_box_acc_v2']:.2f}")
        parts.append(f"{row.get('train_images_per_s', 0):.0f} img/s")
        if self.progress is not None:
            self.progress.console.print(Text(" | ".join(parts)))
            if epoch + 1 >= self.epochs:
                self.progress.stop()

    def message(self, text: str) -> None:
        """Print a message (plain text: a ``[...]`` in a class name or path is shown as it is)."""
        self.console.print(Text(text))


def metrics_table(title: str, metrics: dict[str, Any], keys: list[str] | None = None) -> Table:
    """Return a two-column rich table of metrics (floats with 2 decimals)."""
    table = Table(title=Text(title))
    table.add_column("metric", overflow="fold")
    table.add_column("value", justify="right", overflow="fold")
    for k in keys or list(metrics):
        if k not in metrics:
            continue
        v = metrics[k]
        table.add_row(Text(str(k)), Text(f"{v:.2f}" if isinstance(v, float) else str(v)))
    return table
