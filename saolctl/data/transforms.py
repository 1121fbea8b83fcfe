"""Composable sample transforms: eval warp, train crop/flip, tensor conversion and normalisation.

Every transform is a callable ``t(sample, rng) -> sample`` acting on a :class:`Sample` (image, boxes,
masks together); ``rng`` is a ``numpy.random.Generator`` owned by the caller (random transforms need
one, deterministic ones ignore it). Geometry follows SPEC 2.1: the eval warp resizes to S x S with no
crop, boxes are rescaled from their original frame by truncation (``boxes.resize_boxes``) and masks
are resized nearest-neighbour with OpenCV's ``INTER_NEAREST`` sampling (source index
``floor(x * (1 / (S / W)))``), which is what the reference uses. Boxes are not clipped after the
warp: the protocol's CUB-style boxes (``x1 = x + w``) may end one pixel past the image and then reach
``S`` exactly as they do in the reference; every other box was clipped into its image when the
dataset was opened, so it stays within ``0 .. S - 1``.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Protocol, Sequence

import numpy as np
import torch
from PIL import Image

from saolctl.data.boxes import as_box_array, clip_boxes, is_degenerate, resize_boxes
from saolctl.data.sample import Sample

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


class Transform(Protocol):
    """A sample transform."""

    def __call__(self, sample: Sample, rng: np.random.Generator | None) -> Sample: ...


def nearest_indices(src_len: int, dst_len: int) -> np.ndarray:
    """Return the source index of each destination pixel under OpenCV INTER_NEAREST sampling."""
    inv_scale = 1.0 / (float(dst_len) / float(src_len))  # cv2: ifx = 1. / fx, fx = dst / src
    idx = np.floor(np.arange(dst_len, dtype=np.float64) * inv_scale).astype(np.int64)
    return np.minimum(idx, src_len - 1)


def resize_nearest(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a (H, W) array to (w, h) = size with OpenCV-style nearest-neighbour sampling."""
    h, w = mask.shape[:2]
    out_w, out_h = size
    if (w, h) == (out_w, out_h):
        return mask
    rows = nearest_indices(h, out_h)
    cols = nearest_indices(w, out_w)
    return mask[rows[:, None], cols[None, :]]


def _image_size(image: Image.Image | torch.Tensor) -> tuple[int, int]:
    """Return (w, h) of a PIL image or a (C, H, W) tensor."""
    if isinstance(image, Image.Image):
        return image.size
    return int(image.shape[-1]), int(image.shape[-2])


class Compose:
    """Apply transforms in order."""

    def __init__(self, transforms: Sequence[Transform]) -> None:
        self.transforms = list(transforms)

    def __call__(self, sample: Sample, rng: np.random.Generator | None = None) -> Sample:
        for t in self.transforms:
            sample = t(sample, rng)
        return sample

    def __repr__(self) -> str:
        inner = ", ".join(repr(t) for t in self.transforms)
        return f"Compose([{inner}])"


class Warp:
    """Warp the image to S x S (no crop, aspect not kept); rescale boxes and masks with it."""

    def __init__(self, size: int, resample: int = Image.BILINEAR) -> None:
        self.size = int(size)
        self.resample = resample

    def __call__(self, sample: Sample, rng: np.random.Generator | None = None) -> Sample:
        s = self.size
        image = sample.image
        if _image_size(image) != (s, s):
            image = image.resize((s, s), self.resample)
        boxes = sample.boxes
        if len(boxes):
            boxes = resize_boxes(boxes, sample.box_frame, s)  # not clipped: see the module docstring
        mask = None if sample.mask is None else resize_nearest(sample.mask, (s, s))
        ignore = None if sample.ignore is None else resize_nearest(sample.ignore, (s, s))
        return replace(sample, image=image, boxes=boxes, box_frame=(s, s), mask=mask, ignore=ignore)

    def __repr__(self) -> str:
        return f"Warp({self.size})"


def _crop_boxes(boxes: np.ndarray, x0: int, y0: int, size: int) -> np.ndarray:
    """Shift boxes into a size x size crop at (x0, y0), clip them and drop those left empty."""
    if not len(boxes):
        return boxes
    b = as_box_array(boxes) - np.array([x0, y0, x0, y0], dtype=np.int64)
    outside = (b[:, 2] < 0) | (b[:, 3] < 0) | (b[:, 0] > size - 1) | (b[:, 1] > size - 1)
    b = clip_boxes(b[~outside], size, size)
    return b[~is_degenerate(b)]


