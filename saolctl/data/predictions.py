"""A file of predicted classes, one per image id, that gives scored maps their classification numbers.

Two forms: CSV lines ``image_id,class`` (the form of the WSOL layout's ``class_labels.txt``; a first line
``image_id,class`` is a header and skipped) or a JSON object ``{"image_id": class, ...}``. A class is an
index or a class name of the dataset. Every image of the split needs one; ids of other images are counted.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from saolctl.data.errors import DataError


@dataclass(frozen=True)
class Predictions:
    """The predicted class of every image of a split, in its order."""

    path: Path
    classes: np.ndarray  # (N,) int64
    unused: int  # entries naming no image of the split


def _raw_entries(path: Path) -> list[tuple[str, object, str]]:
    """Return (image id, class as written, where) of every entry of a CSV or JSON predictions file."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"cannot read predictions {path}: {type(err).__name__}: {err}") from None
    if path.suffix.lower() == ".json":
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as err:
            raise DataError(f"malformed JSON in predictions {path}: {err}") from None
        if not isinstance(obj, dict):
            raise DataError(f"predictions {path} must hold a JSON object {{image_id: class}}")
        return [(str(k), v, f"{path} key {k!r}") for k, v in obj.items()]
    entries = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        image_id, sep, cls = line.rpartition(",")
        if not sep:
            raise DataError(f"malformed line {lineno} in predictions {path}: expected image_id,class")
        if lineno == 1 and (image_id.strip(), cls.strip()) == ("image_id", "class"):
            continue
        entries.append((image_id, cls.strip(), f"{path} line {lineno}"))
    return entries


def _class_index(value: object, names: list[str], where: str) -> int:
    """Return a class index from an index (int or digits) or a class name; DataError naming the entry."""
    if isinstance(value, bool):
        value = None
    if isinstance(value, int) or (isinstance(value, str) and value.isdigit()):
        k = int(value)  # type: ignore[arg-type]
        if 0 <= k < len(names):
            return k
    elif isinstance(value, str) and value in names:
        return names.index(value)
    raise DataError(f"unknown class {value!r} at {where}: give a class index 0..{len(names) - 1} or a class name")


def read_predictions(path: str | Path, image_ids: list[str], class_names: list[str]) -> Predictions:
    """Read a predictions file and return the predicted class of every image id (DataError if one is missing)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"predictions file not found: {path}")
    wanted = {image_id: i for i, image_id in enumerate(image_ids)}
    classes = np.full(len(image_ids), -1, np.int64)
    unused = 0
    for image_id, value, where in _raw_entries(path):
        i = wanted.get(image_id)
        if i is None:
            unused += 1
            continue
        classes[i] = _class_index(value, class_names, where)
    missing = np.flatnonzero(classes < 0)
    if missing.size:
        raise DataError(f"{missing.size} of {len(image_ids)} images have no prediction in {path} "
                        f"(first: {image_ids[int(missing[0])]})")
    return Predictions(path, classes, unused)
