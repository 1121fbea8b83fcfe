"""Box geometry, documented once.

Convention used everywhere in saolctl: a box is ``(x0, y0, x1, y1)`` in integer pixel indices,
**inclusive** on both ends, 0-based, x along columns and y along rows. Its area is
``(x1 - x0 + 1) * (y1 - y0 + 1)``; a single pixel at (x, y) is ``(x, y, x, y)`` with area 1.
This is the convention of the WSOL reference protocol (clovaai/wsolevaluation).

Conversions from other conventions:
- PASCAL VOC XML: 1-based inclusive ``xmin, ymin, xmax, ymax`` -> subtract 1 from every coordinate.
- CUB ``x y w h`` (floats): ``x0 = x, y0 = y, x1 = x + w, y1 = y + h`` (as the protocol does; no -1).

Ground-truth boxes given in original pixels are rescaled to the evaluated S x S size by truncation,
``int(v * S / L)`` computed in float64 (multiply first, then divide), L the original width for x and
height for y.
"""

from __future__ import annotations

import numpy as np


def as_box_array(boxes: object) -> np.ndarray:
    """Return boxes as an int64 array of shape (n, 4); an empty input gives (0, 4)."""
    arr = np.asarray(boxes, dtype=np.int64)
    if arr.size == 0:
        return np.zeros((0, 4), dtype=np.int64)
    return arr.reshape(-1, 4)


def box_area(boxes: np.ndarray) -> np.ndarray:
    """Return the inclusive pixel area of each (n, 4) box."""
    b = np.asarray(boxes, dtype=np.int64).reshape(-1, 4)
    return (b[:, 2] - b[:, 0] + 1) * (b[:, 3] - b[:, 1] + 1)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Return the (n, m) float64 IoU matrix of inclusive boxes a (n, 4) and b (m, 4)."""
    a = np.asarray(a, dtype=np.int64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.int64).reshape(-1, 4)
    iw = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]) + 1
    ih = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]) + 1
    inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
    union = box_area(a)[:, None] + box_area(b)[None, :] - inter
    return inter.astype(np.float64) / union.astype(np.float64)


def resize_boxes(boxes: np.ndarray, orig_wh: tuple[int, int], size: tuple[int, int] | int) -> np.ndarray:
    """Rescale inclusive boxes from an original (W, H) image to an evaluated (W', H') size by truncation."""
    w, h = int(orig_wh[0]), int(orig_wh[1])
    if isinstance(size, int):
        out_w = out_h = size
    else:
        out_w, out_h = int(size[0]), int(size[1])
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    out = np.empty(b.shape, dtype=np.int64)
    # multiply first, then divide, in float64, then truncate: the reference's exact order
    out[:, 0::2] = (b[:, 0::2] * float(out_w) / float(w)).astype(np.int64)
    out[:, 1::2] = (b[:, 1::2] * float(out_h) / float(h)).astype(np.int64)
    return out


def clip_boxes(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    """Clip inclusive boxes into an image of the given width and height."""
    b = as_box_array(boxes).copy()
    b[:, 0::2] = np.clip(b[:, 0::2], 0, width - 1)
    b[:, 1::2] = np.clip(b[:, 1::2], 0, height - 1)
    return b


def is_degenerate(boxes: np.ndarray) -> np.ndarray:
    """Return a bool mask of boxes with x1 < x0 or y1 < y0 (no pixel inside)."""
    b = as_box_array(boxes)
    return (b[:, 2] < b[:, 0]) | (b[:, 3] < b[:, 1])


def voc_to_inclusive(boxes: np.ndarray) -> np.ndarray:
    """Convert 1-based inclusive PASCAL VOC boxes to 0-based inclusive boxes."""
    return as_box_array(boxes) - 1


def xywh_to_inclusive(xywh: np.ndarray) -> np.ndarray:
    """Convert CUB-style (x, y, w, h) float boxes to (x, y, x + w, y + h) as the protocol does."""
    a = np.asarray(xywh, dtype=np.float64).reshape(-1, 4)
    return np.stack([a[:, 0], a[:, 1], a[:, 0] + a[:, 2], a[:, 1] + a[:, 3]], axis=1)


def mask_to_box(mask: np.ndarray) -> np.ndarray:
    """Return the tight inclusive box (1, 4) of a boolean mask, or (0, 4) when it is empty."""
    ys, xs = np.nonzero(np.asarray(mask))
    if len(xs) == 0:
        return np.zeros((0, 4), dtype=np.int64)
    return np.array([[xs.min(), ys.min(), xs.max(), ys.max()]], dtype=np.int64)
