"""Score maps of a target class for every method, batched, then upsampled and normalised (SPEC 2.2).

Kinds per method (the first is the default):
- cam:  ``cam`` = sum_k w_ck X^L_k with the GAP-FC weights (no bias, no ReLU).
- abn:  ``attention`` = the attention map M; ``class`` = the attention branch's class channel Q_c.
- saol: ``contrib`` = A * Y_c; ``attention`` = A; ``spatial`` = Y_c; ``gapcam`` = the CAM of the
  SAOL net's GAP-FC head.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from saolctl.errors import UserError
from saolctl.models.outputs import ModelOutput

MAP_KINDS: dict[str, tuple[str, ...]] = {
    "cam": ("cam",),
    "abn": ("attention", "class"),
    "saol": ("contrib", "attention", "spatial", "gapcam"),
}


def default_map_kind(method: str) -> str:
    """Return the default map kind of a method."""
    return MAP_KINDS[method][0]


def check_map_kind(method: str, kind: str) -> None:
    """Raise ValueError unless ``kind`` is a map kind of ``method``."""
    if method not in MAP_KINDS:
        raise UserError(f"unknown method {method!r}; valid: {', '.join(MAP_KINDS)}")
    if kind not in MAP_KINDS[method]:
        raise UserError(f"map kind {kind!r} does not exist for {method}; valid: {', '.join(MAP_KINDS[method])}")


def _cam(features: Tensor, fc: nn.Linear, targets: Tensor) -> Tensor:
    weights = fc.weight[targets]  # (B, C)
    return torch.einsum("bchw,bc->bhw", features, weights)


def raw_maps(model: nn.Module, output: ModelOutput, targets: Tensor, kind: str | None = None) -> Tensor:
    """Return the maps (B, h, w) of classes ``targets`` (B,) at feature resolution, before normalisation."""
    method = output.method
    kind = kind or default_map_kind(method)
    check_map_kind(method, kind)
    idx = torch.arange(targets.shape[0], device=targets.device)
    if method == "cam":
        return _cam(output.features, model.head.fc, targets)
    if method == "abn":
        if kind == "attention":
            return output.attention
        return output.class_maps[idx, targets]
    if kind == "gapcam":
        if model.gap_head is None:
            raise UserError("map kind 'gapcam' needs a SAOL model trained with its GAP-FC head (saol_gap_head)")
        return _cam(output.features, model.gap_head.fc, targets)
    if kind == "attention":
        return output.attention
    y_c = output.spatial_log_probs[idx, targets].exp()  # (B, H, W)
    if kind == "spatial":
        return y_c
    return output.attention * y_c


def normalize_maps(maps: Tensor, size: tuple[int, int]) -> Tensor:
    """Upsample maps (B, h, w) bicubically to ``size`` and min-max normalise each to [0, 1].

    A map that is constant or contains NaN becomes all zeros, as the reference does.
    """
    up = F.interpolate(maps[:, None].float(), size=size, mode="bicubic", align_corners=False)[:, 0]  # (B, H, W)
    flat = up.flatten(1)
    bad = torch.isnan(flat).any(dim=1)
    flat = torch.nan_to_num(flat, nan=0.0)
    lo = flat.min(dim=1, keepdim=True).values
    hi = flat.max(dim=1, keepdim=True).values
    span = hi - lo
    constant = span[:, 0] <= 0
    norm = (flat - lo) / torch.where(span > 0, span, torch.ones_like(span))
    norm = norm.clamp_(0.0, 1.0)
    norm[bad | constant] = 0.0
    return norm.view_as(up)


def score_maps(
    model: nn.Module, output: ModelOutput, targets: Tensor, size: tuple[int, int], kind: str | None = None
) -> Tensor:
    """Return normalised score maps (B, H, W) in [0, 1] of classes ``targets`` at the evaluated size."""
    return normalize_maps(raw_maps(model, output, targets, kind).detach(), size)