class ResizeRandomCrop:
    """Resize to R x R (R = round(S * ratio)), then take a random S x S crop (the WSOL training recipe)."""

    def __init__(self, size: int, ratio: float = 256 / 224, resample: int = Image.BILINEAR) -> None:
        self.size = int(size)
        self.resized = max(self.size, int(round(self.size * ratio)))
        self.warp = Warp(self.resized, resample)

    def __call__(self, sample: Sample, rng: np.random.Generator | None) -> Sample:
        if rng is None:
            raise ValueError("ResizeRandomCrop needs a numpy Generator")
        s, r = self.size, self.resized
        sample = self.warp(sample)
        x0 = int(rng.integers(0, r - s + 1))
        y0 = int(rng.integers(0, r - s + 1))
        image = sample.image.crop((x0, y0, x0 + s, y0 + s))
        boxes = _crop_boxes(sample.boxes, x0, y0, s)
        mask = None if sample.mask is None else sample.mask[y0 : y0 + s, x0 : x0 + s]
        ignore = None if sample.ignore is None else sample.ignore[y0 : y0 + s, x0 : x0 + s]
        return replace(sample, image=image, boxes=boxes, box_frame=(s, s), mask=mask, ignore=ignore)

    def __repr__(self) -> str:
        return f"ResizeRandomCrop({self.size}, resized={self.resized})"


class RandomHorizontalFlip:
    """Mirror the image, boxes and masks left-right with probability p."""

    def __init__(self, p: float = 0.5) -> None:
        self.p = float(p)

    def __call__(self, sample: Sample, rng: np.random.Generator | None) -> Sample:
        if rng is None:
            raise ValueError("RandomHorizontalFlip needs a numpy Generator")
        if rng.random() >= self.p:
            return sample
        w, _ = _image_size(sample.image)
        image = sample.image.transpose(Image.FLIP_LEFT_RIGHT)
        boxes = sample.boxes
        if len(boxes):
            fw = sample.box_frame[0]
            boxes = np.stack([fw - 1 - boxes[:, 2], boxes[:, 1], fw - 1 - boxes[:, 0], boxes[:, 3]], axis=1)
        mask = None if sample.mask is None else np.ascontiguousarray(sample.mask[:, ::-1])
        ignore = None if sample.ignore is None else np.ascontiguousarray(sample.ignore[:, ::-1])
        return replace(sample, image=image, boxes=boxes, mask=mask, ignore=ignore)

    def __repr__(self) -> str:
        return f"RandomHorizontalFlip(p={self.p})"


class ToNormalizedTensor:
    """Turn the PIL RGB image into a (3, H, W) float32 tensor normalised by mean and std."""

    def __init__(self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> None:
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)

    def __call__(self, sample: Sample, rng: np.random.Generator | None = None) -> Sample:
        arr = np.array(sample.image, dtype=np.uint8)  # (H, W, 3), a writable copy
        x = torch.from_numpy(arr).permute(2, 0, 1).float().div_(255.0)  # (3, H, W)
        x = x.sub_(self.mean).div_(self.std)
        return replace(sample, image=x)

    def __repr__(self) -> str:
        return "ToNormalizedTensor()"


def eval_transform(img_size: int) -> Compose:
    """Return the evaluation pipeline: warp to S x S, then normalised tensor."""
    return Compose([Warp(img_size), ToNormalizedTensor()])


def train_transform(img_size: int, *, flip: bool = True, ratio: float = 256 / 224) -> Compose:
    """Return the training pipeline: resize + random S x S crop, optional flip, normalised tensor."""
    steps: list[Transform] = [ResizeRandomCrop(img_size, ratio)]
    if flip:
        steps.append(RandomHorizontalFlip(0.5))
    steps.append(ToNormalizedTensor())
    return Compose(steps)


def denormalize(
    images: torch.Tensor, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
) -> torch.Tensor:
    """Undo normalisation for display: (B, 3, S, S) or (3, S, S) -> values in [0, 1]."""
    m = torch.as_tensor(mean, dtype=images.dtype, device=images.device).view(3, 1, 1)
    s = torch.as_tensor(std, dtype=images.dtype, device=images.device).view(3, 1, 1)
    return (images * s + m).clamp_(0.0, 1.0)
