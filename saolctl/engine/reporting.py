"""Progress events of a training run: the protocol the loop reports to, and a reporter that reports nothing."""

from __future__ import annotations

from typing import Any, Protocol


class Reporter(Protocol):
    """Receives progress events from the loop (the CLI draws them; tests may record them)."""

    def start(self, epochs: int, steps_per_epoch: int, start_epoch: int) -> None: ...

    def step(self, epoch: int, step: int, terms: dict[str, float], images_per_s: float) -> None: ...

    def epoch_end(self, epoch: int, row: dict[str, Any]) -> None: ...

    def message(self, text: str) -> None: ...


class SilentReporter:
    """A reporter that reports nothing."""

    def start(self, epochs: int, steps_per_epoch: int, start_epoch: int) -> None:
        """Ignore."""

    def step(self, epoch: int, step: int, terms: dict[str, float], images_per_s: float) -> None:
        """Ignore."""

    def epoch_end(self, epoch: int, row: dict[str, Any]) -> None:
        """Ignore."""

    def message(self, text: str) -> None:
        """Ignore."""
