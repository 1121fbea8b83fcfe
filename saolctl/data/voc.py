"""Reading PASCAL VOC / ILSVRC box XML files."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from saolctl.data.boxes import voc_to_inclusive
from saolctl.data.errors import DataError


@dataclass(frozen=True)
class VocAnnotation:
    """The boxes of one VOC XML file, converted to 0-based inclusive pixels."""

    size: tuple[int, int] | None  # (w, h) from <size>, None when absent or zero
    names: tuple[str, ...]  # one <name> per box
    boxes: np.ndarray  # (n, 4) int64 inclusive x0y0x1y1, 0-based


def _number(node: ET.Element | None, tag: str, path: Path) -> float:
    """Return the float value of a child element, or raise DataError naming the file."""
    child = None if node is None else node.find(tag)
    if child is None or child.text is None:
        raise DataError(f"malformed VOC XML {path}: missing <{tag}>")
    try:
        return float(child.text.strip())
    except ValueError:
        raise DataError(f"malformed VOC XML {path}: <{tag}> is not a number: {child.text.strip()!r}") from None


def read_voc(path: str | Path) -> VocAnnotation:
    """Parse one VOC XML file; raises DataError naming the file when it is malformed."""
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as err:
        raise DataError(f"malformed VOC XML {path}: {' '.join(str(err).split())}") from None
    size: tuple[int, int] | None = None
    size_node = root.find("size")
    if size_node is not None and size_node.find("width") is not None:
        w, h = int(_number(size_node, "width", path)), int(_number(size_node, "height", path))
        size = (w, h) if w > 0 and h > 0 else None
    names: list[str] = []
    coords: list[list[float]] = []
    for obj in root.iter("object"):
        name_node = obj.find("name")
        bnd = obj.find("bndbox")
        if bnd is None:
            raise DataError(f"malformed VOC XML {path}: <object> without <bndbox>")
        names.append((name_node.text or "").strip() if name_node is not None else "")
        coords.append([_number(bnd, t, path) for t in ("xmin", "ymin", "xmax", "ymax")])
    raw = np.asarray(coords, dtype=np.float64).reshape(-1, 4)
    boxes = voc_to_inclusive(np.floor(raw).astype(np.int64))
    return VocAnnotation(size=size, names=tuple(names), boxes=boxes)
