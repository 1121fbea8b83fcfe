"""saolctl.data: datasets (embedded digits, ImageFolder + VOC, CUB, WSOL metadata), transforms, batches.

Imports nothing of the other saolctl packages.
"""

from saolctl.data.datasets import LocalizationDataset, load_eval_image, open_dataset
from saolctl.data.digits import (
    DIGIT_CLASSES, DigitsConfig, DigitsSplit, generate_split, is_digits_folder, write_digits,
)
from saolctl.data.errors import DataError, DataWarning
from saolctl.data.layouts import FORMATS, SPLITS, detect_format, has_split
from saolctl.data.loader import Batch, Loader, SeededSampler, collate_samples, default_workers, make_loader
from saolctl.data.sample import Sample, Skipped
from saolctl.data.transforms import IMAGENET_MEAN, IMAGENET_STD, denormalize, eval_transform, train_transform

__all__ = [
    "DIGIT_CLASSES",
    "FORMATS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "SPLITS",
    "Batch",
    "DataError",
    "DataWarning",
    "DigitsConfig",
    "DigitsSplit",
    "Loader",
    "LocalizationDataset",
    "Sample",
    "SeededSampler",
    "Skipped",
    "collate_samples",
    "default_workers",
    "denormalize",
    "detect_format",
    "eval_transform",
    "generate_split",
    "has_split",
    "is_digits_folder",
    "load_eval_image",
    "make_loader",
    "open_dataset",
    "train_transform",
    "write_digits",
]
