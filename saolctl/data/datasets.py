"""The dataset object the engine iterates, and the functions that open one or load a single image."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from saolctl.data.digits import DIGIT_CLASSES, DigitsConfig, generate_split
from saolctl.data.errors import DataError
from saolctl.data.images import DECODE_ERRORS, describe_error, read_rgb
from saolctl.data.index import SampleIndex
from saolctl.data.layouts import FORMATS, SPLITS, detect_format, read_index
from saolctl.data.sample import Sample, Skipped
from saolctl.data.sources import DigitsSamples, FileSamples, SampleSource
from saolctl.data.transforms import Compose, eval_transform, train_transform


class LocalizationDataset(Dataset):
    """Images with labels and (eval mode) boxes / masks, transformed for training or evaluation.

    Indexing with an int uses a fixed per-index augmentation seed; the loader's sampler passes
    (index, seed) pairs instead. An unreadable image gives a Skipped marker (or DataError when strict).
    """

    def __init__(
        self,
        source: SampleSource,
        transform: Compose,
        *,
        class_names: list[str],
        img_size: int,
        train: bool,
        strict_images: bool,
        seed: int,
        info: dict[str, Any],
    ) -> None:
        self.source = source
        self.transform = transform
        self.class_names = list(class_names)
        self.img_size = int(img_size)
        self.train = train
        self.strict_images = strict_images
        self.seed = int(seed)
        self.info = info
        self.skipped: dict[str, str] = {}  # path -> reason, filled by the loader in the main process

    @property
    def labels(self) -> np.ndarray:
        """(N,) int64 class index of every sample."""
        return self.source.labels

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.class_names)

    @property
    def has_boxes(self) -> bool:
        """True when samples come with boxes (eval mode and some image has at least one)."""
        return bool(self.info.get("images_with_boxes", 0))

    @property
    def has_masks(self) -> bool:
        """True when samples come with masks (eval mode and some image has one)."""
        return bool(self.info.get("images_with_masks", 0))

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, key: int | tuple[int, int]) -> Sample | Skipped:
        index, aug_seed = key if isinstance(key, tuple) else (int(key), None)
        rng = np.random.default_rng([self.seed, index] if aug_seed is None else [aug_seed])
        try:
            raw = self.source.read(index)
        except DECODE_ERRORS as err:
            path = self.source.path(index)
            if self.strict_images:
                raise DataError(f"cannot read image {path}: {describe_error(err)}") from err
            return Skipped(index, path, describe_error(err), self.img_size)
        return self.transform(raw, rng)

    def record_skip(self, path: str, reason: str) -> None:
        """Remember an image the loader skipped (shown by describe())."""
        self.skipped.setdefault(path, reason)

    def describe(self) -> dict[str, Any]:
        """Return the counts and notes of this dataset split (images, classes, boxes, problems)."""
        return {**self.info, "skipped_images": len(self.skipped), "skipped_files": sorted(self.skipped)}


def _file_info(index: SampleIndex) -> dict[str, Any]:
    """Return describe() counts for a file-based split."""
    n_boxes = [len(b) for b in index.boxes] if index.boxes is not None else [0] * len(index)
    with_boxes = sum(1 for n in n_boxes if n)
    with_masks = sum(1 for m in index.mask_paths if m) if index.mask_paths is not None else 0
    return {
        "format": index.format,
        "root": str(index.root),
        "split": index.split,
        "images": len(index),
        "classes": len(index.class_names),
        "boxes": int(sum(n_boxes)),
        "images_with_boxes": with_boxes,
        "images_without_boxes": len(index) - with_boxes,
        "images_with_masks": with_masks,
        "clipped_boxes": index.counts.get("clipped_boxes", 0),
        "dropped_boxes": index.counts.get("dropped_boxes", 0),
        "unknown_class_boxes": index.counts.get("unknown_class_boxes", 0),
        "per_class": np.bincount(index.labels, minlength=len(index.class_names)).tolist(),
        "notes": list(index.notes),
    }


def _open_digits(split: str, train: bool, config: DigitsConfig, seed: int) -> tuple[SampleSource, dict[str, Any]]:
    """Generate a digits split and its describe() counts."""
    data = generate_split(split, config, seed)
    n = len(data.labels)
    with_targets = 0 if train else n
    info = {
        "format": "digits",
        "root": "digits",
        "split": split,
        "images": n,
        "classes": len(DIGIT_CLASSES),
        "boxes": with_targets,
        "images_with_boxes": with_targets,
        "images_without_boxes": n - with_targets,
        "images_with_masks": with_targets,
        "clipped_boxes": 0,
        "dropped_boxes": 0,
        "unknown_class_boxes": 0,
        "per_class": np.bincount(data.labels, minlength=10).tolist(),
        "source_digits": int(len(np.unique(data.source_ids))),
        "generation_seconds": round(data.seconds, 3),
        "notes": [f"generated from scikit-learn digits, seed {seed}, {config.image_size} px"],
    }
    return DigitsSamples(data, load_targets=not train), info


def open_dataset(
    source: str | Path,
    split: str,
    *,
    train: bool,
    img_size: int,
    format: str | None = None,
    boxes_dir: Path | None = None,
    strict_images: bool = False,
    seed: int = 0,
    digits: DigitsConfig | None = None,
) -> LocalizationDataset:
    """Open a split of the embedded digits or of a dataset on disk, with training or eval transforms."""
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r} for {source}: use one of {', '.join(SPLITS)}")
    if format is not None and format not in FORMATS:
        raise DataError(f"unknown data format {format!r} for {source}: use one of {', '.join(FORMATS)}")
    if img_size < 1:
        raise DataError(f"img_size must be positive, got {img_size}")
    fmt = format or detect_format(source)
    if fmt == "digits":
        config = digits or DigitsConfig()
        samples, info = _open_digits(split, train, config, seed)
        class_names = list(DIGIT_CLASSES)
        flip = False  # a mirrored digit is not the same digit
    else:
        path = Path(source)
        if not path.exists():
            raise DataError(f"data path not found: {path}")
        index = read_index(path, fmt, split, boxes_dir=boxes_dir, load_targets=not train)
        samples, info = FileSamples(index, load_targets=not train), _file_info(index)
        class_names = index.class_names
        flip = True
    transform = train_transform(img_size, flip=flip) if train else eval_transform(img_size)
    info.update(img_size=int(img_size), train=train, transform=repr(transform))
    return LocalizationDataset(
        samples,
        transform,
        class_names=class_names,
        img_size=img_size,
        train=train,
        strict_images=strict_images,
        seed=seed,
        info=info,
    )


def load_eval_image(path: str | Path, img_size: int, *, upright: bool = False) -> tuple[torch.Tensor, tuple[int, int]]:
    """Load one image file with the eval transform: (3, S, S) normalised tensor and its (w, h) as read.

    ``upright`` applies the file's EXIF orientation first (a user's photo), so (w, h) is the upright frame.
    """
    image = read_rgb(path, upright=upright)
    size = image.size
    sample = Sample(image, -1, np.zeros((0, 4), np.int64), size, None, None, size, 0, str(path))
    return eval_transform(img_size)(sample).image, size  # type: ignore[return-value]
