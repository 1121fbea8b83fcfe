"""Reading the dataset layouts users have on disk into a SampleIndex, and telling them apart.

- ``imagefolder``: ``ROOT/<split>/<class>/*`` (+ VOC XML boxes in ``ROOT/boxes/`` or ``boxes_dir``,
  matched by file stem, searched recursively). Class indices = sorted union of the class folders of
  all splits, so train / val / test agree.
- ``cub``: CUB-200-2011 root (or its parent holding ``CUB_200_2011/``). Class index = the 1-based id of
  ``image_class_labels.txt`` minus one. ``train`` = official train images minus ``val``; ``val`` = the
  last ``min(5, n // 2)`` official train images (by image id) of each class; ``test`` = official test.
- ``wsol``: ``ROOT/metadata/<split>/{image_ids,class_labels,image_sizes,localization}.txt``; image ids
  relative to ``ROOT/images/`` (else ``ROOT/``), mask paths relative to ``ROOT/masks/`` (else ``ROOT/``).
  ``localization.txt`` holds boxes (``id,x0,y0,x1,y1``) or masks (``id,mask,ignore``); with masks, boxes
  come from ``localization_boxes.txt`` when present. Class names from ``metadata/class_names.txt``, else
  the image ids' first folder when it is one per class, else the index as text.
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path

import numpy as np

from saolctl.data.boxes import as_box_array, xywh_to_inclusive
from saolctl.data.errors import DataError
from saolctl.data.images import is_image_file
from saolctl.data.index import EMPTY_BOXES, BoxChecker, SampleIndex, header_size
from saolctl.data.voc import read_voc

FORMATS: tuple[str, ...] = ("imagefolder", "cub", "wsol", "digits")
SPLITS: tuple[str, ...] = ("train", "val", "test")
CUB_VAL_PER_CLASS = 5


def _visible_dirs(path: Path) -> list[str]:
    """Return the sorted names of the non-hidden sub-folders of a folder."""
    try:
        return sorted(e.name for e in os.scandir(path) if e.is_dir() and not e.name.startswith("."))
    except OSError:
        return []


def _cub_root(path: Path) -> Path | None:
    """Return the folder holding CUB's images.txt (path itself or path/CUB_200_2011), or None."""
    for cand in (path, path / "CUB_200_2011"):
        if (cand / "images.txt").is_file() and (cand / "image_class_labels.txt").is_file():
            return cand
    return None


def _is_wsol(path: Path) -> bool:
    """True when path/metadata/<split>/image_ids.txt exists for some split."""
    meta = path / "metadata"
    return meta.is_dir() and any((meta / s / "image_ids.txt").is_file() for s in _visible_dirs(meta))


def detect_format(source: str | Path) -> str:
    """Return the layout name of a data source ("digits", "wsol", "cub" or "imagefolder")."""
    if isinstance(source, str) and source == "digits":
        return "digits"
    path = Path(source)
    if not path.exists():
        raise DataError(f"data path not found: {path}")
    if not path.is_dir():
        raise DataError(f"data path is not a folder: {path}")
    if _is_wsol(path):
        return "wsol"
    if _cub_root(path) is not None:
        return "cub"
    if any(_visible_dirs(path / s) for s in SPLITS):
        return "imagefolder"
    raise DataError(
        f"unrecognised dataset layout at {path}: looked for metadata/<split>/image_ids.txt (wsol), "
        "images.txt + image_class_labels.txt (cub), train/<class>/ or val/<class>/ (imagefolder)"
    )


# ---------------------------------------------------------------- ImageFolder + VOC XML


def _list_images(folder: Path) -> list[str]:
    """Return the image files under a folder, recursively, in sorted order."""
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found.extend(os.path.join(dirpath, f) for f in sorted(filenames) if is_image_file(f))
    return found


def _xml_by_stem(boxes_dir: Path) -> dict[str, Path]:
    """Map each XML file stem under a folder (recursively) to its path."""
    return {p.stem: p for p in sorted(boxes_dir.rglob("*.xml"))}


