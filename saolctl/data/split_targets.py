"""The ground truth of a split without its pixels: image ids, labels, GT boxes and masks, at any map size.

Scoring saved maps needs no image: boxes and sizes come from the layout's metadata (an image's header is
read only where the layout has no sizes file), masks from their files (or memory for the embedded digits).
Image ids follow wsolevaluation's convention: the path of the image under the layout's image root —
``metadata/<split>/image_ids.txt`` as written (wsol), the path under ``images/`` (cub), the path under
``ROOT`` such as ``val/dog/1.jpg`` (imagefolder), and ``<split>/<i:05d>.png`` for the embedded digits, the
ids ``saolctl digits --out`` writes, so the in-memory and the written digits share their ids.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from saolctl.data.boxes import resize_boxes
from saolctl.data.digits import DIGIT_CLASSES, DigitsConfig, generate_split
from saolctl.data.errors import DataError
from saolctl.data.images import DECODE_ERRORS, decode_mask, describe_error
from saolctl.data.index import SampleIndex
from saolctl.data.layouts import FORMATS, SPLITS, detect_format, read_index
from saolctl.data.sources import DigitsSamples, FileSamples
from saolctl.data.transforms import resize_nearest

if TYPE_CHECKING:
    from saolctl.data.datasets import LocalizationDataset


def digits_image_id(split: str, i: int) -> str:
    """Return the image id of the i-th image of an embedded digits split (as ``write_digits`` names it)."""
    return f"{split}/{i:05d}.png"


def image_ids_of(index: SampleIndex) -> list[str]:
    """Return the wsolevaluation-style image id of every image of a split read from disk."""
    if index.format == "wsol":
        ids_file = index.root / "metadata" / index.split / "image_ids.txt"
        ids = [line for line in ids_file.read_text().splitlines() if line.strip()]  # as read_wsol reads them
        if len(ids) != len(index):
            raise DataError(f"{ids_file} changed while it was read")
        return ids
    base = index.root / "images" if index.format == "cub" else index.root
    return [Path(p).relative_to(base).as_posix() for p in index.paths]


def dataset_image_ids(ds: "LocalizationDataset") -> list[str]:
    """Return the image id of every sample of an opened dataset, in its order (what ``--save-maps`` names)."""
    if isinstance(ds.source, DigitsSamples):
        return [digits_image_id(str(ds.info["split"]), i) for i in range(len(ds))]
    if isinstance(ds.source, FileSamples):
        return image_ids_of(ds.source.index)
    raise TypeError(f"no image ids for a {type(ds.source).__name__} source")


@dataclass(frozen=True)
class ImageTargets:
    """One image's ground truth in its original frame (plain values: it travels to scoring processes)."""

    image_id: str
    label: int
    boxes: np.ndarray  # (n, 4) int64 inclusive x0y0x1y1 in ``frame``; (0, 4) = no box (not localized)
    frame: tuple[int, int] | None  # (w, h) the boxes refer to; None only for an image without boxes
    mask_paths: tuple[str, ...] = ()  # instance mask files (united)
    ignore_path: str | None = None
    mask: np.ndarray | None = None  # (h, w) bool object pixels held in memory (embedded digits)

    @property
    def has_mask(self) -> bool:
        """Return whether the image takes part in PxAP."""
        return self.mask is not None or bool(self.mask_paths)

    def boxes_at(self, size: tuple[int, int]) -> np.ndarray:
        """Return the GT boxes (n, 4) resized to a map of (w, h) = size, as the reference resizes them to 224."""
        if not len(self.boxes):
            return self.boxes
        assert self.frame is not None  # checked when the split was opened
        return resize_boxes(self.boxes, self.frame, size)

    def masks_at(self, size: tuple[int, int]) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Return (object, ignore) masks (H, W) bool resized nearest to (w, h) = size; (None, None) without mask."""
        if not self.has_mask:
            return None, None
        try:
            if self.mask is not None:
                obj = resize_nearest(self.mask, size)
            else:  # each instance resized on its own, then united, as the reference's get_mask
                obj = np.zeros((size[1], size[0]), bool)
                for path in self.mask_paths:
                    obj |= resize_nearest(decode_mask(path), size)
            ignore = None if self.ignore_path is None else resize_nearest(decode_mask(self.ignore_path), size)
        except DECODE_ERRORS as err:
            raise DataError(f"cannot read the mask of {self.image_id}: {describe_error(err)}") from None
        return obj, ignore


@dataclass(frozen=True)
class SplitTargets:
    """Every image of a split with its ground truth, in the split's order."""

    source: str
    format: str
    split: str
    class_names: list[str]
    images: list[ImageTargets]

    def __len__(self) -> int:
        return len(self.images)

    @property
    def ids(self) -> list[str]:
        """Return the image ids in order."""
        return [t.image_id for t in self.images]

    @property
    def has_boxes(self) -> bool:
        """Return whether any image has a GT box."""
        return any(len(t.boxes) for t in self.images)

    @property
    def has_masks(self) -> bool:
        """Return whether any image has a GT mask."""
        return any(t.has_mask for t in self.images)


def _digits_targets(split: str, config: DigitsConfig, seed: int) -> SplitTargets:
    """Return the ground truth of an embedded digits split."""
    data = generate_split(split, config, seed)
    s = data.images.shape[1]
    images = [ImageTargets(digits_image_id(split, i), int(data.labels[i]), data.boxes[i:i + 1].astype(np.int64),
                           (s, s), mask=data.masks[i]) for i in range(len(data.labels))]
    return SplitTargets("digits", "digits", split, list(DIGIT_CLASSES), images)


def _file_targets(index: SampleIndex, source: str) -> SplitTargets:
    """Return the ground truth of a split read from disk (boxes in their frame, mask file paths)."""
    ids = image_ids_of(index)
    images = []
    for i, image_id in enumerate(ids):
        boxes = index.boxes[i] if index.boxes is not None else np.zeros((0, 4), np.int64)
        frame = index.frames[i] if index.frames is not None else None
        if len(boxes) and frame is None:
            raise DataError(f"size of image {image_id} unknown: no sizes file entry and {index.paths[i]} "
                            "cannot be read (its header gives the frame of its boxes)")
        masks = index.mask_paths[i] if index.mask_paths is not None else ()
        ignore = index.ignore_paths[i] if index.ignore_paths is not None else None
        images.append(ImageTargets(image_id, int(index.labels[i]), boxes, frame, tuple(masks), ignore if masks else None))
    return SplitTargets(source, index.format, index.split, list(index.class_names), images)


def open_split_targets(
    source: str | Path, split: str, *, format: str | None = None, boxes_dir: Path | None = None,
    digits: DigitsConfig | None = None, seed: int = 0,
) -> SplitTargets:
    """Read a split's ground truth from any layout saolctl reads, without needing its images where metadata suffices."""
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r} for {source}: use one of {', '.join(SPLITS)}")
    if format is not None and format not in FORMATS:
        raise DataError(f"unknown data format {format!r} for {source}: use one of {', '.join(FORMATS)}")
    fmt = format or detect_format(source)
    if fmt == "digits":
        return _digits_targets(split, digits or DigitsConfig(), seed)
    index = read_index(Path(source), fmt, split, boxes_dir=boxes_dir, load_targets=True, need_images=False)
    return _file_targets(index, str(source))
