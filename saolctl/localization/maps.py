"""Score maps of a target class for any method, batched, then upsampled and normalised (SPEC 2.2).

Which kinds a method has, and how each is computed, is the method's declaration (``saolctl.methods``);
kinds available to every method (registered with ``register_map_kind``) come after its own. The first of
a method's own kinds is its default.
"""

from __future__ import annotations

from typing import Any, Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from saolctl.errors import UserError
from saolctl.methods.base import MapInputs, MapKind
from saolctl.methods.registry import get_method, shared_map_kinds
from saolctl.models.outputs import ModelOutput


def map_kinds_of(method: str) -> list[MapKind]:
    """Return every map kind a method offers: its own (default first), then those shared by every method."""
    own = list(get_method(method).map_kinds)
    names = {k.name for k in own}
    return own + [k for k in shared_map_kinds() if k.name not in names]


def map_kind_names(method: str) -> list[str]:
    """Return the names of every map kind a method offers."""
    return [k.name for k in map_kinds_of(method)]


def own_map_kinds(model: nn.Module) -> list[str]:
    """Return the method's own map kinds that this model can draw (what `compare` evaluates)."""
    return [k.name for k in get_method(model.config.method).map_kinds if k.available(model)]


def default_map_kind(method: str) -> str:
    """Return the default map kind of a method."""
    return get_method(method).default_map_kind


def find_map_kind(method: str, kind: str) -> MapKind:
    """Return the map kind ``kind`` of ``method``; one line listing the valid ones when it does not exist."""
    kinds = map_kinds_of(method)
    for k in kinds:
        if k.name == kind:
            return k
    raise UserError(f"map kind {kind!r} does not exist for {method}; valid: {', '.join(k.name for k in kinds)}")


def check_map_kind(method: str, kind: str) -> None:
    """Raise UserError unless ``kind`` is a map kind of ``method``."""
    find_map_kind(method, kind)


def forward_options(method: str, kinds: Iterable[str]) -> dict[str, Any]:
    """Return the keyword arguments one forward pass needs so that it serves every kind in ``kinds``."""
    out: dict[str, Any] = {}
    for kind in kinds:
        out.update(find_map_kind(method, kind).forward_options)
    return out


def raw_maps(model: nn.Module, output: ModelOutput, targets: Tensor, kind: str | None = None,
             images: Tensor | None = None) -> Tensor:
    """Return the maps (B, h, w) of classes ``targets`` (B,) at feature resolution, before normalisation.

    ``images`` (B, 3, S, S) is the batch, needed only by kinds computed from the input.
    """
    spec = find_map_kind(output.method, kind or default_map_kind(output.method))
    spec.check_available(model)
    if spec.needs_images and images is None:
        raise UserError(f"map kind {spec.name!r} is computed from the input images; none were given")
    return spec.compute(MapInputs(model=model, output=output, targets=targets, images=images))


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
    model: nn.Module, output: ModelOutput, targets: Tensor, size: tuple[int, int], kind: str | None = None,
    images: Tensor | None = None,
) -> Tensor:
    """Return normalised score maps (B, H, W) in [0, 1] of classes ``targets`` at the evaluated size."""
    return normalize_maps(raw_maps(model, output, targets, kind, images).detach(), size)