def read_imagefolder(root: Path, split: str, *, boxes_dir: Path | None, load_targets: bool) -> SampleIndex:
    """Read an ImageFolder split, with VOC boxes when load_targets and a boxes folder exist."""
    split_dir = root / split
    if not split_dir.is_dir():
        raise DataError(f"split folder not found: {split_dir}")
    class_names = sorted({c for s in SPLITS for c in _visible_dirs(root / s)})
    split_classes = _visible_dirs(split_dir)
    if not split_classes:
        raise DataError(f"empty split: no class folders in {split_dir}")
    paths: list[str] = []
    labels: list[int] = []
    for name in split_classes:
        files = _list_images(split_dir / name)
        if not files:
            raise DataError(f"class folder has no images: {split_dir / name}")
        paths.extend(files)
        labels.extend([class_names.index(name)] * len(files))
    index = SampleIndex("imagefolder", root, split, class_names, paths, np.asarray(labels, dtype=np.int64))
    if boxes_dir is not None and not Path(boxes_dir).is_dir():
        raise DataError(f"boxes folder not found: {boxes_dir}")
    box_root = Path(boxes_dir) if boxes_dir is not None else root / "boxes"
    if not load_targets or not box_root.is_dir():
        return index
    index.notes.append(f"boxes from VOC XML in {box_root}")
    xml_files = _xml_by_stem(box_root)
    known = set(class_names)
    checker = BoxChecker()
    boxes: list[np.ndarray] = []
    frames: list[tuple[int, int] | None] = []
    for path in paths:
        xml = xml_files.get(Path(path).stem)
        if xml is None:
            boxes.append(EMPTY_BOXES)
            frames.append(None)
            continue
        ann = read_voc(xml)
        unknown = sum(1 for n in ann.names if n not in known)
        if unknown:
            checker.note("unknown_class_boxes", str(xml), unknown)
        frame = ann.size or header_size(path)
        boxes.append(checker.check(ann.boxes, frame, str(xml)))
        frames.append(frame)
    index.boxes, index.frames = boxes, frames
    index.counts.update(checker.counts)
    checker.warn()
    return index


# ---------------------------------------------------------------- CUB-200-2011


def _read_table(path: Path, ncols: int) -> list[list[str]]:
    """Read a whitespace-separated CUB table, checking the column count; DataError naming the file."""
    if not path.is_file():
        raise DataError(f"CUB file not found: {path}")
    rows = []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split(maxsplit=ncols - 1)
        if len(parts) != ncols:
            raise DataError(f"malformed line {lineno} in {path}: expected {ncols} fields")
        rows.append(parts)
    return rows


def _cub_val_ids(ids: list[int], labels: dict[int, int]) -> set[int]:
    """Return the held-out val ids: the last min(5, n // 2) official train ids of each class."""
    by_class: dict[int, list[int]] = defaultdict(list)
    for i in sorted(ids):
        by_class[labels[i]].append(i)
    held: set[int] = set()
    for members in by_class.values():
        k = min(CUB_VAL_PER_CLASS, len(members) // 2)
        held.update(members[len(members) - k :])
    return held


def read_cub(path: Path, split: str, *, load_targets: bool) -> SampleIndex:
    """Read a CUB-200-2011 split (train / val held out of train / test), with boxes when load_targets."""
    root = _cub_root(path)
    if root is None:
        raise DataError(f"not a CUB-200-2011 root (no images.txt + image_class_labels.txt): {path}")
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r} for CUB at {root}: use train, val or test")
    try:
        images = {int(i): p for i, p in _read_table(root / "images.txt", 2)}
        labels = {int(i): int(c) - 1 for i, c in _read_table(root / "image_class_labels.txt", 2)}
        is_train = {int(i): t.strip() == "1" for i, t in _read_table(root / "train_test_split.txt", 2)}
    except ValueError as err:
        raise DataError(f"malformed CUB metadata in {root}: {err}") from None
    classes_file = root / "classes.txt"
    if classes_file.is_file():
        named = {int(i) - 1: n for i, n in _read_table(classes_file, 2)}
        class_names = [named.get(k, str(k)) for k in range(max(named) + 1)]
    else:
        class_names = [str(k) for k in range(max(labels.values()) + 1)]
    train_ids = [i for i in images if is_train.get(i, False)]
    val_ids = _cub_val_ids(train_ids, labels)
    chosen = {
        "train": [i for i in train_ids if i not in val_ids],
        "val": sorted(val_ids),
        "test": [i for i in images if i in is_train and not is_train[i]],
    }[split]
    chosen = sorted(chosen)
    if not chosen:
        raise DataError(f"empty split {split!r} in CUB root {root}")
    image_dir = root / "images"
    paths = [str(image_dir / images[i]) for i in chosen]
    index = SampleIndex("cub", root, split, class_names, paths, np.asarray([labels[i] for i in chosen], np.int64))
    index.notes.append(
        f"CUB has no official val: val = the last {CUB_VAL_PER_CLASS} official train images of each class "
        "(by image id), train = the rest; test = the official test split"
    )
    bb_file = root / "bounding_boxes.txt"
    if not load_targets or not bb_file.is_file():
        return index
    try:
        raw = {int(r[0]): [float(v) for v in r[1:]] for r in _read_table(bb_file, 5)}
    except ValueError as err:
        raise DataError(f"malformed CUB boxes in {bb_file}: {err}") from None
    checker = BoxChecker(one_past=True)
    boxes, frames = [], []
    for i, path in zip(chosen, paths):
        frame = header_size(path)
        if i in raw:
            b = as_box_array(xywh_to_inclusive(np.asarray(raw[i])))  # truncation of x, y, x + w, y + h
            boxes.append(checker.check(b, frame, f"{bb_file}:{i}"))
        else:
            boxes.append(EMPTY_BOXES)
        frames.append(frame)
    index.boxes, index.frames = boxes, frames
    index.counts.update(checker.counts)
    checker.warn()
    return index


