"""The embedded default dataset: real handwritten digits on cluttered backgrounds.

Built in memory from the 1,797 real 8x8 UCI digits scikit-learn ships (``load_digits``; no download).
Each image holds one digit, scaled to a random size and placed at a random position, over a textured,
noisy, tinted background strewn with *fragments* of other digits (the strokes of a digit under a soft
round window around one inked point, so a piece of a stroke, never a whole digit; drawn at the same
scale range, half of them in the target's own colour), so that a class map has something to be wrong
about. The label is the digit; the ground truth is its pixel mask and
the tight box of that mask. Source digits are split once (seeded) into disjoint train / val / test
pools; each split's images (targets and fragments) are drawn only from its own pool, with the ten
classes equally often (n // 10 or one more each).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, fields
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from saolctl.data.boxes import mask_to_box
from saolctl.data.errors import DataError

DIGIT_CLASSES: list[str] = [str(d) for d in range(10)]
MARKER = "saolctl_digits.json"  # written into metadata/ by write_digits: the folder holds the embedded digits
_SPLIT_IDS = {"train": 0, "val": 1, "test": 2}


@dataclass(frozen=True)
class DigitsConfig:
    """Sizes and appearance of the embedded digits dataset."""

    image_size: int = 64  # side of the square RGB images
    train_size: int = 4000  # images per split
    val_size: int = 500
    test_size: int = 1000
    source_split: tuple[float, float, float] = (0.6, 0.15, 0.25)  # share of the 1,797 source digits per split
    digit_scale: tuple[float, float] = (0.45, 0.8)  # digit side / image side
    aspect_jitter: float = 0.25  # log-uniform width/height ratio range is exp(+-jitter)
    fragments: tuple[int, int] = (2, 4)  # number of clutter fragments per image (inclusive)
    fragment_extent: tuple[float, float] = (0.13, 0.22)  # std of a fragment's soft window / its digit side
    same_colour_fragments: float = 0.5  # probability a fragment takes the digit's own colour
    texture: float = 0.12  # amplitude of the low-frequency background texture
    noise: float = 0.05  # std of the per-pixel (uniform) noise
    min_contrast: float = 0.5  # minimum luminance gap between digit and background colour
    mask_threshold: float = 0.5  # stroke opacity above which a pixel is object

    @classmethod
    def from_dict(cls, values: Any) -> "DigitsConfig":
        """Build a validated config from a table (e.g. a config file's [digits]); unknown keys fail in one line."""
        if not isinstance(values, dict):
            raise DataError(f"digits settings must be a table of keys, got {values!r}")
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise DataError(f"unknown digits key(s) {', '.join(unknown)}; valid: {', '.join(known)}")
        kw = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
        for k, v in kw.items():
            default = getattr(cls, k)
            if isinstance(default, tuple):
                ok = isinstance(v, tuple) and len(v) == len(default) and all(
                    isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)
            elif isinstance(default, int):
                ok = isinstance(v, int) and not isinstance(v, bool)
            else:
                ok = isinstance(v, (int, float)) and not isinstance(v, bool)
            if not ok:
                raise DataError(f"digits {k} must be like {default!r}, got {v!r}")
        config = cls(**kw)
        config.validate()
        return config

    def size_of(self, split: str) -> int:
        """Return the number of images of a split."""
        return {"train": self.train_size, "val": self.val_size, "test": self.test_size}[split]

    def validate(self) -> None:
        """Raise DataError when a setting is out of range."""
        lo, hi = self.digit_scale
        if self.image_size < 16:
            raise DataError(f"digits image_size must be >= 16, got {self.image_size}")
        if not 0.0 < lo <= hi <= 1.0:
            raise DataError(f"digits digit_scale must satisfy 0 < lo <= hi <= 1, got {self.digit_scale}")
        if min(self.train_size, self.val_size, self.test_size) < 1:
            raise DataError("digits split sizes must be positive")
        if abs(sum(self.source_split) - 1.0) > 1e-6 or min(self.source_split) <= 0:
            raise DataError(f"digits source_split must be positive and sum to 1, got {self.source_split}")
        a, b = self.fragment_extent
        if not 0.0 < a <= b:
            raise DataError(f"digits fragment_extent must satisfy 0 < lo <= hi, got {self.fragment_extent}")


@dataclass(frozen=True)
class DigitsSplit:
    """One generated split, all arrays in memory."""

    images: np.ndarray  # (N, S, S, 3) uint8
    labels: np.ndarray  # (N,) int64
    boxes: np.ndarray  # (N, 4) int64 tight inclusive box of each mask
    masks: np.ndarray  # (N, S, S) bool object pixels
    source_ids: np.ndarray  # (N,) int64 index of the target digit in load_digits()
    seconds: float  # generation time


@lru_cache(maxsize=1)
def _source_digits() -> tuple[np.ndarray, np.ndarray]:
    """Return scikit-learn's digits as (1797, 8, 8) float32 in [0, 1] and (1797,) int64 labels."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = (np.asarray(bunch.images, dtype=np.float32) / 16.0).clip(0.0, 1.0)
    images.setflags(write=False)
    labels = np.asarray(bunch.target, dtype=np.int64)
    labels.setflags(write=False)
    return images, labels


def source_pools(config: DigitsConfig, seed: int) -> dict[str, np.ndarray]:
    """Return the disjoint source-digit ids of each split (a seeded partition of all 1,797)."""
    _, labels = _source_digits()
    order = np.random.default_rng([seed, 7919]).permutation(len(labels))
    n_train = int(round(config.source_split[0] * len(order)))
    n_val = int(round(config.source_split[1] * len(order)))
    return {
        "train": np.sort(order[:n_train]),
        "val": np.sort(order[n_train : n_train + n_val]),
        "test": np.sort(order[n_train + n_val :]),
    }


def _luminance(rgb: np.ndarray) -> np.ndarray:
    """Return the Rec. 601 luminance of (..., 3) colours in [0, 1]."""
    return rgb @ np.array([0.299, 0.587, 0.114])


def _colours(rng: np.random.Generator, min_contrast: float) -> tuple[np.ndarray, np.ndarray]:
    """Draw a (background, ink) colour pair whose luminances differ by at least min_contrast."""
    pairs = rng.random((16, 2, 3))
    gaps = np.abs(_luminance(pairs[:, 0]) - _luminance(pairs[:, 1]))
    ok = np.flatnonzero(gaps >= min_contrast)
    if not len(ok):
        return np.full(3, 0.1), np.full(3, 0.9)
    return pairs[ok[0], 0], pairs[ok[0], 1]


@lru_cache(maxsize=512)
def _cubic_matrix(n_in: int, n_out: int) -> np.ndarray:
    """Return the (n_out, n_in) bicubic (a = -0.5) upsampling matrix, pixel centres aligned, edges clamped."""
    centres = (np.arange(n_out) + 0.5) * n_in / n_out - 0.5
    base = np.floor(centres).astype(np.int64)
    m = np.zeros((n_out, n_in), dtype=np.float32)
    for k in range(-1, 3):
        d = np.abs(centres - (base + k))
        w = np.where(d <= 1, (1.5 * d - 2.5) * d * d + 1, np.where(d < 2, ((-0.5 * d + 2.5) * d - 4) * d + 2, 0.0))
        np.add.at(m, (np.arange(n_out), np.clip(base + k, 0, n_in - 1)), w)
    m.setflags(write=False)
    return m


def _upsample(grid: np.ndarray, w: int, h: int) -> np.ndarray:
    """Bicubically resize a (rows, cols) grid to (h, w)."""
    return _cubic_matrix(grid.shape[0], h) @ grid @ _cubic_matrix(grid.shape[1], w).T


def _stroke(cells: np.ndarray, w: int, h: int) -> np.ndarray:
    """Upsample an 8x8 intensity grid to an (h, w) stroke opacity map in [0, 1]."""
    return np.clip((_upsample(cells, w, h) - 0.2) / 0.4, 0.0, 1.0)  # faint cells fade out, strokes saturate


def _fragment(cells: np.ndarray, w: int, h: int, extent: float, rng: np.random.Generator) -> np.ndarray:
    """Return the opacity of a piece of a digit's strokes: the strokes under a soft window around an inked cell."""
    full = _stroke(cells, w, h)
    rows, cols = np.nonzero(cells > 0.5)
    if not len(rows):
        return full
    k = int(rng.integers(0, len(rows)))
    cy, cx = (rows[k] + 0.5) * h / cells.shape[0], (cols[k] + 0.5) * w / cells.shape[1]
    sigma2 = 2.0 * (extent * max(w, h)) ** 2
    wy = np.exp(-((np.arange(h, dtype=np.float32) - cy) ** 2) / sigma2)
    wx = np.exp(-((np.arange(w, dtype=np.float32) - cx) ** 2) / sigma2)
    return np.clip((full * wy[:, None] * wx[None, :] - 0.25) / 0.35, 0.0, 1.0)


def _background(rng: np.random.Generator, s: int, bg: np.ndarray, texture: float) -> np.ndarray:
    """Return an (s, s, 3) float background: a tint modulated by low-frequency texture."""
    m = _cubic_matrix(4, s)  # (s, 4)
    lum = rng.standard_normal((4, 4)).astype(np.float32)
    chroma = rng.standard_normal((4, 4, 3)).astype(np.float32) * 0.4
    coarse = lum[..., None] + chroma
    tex = (m @ coarse.reshape(4, 12)).reshape(s, 4, 3)  # rows upsampled: (s, 4, 3)
    tex = np.matmul(m[None], tex)  # columns upsampled: (s, s, 3)
    return bg[None, None, :].astype(np.float32) + texture * tex


def _paste(canvas: np.ndarray, alpha: np.ndarray, colour: np.ndarray, x: int, y: int) -> None:
    """Alpha-blend a flat colour through an opacity map into the canvas at (x, y), cropping at the edges."""
    s = canvas.shape[0]
    h, w = alpha.shape
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, s), min(y + h, s)
    if x1 <= x0 or y1 <= y0:
        return
    a = alpha[y0 - y : y1 - y, x0 - x : x1 - x, None]
    region = canvas[y0:y1, x0:x1]
    region += a * (colour.astype(np.float32) - region)  # = (1 - a) * region + a * colour


