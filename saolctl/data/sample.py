"""One sample on its way from a file (or the embedded generator) to a batch."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image


@dataclass(frozen=True)
class Sample:
    """An image with its label and ground truth, in one coordinate frame."""

    image: Image.Image | torch.Tensor  # PIL RGB before ToNormalizedTensor, (3, H, W) float32 after
    label: int
    boxes: np.ndarray  # (n, 4) int64 inclusive x0y0x1y1 in box_frame pixels; (0, 4) when none
    box_frame: tuple[int, int]  # (w, h) of the frame the boxes are expressed in
    mask: np.ndarray | None  # (H, W) bool object pixels, or None
    ignore: np.ndarray | None  # (H, W) bool ignored pixels (never object), or None
    orig_size: tuple[int, int]  # (w, h) of the decoded original image
    index: int  # position in the dataset
    path: str  # file path, or "digits:<i>"


@dataclass(frozen=True)
class Skipped:
    """Marker for a sample whose image could not be read; the collate function drops it."""

    index: int
    path: str
    reason: str
    img_size: int  # S, so that a batch of nothing but skips still has its image shape