# ---------------------------------------------------------------- WSOL metadata


def _read_csv(path: Path) -> list[list[str]]:
    """Read a comma-separated metadata file (no header); blank lines are skipped."""
    return [line.split(",") for line in path.read_text().splitlines() if line.strip()]


def _find_root(candidates: list[Path], relative: str, what: str, listed_in: Path) -> Path:
    """Return the first candidate root under which a relative path exists, or raise DataError."""
    for cand in candidates:
        if (cand / relative).exists():
            return cand
    looked = " or ".join(str(c) for c in candidates)
    raise DataError(f"{what} listed in {listed_in} not found under {looked} (first: {relative})")


def _wsol_class_names(meta: Path, num_classes: int) -> list[str]:
    """Return class names: metadata/class_names.txt, else one first folder per class, else indices."""
    names_file = meta / "class_names.txt"
    if names_file.is_file():
        names = [n.strip() for n in names_file.read_text().splitlines() if n.strip()]
        if len(names) < num_classes:
            raise DataError(f"{names_file} lists {len(names)} names for {num_classes} classes")
        return names
    folders: dict[int, set[str]] = defaultdict(set)
    for split_dir in (meta / s for s in _visible_dirs(meta)):
        labels_file = split_dir / "class_labels.txt"
        if labels_file.is_file():
            for row in _read_csv(labels_file):
                folders[int(row[1])].add(row[0].split("/")[0] if "/" in row[0] else "")
    names = [next(iter(folders[k])) if len(folders[k]) == 1 else "" for k in range(num_classes)]
    if all(names) and len(set(names)) == num_classes:
        return names
    return [str(k) for k in range(num_classes)]


def _wsol_num_classes(meta: Path) -> int:
    """Return 1 + the largest class label over every split's class_labels.txt."""
    top = -1
    for s in _visible_dirs(meta):
        f = meta / s / "class_labels.txt"
        if f.is_file():
            top = max([top] + [int(r[1]) for r in _read_csv(f)])
    return top + 1


