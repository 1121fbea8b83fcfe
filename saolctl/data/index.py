"""The table of samples a file layout describes, and the checks its boxes go through."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from saolctl.data.boxes import as_box_array, clip_boxes, is_degenerate
from saolctl.data.errors import DataWarning
from saolctl.data.images import DECODE_ERRORS

EMPTY_BOXES = np.zeros((0, 4), dtype=np.int64)


@dataclass
class SampleIndex:
    """One row per image of a split: path, label and (in eval mode) ground truth, as columns."""

    format: str
    root: Path
    split: str
    class_names: list[str]
    paths: list[str]
    labels: np.ndarray  # (N,) int64
    boxes: list[np.ndarray] | None = None  # per image (n, 4) int64 inclusive in its frame; None = not loaded
    frames: list[tuple[int, int] | None] | None = None  # per image (w, h) the boxes refer to; None = decoded size
    mask_paths: list[tuple[str, ...]] | None = None  # per image instance mask files; None = no masks
    ignore_paths: list[str | None] | None = None  # per image ignore mask file or None
    counts: dict[str, int] = field(default_factory=dict)  # clipped_boxes, dropped_boxes, unknown_class_boxes, ...
    notes: list[str] = field(default_factory=list)  # what a split means, where roots were found

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def has_boxes(self) -> bool:
        """True when any image has at least one box."""
        return self.boxes is not None and any(len(b) for b in self.boxes)

    @property
    def has_masks(self) -> bool:
        """True when any image has a mask file."""
        return self.mask_paths is not None and any(self.mask_paths)


def header_size(path: str | Path) -> tuple[int, int] | None:
    """Return (w, h) from an image header without decoding it, or None when it cannot be opened."""
    try:
        with Image.open(path) as image:
            return image.size
    except DECODE_ERRORS:
        return None


class BoxChecker:
    """Clips boxes into their image, drops empty ones and reports both, once per kind, with examples."""

    KINDS = ("clipped_boxes", "dropped_boxes", "unknown_class_boxes")
    MESSAGES = {
        "clipped_boxes": "box(es) reaching outside their image were clipped",
        "dropped_boxes": "degenerate or fully outside box(es) were dropped",
        "unknown_class_boxes": "box(es) name a class that is not in the dataset (kept)",
    }

    def __init__(self, *, one_past: bool = False) -> None:
        # one_past: x1 = W / y1 = H is allowed, as the protocol's CUB boxes (x1 = x + w) produce it
        self.one_past = one_past
        self.counts: dict[str, int] = {k: 0 for k in self.KINDS}
        self.examples: dict[str, list[str]] = {k: [] for k in self.KINDS}

    def note(self, kind: str, source: str, n: int = 1) -> None:
        """Count n problems of a kind found in a source file."""
        self.counts[kind] += n
        if len(self.examples[kind]) < 3 and source not in self.examples[kind]:
            self.examples[kind].append(source)

    def check(self, boxes: np.ndarray, frame: tuple[int, int] | None, source: str) -> np.ndarray:
        """Return the boxes with degenerate / outside ones dropped and the rest clipped into the frame."""
        b = as_box_array(boxes)
        if not len(b):
            return EMPTY_BOXES
        bad = is_degenerate(b)
        if frame is not None:
            w, h = frame
            lim_w, lim_h = (w, h) if self.one_past else (w - 1, h - 1)
            bad |= (b[:, 0] > lim_w) | (b[:, 1] > lim_h) | (b[:, 2] < 0) | (b[:, 3] < 0)
        if bad.any():
            self.note("dropped_boxes", source, int(bad.sum()))
            b = b[~bad]
        if frame is not None and len(b):
            clipped = clip_boxes(b, lim_w + 1, lim_h + 1)
            changed = (clipped != b).any(axis=1)
            if changed.any():
                self.note("clipped_boxes", source, int(changed.sum()))
            b = clipped
        return b

    def warn(self) -> None:
        """Issue one DataWarning per kind of problem found, naming up to three files."""
        for kind in self.KINDS:
            n = self.counts[kind]
            if n:
                shown = ", ".join(self.examples[kind])
                more = " ..." if n > len(self.examples[kind]) else ""
                warnings.warn(f"{n} {self.MESSAGES[kind]}: {shown}{more}", DataWarning, stacklevel=3)
