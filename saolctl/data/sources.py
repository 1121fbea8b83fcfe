"""Where raw samples come from: image files listed by a SampleIndex, or generated digits in memory."""

from __future__ import annotations

from typing import Protocol

import numpy as np
from PIL import Image

from saolctl.data.digits import DigitsSplit
from saolctl.data.images import decode_mask, decode_rgb
from saolctl.data.index import EMPTY_BOXES, SampleIndex
from saolctl.data.sample import Sample
from saolctl.data.transforms import resize_nearest


class SampleSource(Protocol):
    """Random access to raw samples (original image size, ground truth in the original frame)."""

    labels: np.ndarray  # (N,) int64

    def __len__(self) -> int: ...

    def path(self, i: int) -> str: ...

    def read(self, i: int) -> Sample: ...


def _union_masks(paths: tuple[str, ...]) -> np.ndarray | None:
    """Decode instance masks and unite them (resized nearest to the first one's size if they differ)."""
    union: np.ndarray | None = None
    for p in paths:
        m = decode_mask(p)
        if union is None:
            union = m.copy()
        else:
            union |= resize_nearest(m, (union.shape[1], union.shape[0]))
    return union


class FileSamples:
    """Samples decoded from image (and mask) files listed by a SampleIndex."""

    def __init__(self, index: SampleIndex, *, load_targets: bool) -> None:
        self.index = index
        self.labels = index.labels
        self.load_targets = load_targets

    def __len__(self) -> int:
        return len(self.index)

    def path(self, i: int) -> str:
        """Return the image file of sample i."""
        return self.index.paths[i]

    def read(self, i: int) -> Sample:
        """Decode sample i; decoding errors propagate to the caller."""
        idx = self.index
        image = decode_rgb(idx.paths[i])
        boxes, frame, mask, ignore = EMPTY_BOXES, image.size, None, None
        if self.load_targets:
            if idx.boxes is not None:
                boxes = idx.boxes[i]
            if idx.frames is not None and idx.frames[i] is not None:
                frame = idx.frames[i]
            if idx.mask_paths is not None and idx.mask_paths[i]:
                mask = _union_masks(idx.mask_paths[i])
                if idx.ignore_paths is not None and idx.ignore_paths[i]:
                    ignore = decode_mask(idx.ignore_paths[i])
        return Sample(image, int(idx.labels[i]), boxes, frame, mask, ignore, image.size, i, idx.paths[i])


class DigitsSamples:
    """Samples of a generated digits split, held in memory."""

    def __init__(self, data: DigitsSplit, *, load_targets: bool) -> None:
        self.data = data
        self.labels = data.labels
        self.load_targets = load_targets

    def __len__(self) -> int:
        return len(self.data.labels)

    def path(self, i: int) -> str:
        """Return the pseudo path "digits:<i>"."""
        return f"digits:{i}"

    def read(self, i: int) -> Sample:
        """Return sample i as a PIL image with its box and mask."""
        d = self.data
        image = Image.fromarray(d.images[i])
        s = d.images.shape[1]
        boxes = d.boxes[i : i + 1] if self.load_targets else EMPTY_BOXES
        mask = d.masks[i] if self.load_targets else None
        return Sample(image, int(d.labels[i]), boxes, (s, s), mask, None, (s, s), i, self.path(i))