def read_wsol(root: Path, split: str, *, load_targets: bool, need_images: bool = True) -> SampleIndex:
    """Read a split of the WSOL metadata layout, with boxes and/or masks when load_targets.

    ``need_images=False`` (scoring saved maps): the images may be absent; their root is then ``ROOT/images``
    when that folder exists, else ``ROOT``, and sizes come from ``image_sizes.txt`` or a header if present.
    """
    meta = root / "metadata"
    split_meta = meta / split
    ids_file = split_meta / "image_ids.txt"
    if not ids_file.is_file():
        raise DataError(f"split not found: {ids_file}")
    image_ids = [line for line in ids_file.read_text().splitlines() if line.strip()]
    if not image_ids:
        raise DataError(f"empty split: no image ids in {ids_file}")
    try:
        labels_file = split_meta / "class_labels.txt"
        if not labels_file.is_file():
            raise DataError(f"class labels not found: {labels_file}")
        label_of = {r[0]: int(r[1]) for r in _read_csv(labels_file)}
        num_classes = _wsol_num_classes(meta)
    except (ValueError, IndexError) as err:
        raise DataError(f"malformed class labels in {split_meta}: {err}") from None
    missing = [i for i in image_ids if i not in label_of]
    if missing:
        raise DataError(f"{len(missing)} image ids have no class label in {labels_file} (first: {missing[0]})")
    roots = [root / "images", root]
    if need_images or any((r / image_ids[0]).exists() for r in roots):
        image_root = _find_root(roots, image_ids[0], "images", ids_file)
    else:
        image_root = roots[0] if roots[0].is_dir() else root
    paths = [str(image_root / i) for i in image_ids]
    labels = np.asarray([label_of[i] for i in image_ids], dtype=np.int64)
    index = SampleIndex("wsol", root, split, _wsol_class_names(meta, num_classes), paths, labels)
    index.notes.append(f"images under {image_root}")
    if not load_targets:
        return index
    sizes_file = split_meta / "image_sizes.txt"
    try:
        size_of = {r[0]: (int(r[1]), int(r[2])) for r in _read_csv(sizes_file)} if sizes_file.is_file() else {}
    except (ValueError, IndexError) as err:
        raise DataError(f"malformed image sizes in {sizes_file}: {err}") from None
    frames = [size_of.get(i) or header_size(p) for i, p in zip(image_ids, paths)]
    box_rows: list[list[str]] = []
    mask_rows: list[list[str]] = []
    for name in ("localization.txt", "localization_boxes.txt"):
        f = split_meta / name
        if not f.is_file():
            continue
        rows = _read_csv(f)
        widths = {len(r) for r in rows}
        if widths == {5}:
            box_rows = box_rows or rows
        elif widths == {3} and name == "localization.txt":
            mask_rows = rows
        elif rows:
            raise DataError(f"malformed localization file {f}: expected id,x0,y0,x1,y1 or id,mask,ignore lines")
    if box_rows:
        checker = BoxChecker(one_past=True)
        per_image: dict[str, list[list[int]]] = defaultdict(list)
        try:
            for r in box_rows:
                per_image[r[0]].append([int(float(v)) for v in r[1:]])
        except ValueError as err:
            raise DataError(f"malformed box line in {split_meta}: {err}") from None
        index.boxes = [
            checker.check(np.asarray(per_image[i], np.int64), fr, f"{split_meta}:{i}") if i in per_image else EMPTY_BOXES
            for i, fr in zip(image_ids, frames)
        ]
        index.frames = frames
        index.counts.update(checker.counts)
        checker.warn()
    if mask_rows:
        masks: dict[str, list[str]] = defaultdict(list)
        ignores: dict[str, str] = {}
        for image_id, mask_path, ignore_path in mask_rows:
            masks[image_id].append(mask_path)
            if ignore_path:
                ignores[image_id] = ignore_path
        mask_root = _find_root([root / "masks", root], mask_rows[0][1], "masks", split_meta / "localization.txt")
        index.mask_paths = [tuple(str(mask_root / m) for m in masks.get(i, [])) for i in image_ids]
        index.ignore_paths = [str(mask_root / ignores[i]) if i in ignores else None for i in image_ids]
        index.notes.append(f"masks under {mask_root}")
        if index.frames is None:
            index.frames = frames
    return index


def read_index(
    path: Path, fmt: str, split: str, *, boxes_dir: Path | None = None, load_targets: bool = True,
    need_images: bool = True,
) -> SampleIndex:
    """Read a split of a dataset on disk in the given layout (``need_images=False``: WSOL images may be absent)."""
    if fmt == "imagefolder":
        return read_imagefolder(path, split, boxes_dir=boxes_dir, load_targets=load_targets)
    if fmt == "cub":
        return read_cub(path, split, load_targets=load_targets)
    if fmt == "wsol":
        return read_wsol(path, split, load_targets=load_targets, need_images=need_images)
    raise DataError(f"unknown data format {fmt!r} for {path}: use one of {', '.join(FORMATS)}")


def has_split(source: str | Path, split: str, format: str | None = None) -> bool:
    """Return whether a data source has a split at all (it may still fail to load: that is an error, not absence)."""
    fmt = format or detect_format(source)
    if fmt in ("digits", "cub"):
        return split in SPLITS  # the embedded digits and CUB's official split (val carved from train) have all three
    path = Path(source)
    if fmt == "wsol":
        return (path / "metadata" / split / "image_ids.txt").is_file()
    return (path / split).is_dir()
