"""CutMix as its official code does it (Yun et al., ICCV 2019), with the paste mask kept for SAOL.

lambda ~ Beta(alpha, alpha); a box of area ratio 1 - lambda at a uniform centre, clipped to the image;
the box region of x_A is replaced by the same region of x_B = x[perm]; lambda is then reset to the
exact kept ratio; targets mix as lambda * y_A + (1 - lambda) * y_B.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor


@dataclass(frozen=True)
class MixedBatch:
    """A batch after CutMix (or not): images, both label sets, the kept ratio and the pasted box."""

    images: Tensor  # (B, 3, H, W)
    labels_a: Tensor  # (B,) labels of the images pasted onto
    labels_b: Tensor  # (B,) labels of the pasted sources (= labels_a when not mixed)
    lam: float  # exact kept-area ratio; 1.0 when not mixed
    perm: Tensor  # (B,) source index of each image's pasted region
    box: tuple[int, int, int, int]  # (y0, y1, x0, x1) half-open pasted region; empty when not mixed
    mixed: bool

    def paste_mask(self) -> Tensor:
        """Return M (1, 1, H, W): 1 on the pasted box, 0 elsewhere."""
        _, _, h, w = self.images.shape
        m = torch.zeros(1, 1, h, w, device=self.images.device, dtype=self.images.dtype)
        y0, y1, x0, x1 = self.box
        m[..., y0:y1, x0:x1] = 1.0
        return m

    def soft_targets(self, num_classes: int) -> Tensor:
        """Return the mixed target distribution (B, K)."""
        ya = torch.nn.functional.one_hot(self.labels_a, num_classes).float()
        if not self.mixed:
            return ya
        yb = torch.nn.functional.one_hot(self.labels_b, num_classes).float()
        return self.lam * ya + (1.0 - self.lam) * yb


def cutmix_box(height: int, width: int, lam: float, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """Sample a half-open (y0, y1, x0, x1) box of area ratio about 1 - lam at a uniform centre, clipped."""
    cut = float(np.sqrt(1.0 - lam))
    cut_h, cut_w = int(height * cut), int(width * cut)
    cy, cx = int(rng.integers(height)), int(rng.integers(width))
    y0, y1 = np.clip(cy - cut_h // 2, 0, height), np.clip(cy + cut_h // 2, 0, height)
    x0, x1 = np.clip(cx - cut_w // 2, 0, width), np.clip(cx + cut_w // 2, 0, width)
    return int(y0), int(y1), int(x0), int(x1)


def no_mix(images: Tensor, labels: Tensor) -> MixedBatch:
    """Return the batch unchanged as a MixedBatch."""
    perm = torch.arange(images.shape[0], device=images.device)
    return MixedBatch(images, labels, labels, 1.0, perm, (0, 0, 0, 0), False)


def cutmix(
    images: Tensor, labels: Tensor, *, prob: float, alpha: float, rng: np.random.Generator
) -> MixedBatch:
    """Apply CutMix to the whole batch with probability ``prob`` (one box per batch)."""
    if prob <= 0.0 or alpha <= 0.0 or images.shape[0] < 2 or rng.random() >= prob:
        return no_mix(images, labels)
    b, _, h, w = images.shape
    lam = float(rng.beta(alpha, alpha))
    perm = torch.from_numpy(rng.permutation(b)).to(images.device)
    y0, y1, x0, x1 = cutmix_box(h, w, lam, rng)
    mixed = images.clone()
    mixed[:, :, y0:y1, x0:x1] = images[perm, :, y0:y1, x0:x1]
    lam = 1.0 - ((y1 - y0) * (x1 - x0) / float(h * w))
    return MixedBatch(mixed, labels, labels[perm], lam, perm, (y0, y1, x0, x1), lam < 1.0)
