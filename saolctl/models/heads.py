"""Building blocks the methods' heads share: conv-BN-ReLU, the GAP-FC head and resizing to an output grid.

Each method's network (backbone plus head) lives in its own module under ``saolctl.methods``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def conv_bn_relu(in_ch: int, out_ch: int, kernel: int) -> nn.Sequential:
    """Return conv(k) -> BN -> ReLU keeping the spatial size."""
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
    )


class GapFc(nn.Module):
    """Global average pooling then a linear layer (bias on): the classic CAM head."""

    def __init__(self, in_ch: int, num_classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(in_ch, num_classes)

    def forward(self, features: Tensor) -> Tensor:
        """Return logits (B, K) from features (B, C, H, W)."""
        return self.fc(features.mean(dim=(2, 3)))

    def class_maps(self, features: Tensor, targets: Tensor) -> Tensor:
        """Return the CAM sum_k w_ck X_k (B, h, w) of classes ``targets`` (B,): no bias, no ReLU."""
        weights = self.fc.weight[targets]  # (B, C)
        return torch.einsum("bchw,bc->bhw", features, weights)


def resize_to(t: Tensor, grid: tuple[int, int], mode: str = "area") -> Tensor:
    """Resize (B, C, h, w) to ``grid``: area (average) when shrinking, bilinear when growing or asked."""
    h, w = t.shape[-2:]
    if (h, w) == tuple(grid):
        return t
    if mode == "area" and h >= grid[0] and w >= grid[1]:
        if h % grid[0] == 0 and w % grid[1] == 0:
            # an integer ratio: plain average pooling, the same numbers as adaptive but faster
            return F.avg_pool2d(t, (h // grid[0], w // grid[1]))
        return F.adaptive_avg_pool2d(t, grid)
    return F.interpolate(t, size=grid, mode="bilinear", align_corners=False)


def min_max_normalize(maps: Tensor) -> Tensor:
    """Return maps (B, ..., h, w) min-max normalised over space to [0, 1] in float32; a constant map becomes 0."""
    flat = maps.flatten(-2).float()  # float32 under autocast too: a half-precision epsilon would round to 0
    low = flat.min(dim=-1, keepdim=True).values
    span = flat.max(dim=-1, keepdim=True).values - low
    return ((flat - low) / span.clamp_min(1e-8)).view_as(maps)


def select_class(maps: Tensor, classes: Tensor) -> Tensor:
    """Return each image's map (B, h, w) of its class in ``classes`` (B,), from maps (B, K, h, w)."""
    return maps[torch.arange(maps.shape[0], device=maps.device), classes]
