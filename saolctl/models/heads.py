"""Output layers: GAP-FC (CAM), the Attention Branch Network, and SAOL.

Each network is a backbone plus one head; ``forward`` returns a :class:`ModelOutput`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from saolctl.errors import UserError
from saolctl.models.backbones import Backbone, stride_one_copy
from saolctl.models.outputs import ModelOutput


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


class CamNet(nn.Module):
    """Backbone + GAP-FC; the CAM of class c is sum_k w_ck X^L_k."""

    method = "cam"

    def __init__(self, backbone: Backbone, num_classes: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = GapFc(backbone.channels[-1], num_classes)

    def forward(self, x: Tensor) -> ModelOutput:
        """Classify a batch (B, 3, H, W)."""
        features = self.backbone(x)[-1]
        logits = self.head(features)
        return ModelOutput(method=self.method, logits=logits, features=features, gap_logits=logits)


# --------------------------------------------------------------------------------------------
# ABN (Fukui et al., CVPR 2019), official code's choices (SPEC 1.2)


class AttentionBranch(nn.Module):
    """ABN's attention branch: a stride-1 copy of the last stage giving class maps Q, z_att and M."""

    def __init__(self, last_stage: nn.Module, in_ch: int, num_classes: int) -> None:
        super().__init__()
        self.stage = stride_one_copy(last_stage)
        self.bn = nn.BatchNorm2d(in_ch)
        self.to_classes = nn.Conv2d(in_ch, num_classes, 1, bias=False)
        self.bn_classes = nn.BatchNorm2d(num_classes)
        self.class_conv = nn.Conv2d(num_classes, num_classes, 1, bias=False)
        self.att_conv = nn.Conv2d(num_classes, 1, 3, padding=1, bias=False)
        self.bn_att = nn.BatchNorm2d(1)

    def forward(self, g: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Return (Q (B, K, h, w), z_att (B, K), M (B, 1, h, w)) from g(x)."""
        q = F.relu(self.bn_classes(self.to_classes(self.bn(self.stage(g)))))
        z_att = self.class_conv(q).mean(dim=(2, 3))
        m = torch.sigmoid(self.bn_att(self.att_conv(q)))
        return q, z_att, m


class AbnNet(nn.Module):
    """Attention Branch Network: the perception branch sees (1 + M) * g(x)."""

    method = "abn"

    def __init__(self, backbone: Backbone, num_classes: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.attention_branch = AttentionBranch(backbone.stages[-1], backbone.channels[-1], num_classes)
        self.head = GapFc(backbone.channels[-1], num_classes)

    def forward(self, x: Tensor) -> ModelOutput:
        """Classify a batch (B, 3, H, W)."""
        g = self.backbone.forward_until(x, self.backbone.num_stages - 1)[-1]  # (B, C_{L-1}, h, w)
        q, z_att, m = self.attention_branch(g)
        features = self.backbone.stages[-1](g * (1.0 + m))  # (B, C_L, H, W)
        logits = self.head(features)
        return ModelOutput(
            method=self.method,
            logits=logits,
            features=features,
            gap_logits=logits,
            attention=m[:, 0],
            att_logits=z_att,
            class_maps=q,
        )


# --------------------------------------------------------------------------------------------
# SAOL (Kim, Baek and Kim, CVPR 2020); layer choices are "our reading" (SPEC 1.3)


GRIDS = ("last", "penultimate")


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


@dataclass(frozen=True)
class SaolOptions:
    """SAOL head options (SPEC section 1.3); defaults meet "almost the same cost" as GAP-FC."""

    taps: tuple[int, ...] = (-3, -2, -1)  # stages feeding the spatial logits
    mid: int = 256  # channels of each projection and of the attention's hidden layer
    kernel: int = 1  # kernel of the projections and the fuse conv
    att_kernel: int = 1  # kernel of the two attention convs
    resize: str = "area"  # how taps reach the output grid: "area" or "bilinear" (upsampling is always bilinear)
    gap_head: bool = True  # also train a GAP-FC head on X^L for self-distillation
    grid: str = "last"  # output grid: that of the last stage, or of the stage before it ("penultimate", 2x finer)

    def __post_init__(self) -> None:
        if self.resize not in ("area", "bilinear"):
            raise UserError(f"saol_resize must be 'area' or 'bilinear', got {self.resize!r}")
        if self.grid not in GRIDS:
            raise UserError(f"saol_grid must be one of {', '.join(GRIDS)}, got {self.grid!r}")
        for name in ("kernel", "att_kernel"):
            k = getattr(self, name)
            if k < 1 or k % 2 == 0:
                raise UserError(f"saol_{name} must be an odd positive integer, got {k}")
        if self.mid < 1:
            raise UserError(f"saol_mid must be positive, got {self.mid}")
        if not self.taps:
            raise UserError("saol_taps must name at least one stage")


class SpatialLogits(nn.Module):
    """Tapped stages resized to the output grid, projected, fused to K channels: log Y over classes."""

    def __init__(self, tap_channels: Sequence[int], num_classes: int, opts: SaolOptions) -> None:
        super().__init__()
        self.resize = opts.resize
        self.projections = nn.ModuleList([conv_bn_relu(c, opts.mid, opts.kernel) for c in tap_channels])
        self.fuse = nn.Conv2d(opts.mid * len(tap_channels), num_classes, opts.kernel, padding=opts.kernel // 2)

    def forward(self, taps: Sequence[Tensor], grid: tuple[int, int]) -> Tensor:
        """Return log Y (B, K, H, W), a log-softmax over classes at each cell."""
        projected = [proj(resize_to(t, grid, self.resize)) for t, proj in zip(taps, self.projections)]
        return F.log_softmax(self.fuse(torch.cat(projected, dim=1)), dim=1)


class AttentionMap(nn.Module):
    """Two convolutions on X^L and a softmax over the H*W positions: log A."""

    def __init__(self, in_ch: int, opts: SaolOptions) -> None:
        super().__init__()
        k = opts.att_kernel
        self.hidden = conv_bn_relu(in_ch, opts.mid, k)
        # no bias: a constant added before a softmax over positions changes nothing
        self.score = nn.Conv2d(opts.mid, 1, k, padding=k // 2, bias=False)

    def forward(self, features: Tensor) -> Tensor:
        """Return log A (B, H, W), a log-softmax over all positions."""
        s = self.score(self.hidden(features))[:, 0]  # (B, H, W)
        b, h, w = s.shape
        return F.log_softmax(s.reshape(b, h * w), dim=1).reshape(b, h, w)


class SaolNet(nn.Module):
    """Backbone + SAOL: y_hat_k = sum_ij A_ij Y_kij, with an optional GAP-FC head for self-distillation."""

    method = "saol"

    def __init__(self, backbone: Backbone, num_classes: int, opts: SaolOptions | None = None) -> None:
        super().__init__()
        self.opts = opts or SaolOptions()
        n = backbone.num_stages
        taps = sorted({t % n if -n <= t < n else _bad_tap(t, n) for t in self.opts.taps})
        self.tap_indices = tuple(taps)
        self.backbone = backbone
        self.spatial_logits = SpatialLogits([backbone.channels[i] for i in taps], num_classes, self.opts)
        self.attention = AttentionMap(backbone.channels[-1], self.opts)
        self.gap_head = GapFc(backbone.channels[-1], num_classes) if self.opts.gap_head else None

    def forward(self, x: Tensor, *, with_gap_head: bool | None = None) -> ModelOutput:
        """Classify a batch (B, 3, H, W); the GAP-FC head runs in training or when asked for."""
        stages = self.backbone(x)
        features = stages[-1]  # (B, C_L, h, w)
        grid_from = stages[-2] if self.opts.grid == "penultimate" else features
        grid = (grid_from.shape[-2], grid_from.shape[-1])  # (H, W) of the output grid
        log_y = self.spatial_logits([stages[i] for i in self.tap_indices], grid)  # (B, K, H, W)
        log_a = self.attention(resize_to(features, grid, "bilinear"))  # (B, H, W)
        # log y_hat_k = logsumexp_ij (log A_ij + log Y_kij): exact and stable; sums to 1 over k
        logits = torch.logsumexp((log_a.unsqueeze(1) + log_y).flatten(2), dim=2)  # (B, K)
        run_gap = self.training if with_gap_head is None else with_gap_head
        gap_logits = self.gap_head(features) if (run_gap and self.gap_head is not None) else None
        return ModelOutput(
            method=self.method,
            logits=logits,
            features=features,
            gap_logits=gap_logits,
            attention=log_a.exp(),
            spatial_log_probs=log_y,
            log_attention=log_a,
        )


def _bad_tap(t: int, n: int) -> int:
    raise UserError(f"saol_taps entry {t} is out of range for a backbone with {n} stages")