def render_digit_image(
    target: np.ndarray, fragments: list[np.ndarray], config: DigitsConfig, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Render one (S, S, 3) uint8 image and its (S, S) bool mask from a target and fragment sources."""
    s = config.image_size
    bg, ink = _colours(rng, config.min_contrast)
    canvas = _background(rng, s, bg, config.texture)
    lo, hi = config.digit_scale
    for frag in fragments:
        side = max(4, int(round(rng.uniform(lo, hi) * s)))  # drawn at the target's range of stroke scales
        alpha = _fragment(frag, side, side, rng.uniform(*config.fragment_extent), rng) * rng.uniform(0.7, 1.0)
        colour = ink if rng.random() < config.same_colour_fragments else _colours(rng, config.min_contrast)[1]
        _paste(canvas, alpha, colour, int(rng.integers(-side // 2, s - side // 2)), int(rng.integers(-side // 2, s - side // 2)))
    side = rng.uniform(lo, hi) * s
    ratio = np.exp(rng.uniform(-config.aspect_jitter, config.aspect_jitter))
    w = int(np.clip(round(side * np.sqrt(ratio)), 4, s))
    h = int(np.clip(round(side / np.sqrt(ratio)), 4, s))
    alpha = _stroke(target, w, h)
    x, y = int(rng.integers(0, s - w + 1)), int(rng.integers(0, s - h + 1))
    _paste(canvas, alpha, ink, x, y)
    mask = np.zeros((s, s), dtype=bool)
    mask[y : y + h, x : x + w] = alpha >= config.mask_threshold
    half_width = config.noise * np.sqrt(3.0)  # uniform noise with standard deviation config.noise
    canvas += rng.random(canvas.shape, dtype=np.float32) * (2.0 * half_width) - half_width
    image = (np.clip(canvas, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return image, mask


@lru_cache(maxsize=3)
def generate_split(split: str, config: DigitsConfig, seed: int) -> DigitsSplit:
    """Generate one split of the digits dataset, deterministically from the seed (read-only arrays).

    The result depends only on the arguments, so one process keeps the last three splits it made:
    `compare` trains and evaluates several methods on the same splits and generates each once.
    """
    if split not in _SPLIT_IDS:
        raise DataError(f"unknown split {split!r} for digits: use train, val or test")
    config.validate()
    start = time.perf_counter()
    sources, source_labels = _source_digits()
    pool = source_pools(config, seed)[split]
    rng = np.random.default_rng([seed, 104729, _SPLIT_IDS[split]])
    n, s = config.size_of(split), config.image_size
    images = np.empty((n, s, s, 3), dtype=np.uint8)
    masks = np.empty((n, s, s), dtype=bool)
    boxes = np.empty((n, 4), dtype=np.int64)
    pool_labels = source_labels[pool]
    wanted = rng.permutation(np.arange(n) % len(DIGIT_CLASSES))  # balanced classes, shuffled
    by_class = [pool[pool_labels == c] for c in range(len(DIGIT_CLASSES))]
    targets = np.array([by_class[c][rng.integers(0, len(by_class[c]))] for c in wanted], dtype=np.int64)
    lo, hi = config.fragments
    for i, t in enumerate(targets):
        others = pool[rng.integers(0, len(pool), size=int(rng.integers(lo, hi + 1)))]
        images[i], masks[i] = render_digit_image(sources[t], [sources[o] for o in others], config, rng)
        box = mask_to_box(masks[i])
        if not len(box):  # cannot happen with the default threshold; keep the invariant anyway
            raise DataError(f"digits generator produced an empty mask (split {split}, image {i})")
        boxes[i] = box[0]
    split_data = DigitsSplit(
        images=images,
        labels=source_labels[targets].astype(np.int64),
        boxes=boxes,
        masks=masks,
        source_ids=targets.astype(np.int64),
        seconds=time.perf_counter() - start,
    )
    for array in (split_data.images, split_data.labels, split_data.boxes, split_data.masks, split_data.source_ids):
        array.flags.writeable = False  # shared by every caller of the cache
    return split_data


def write_digits(out_dir: str | Path, config: DigitsConfig | None = None, seed: int = 0) -> Path:
    """Write all three digits splits to disk in the WSOL metadata layout; returns the folder."""
    config = config or DigitsConfig()
    root = Path(out_dir)
    (root / "metadata").mkdir(parents=True, exist_ok=True)
    (root / "metadata" / "class_names.txt").write_text("\n".join(DIGIT_CLASSES) + "\n")
    marker = {"dataset": "saolctl digits", "seed": seed, "config": asdict(config)}
    (root / "metadata" / MARKER).write_text(json.dumps(marker, indent=2) + "\n")
    s = config.image_size
    for split in _SPLIT_IDS:
        data = generate_split(split, config, seed)
        meta = root / "metadata" / split
        for sub in (meta, root / "images" / split, root / "masks" / split):
            sub.mkdir(parents=True, exist_ok=True)
        ids, labels, sizes, locs, boxes = [], [], [], [], []
        for i in range(len(data.labels)):
            image_id = f"{split}/{i:05d}.png"
            Image.fromarray(data.images[i]).save(root / "images" / image_id)
            Image.fromarray(data.masks[i].astype(np.uint8) * 255).save(root / "masks" / image_id)
            x0, y0, x1, y1 = (int(v) for v in data.boxes[i])
            ids.append(image_id)
            labels.append(f"{image_id},{int(data.labels[i])}")
            sizes.append(f"{image_id},{s},{s}")
            locs.append(f"{image_id},{image_id},")
            boxes.append(f"{image_id},{x0},{y0},{x1},{y1}")
        for name, lines in (
            ("image_ids.txt", ids),
            ("class_labels.txt", labels),
            ("image_sizes.txt", sizes),
            ("localization.txt", locs),
            ("localization_boxes.txt", boxes),
        ):
            (meta / name).write_text("\n".join(lines) + "\n")
    return root


def is_digits_folder(source: str | Path) -> bool:
    """Return whether a data source is a folder that ``write_digits`` wrote (so the digits recipe fits it)."""
    return str(source) != "digits" and (Path(source) / "metadata" / MARKER).is_file()
