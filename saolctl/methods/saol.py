"""SAOL: the Spatially Attentive Output Layer (Kim, Baek and Kim, CVPR 2020); layer choices are "our reading" (SPEC 1.3)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from saolctl.errors import UserError
from saolctl.methods.base import MapInputs, MapKind, Method, Objective, cutmix_options
from saolctl.methods.options import Option, in_unit_interval, non_empty, odd_positive, one_of, positive
from saolctl.models.backbones import Backbone
from saolctl.models.heads import GapFc, conv_bn_relu, resize_to
from saolctl.models.losses import SaolLossOptions, SaolObjective
from saolctl.models.outputs import ModelOutput

GRIDS = ("last", "penultimate")
RESIZES = ("area", "bilinear")


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
        for opt in HEAD_OPTIONS:
            opt.validate(getattr(self, opt.legacy[1]))


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
            method=SaolMethod.name,
            logits=logits,
            features=features,
            gap_logits=gap_logits,
            attention=log_a.exp(),
            spatial_log_probs=log_y,
            log_attention=log_a,
        )


def _bad_tap(t: int, n: int) -> int:
    raise UserError(f"saol_taps entry {t} is out of range for a backbone with {n} stages")


# ------------------------------------------------------------------------------------------------
# options: the head's (SaolOptions) and the objective's (SaolLossOptions)

HEAD_OPTIONS: tuple[Option, ...] = (
    Option("saol_taps", tuple, (-3, -2, -1), "stages feeding the spatial logits (negative = from the end)",
           non_empty("saol_taps must name at least one stage"), legacy=("saol", "taps")),
    Option("saol_mid", int, 256, "channels of each projection and of the attention's hidden layer",
           positive("saol_mid"), legacy=("saol", "mid")),
    Option("saol_kernel", int, 1, "kernel of the projections and the fuse conv (odd)",
           odd_positive("saol_kernel"), legacy=("saol", "kernel")),
    Option("saol_att_kernel", int, 1, "kernel of the two attention convs (odd)",
           odd_positive("saol_att_kernel"), legacy=("saol", "att_kernel")),
    Option("saol_resize", str, "area", "how taps reach the output grid: `area` or `bilinear`",
           one_of("saol_resize", RESIZES, "'area' or 'bilinear'"), legacy=("saol", "resize")),
    Option("saol_gap_head", bool, True, "also train a GAP-FC head on X^L for self-distillation",
           legacy=("saol", "gap_head")),
    Option("saol_grid", str, "last", "output grid of Y and A: `last` (the last stage's) or `penultimate` (the "
           "stage before it, 2x finer; X^L is upsampled bilinearly for A) — our addition",
           one_of("saol_grid", GRIDS), legacy=("saol", "grid")),
)

LOSS_OPTIONS: tuple[Option, ...] = (
    Option("sd_beta", float, 0.5, "β of the self-distillation loss", in_unit_interval("sd_beta"),
           legacy=("saol_loss", "sd_beta")),
    Option("ss1_weight", float, 1.0, "weight of the self-supervised loss L_ss1 (where was the patch pasted?)",
           legacy=("saol_loss", "ss1_weight")),
    Option("ss2_weight", float, 1.0, "weight of the self-supervised loss L_ss2 (the pasted region says what its "
           "source says)", legacy=("saol_loss", "ss2_weight")),
    Option("att_entropy", float, 0.0, "weight w_H of an entropy bonus on A (our addition, not the paper's)",
           legacy=("saol_loss", "att_entropy")),
    Option("att_ss_weight", float, 0.0, "weight of `att_ss`: under CutMix, A follows each source image's own "
           "clean attention in its region (our addition)", legacy=("saol_loss", "att_ss_weight")),
    Option("att_cam_weight", float, 0.0, "weight of `att_cam`: A follows the detached CAM of the training-only "
           "GAP-FC head (our addition)", legacy=("saol_loss", "att_cam_weight")),
)


def head_options(options: Mapping[str, Any]) -> SaolOptions:
    """Return the head's options from the method's option values."""
    return SaolOptions(**{o.legacy[1]: o.coerce(options[o.name]) for o in HEAD_OPTIONS})


def loss_options(options: Mapping[str, Any]) -> SaolLossOptions:
    """Return the objective's weights from the method's option values."""
    return SaolLossOptions(**{o.legacy[1]: float(options[o.name]) for o in LOSS_OPTIONS})


# ------------------------------------------------------------------------------------------------
# map kinds


def _class_probs(inputs: MapInputs) -> Tensor:
    """Return Y_c (B, H, W) of each image's target class."""
    idx = torch.arange(inputs.targets.shape[0], device=inputs.targets.device)
    return inputs.output.spatial_log_probs[idx, inputs.targets].exp()


def contrib_map(inputs: MapInputs) -> Tensor:
    """Return A * Y_c (B, H, W): where the class's share of the prediction comes from."""
    return inputs.output.attention * _class_probs(inputs)


def attention_map(inputs: MapInputs) -> Tensor:
    """Return the attention A (B, H, W)."""
    return inputs.output.attention


def spatial_map(inputs: MapInputs) -> Tensor:
    """Return the spatial class probability Y_c (B, H, W)."""
    return _class_probs(inputs)


def gapcam_map(inputs: MapInputs) -> Tensor:
    """Return the CAM (B, h, w) of the SAOL net's GAP-FC head."""
    return inputs.model.gap_head.class_maps(inputs.output.features, inputs.targets)


def has_gap_head(model: nn.Module) -> bool:
    """Return whether a SAOL net was built with its GAP-FC head."""
    return getattr(model, "gap_head", None) is not None


class SaolMethod(Method):
    """SAOL: L_cls + L_gap + w1 L_ss1 + w2 L_ss2 - w_H H(A) + w_a L_att_ss + w_c L_att_cam (SPEC 1.3-1.5)."""

    name = "saol"
    paper = "Kim, Baek and Kim, Spatially Attentive Output Layer for Image Classification, CVPR 2020"
    summary = "y_hat_k = sum_ij A_ij Y_kij: a spatial attention A times spatial class probabilities Y"
    options = HEAD_OPTIONS + LOSS_OPTIONS
    map_kinds = (
        MapKind("contrib", "A * Y_c: attention times the class's spatial probability", contrib_map),
        MapKind("attention", "the attention A (sums to 1 over space)", attention_map),
        MapKind("spatial", "the class's spatial probability Y_c", spatial_map),
        MapKind("gapcam", "the CAM of the SAOL net's GAP-FC head", gapcam_map,
                forward_options={"with_gap_head": True}, available=has_gap_head,
                needs="a SAOL model trained with its GAP-FC head (saol_gap_head)"),
    )

    def build(self, backbone: Backbone, num_classes: int, options: Mapping[str, Any]) -> nn.Module:
        """Return backbone + SAOL head."""
        return SaolNet(backbone, num_classes, head_options(options))

    def objective(self, options: Mapping[str, Any]) -> Objective:
        """Return SAOL's objective with its CutMix recipe and weights."""
        return SaolObjective(cutmix_options(options), loss_options(options))

    def report_notes(self, table: pd.DataFrame) -> list[str]:
        """Say which SAOL map localizes best on validation, and whether the default reaches CAM's numbers."""
        rows = table[table["method"] == self.name] if "method" in table else table.iloc[0:0]
        if not len(rows) or "val_max_box_acc_v2" not in rows:
            return []
        best = rows.loc[rows["val_max_box_acc_v2"].idxmax()]
        default = rows[rows["default_map"]].iloc[0]
        lines = [f"SAOL's default map is `{default['map']}` (A * Y_c, SPEC section 2.2). On the validation split "
                 f"the SAOL map that localizes best is `{best['map']}` (MaxBoxAccV2 "
                 f"{best['val_max_box_acc_v2']:.1f} vs {default['val_max_box_acc_v2']:.1f} for the default)."]
        cam = table[(table["method"] == "cam")]
        if len(cam) and "max_box_acc_v2" in table:
            c = cam.iloc[0]
            verdict = "reaches" if default["max_box_acc_v2"] >= c["max_box_acc_v2"] else "does not reach"
            lines.append(f"On test, SAOL's default map {verdict} CAM's MaxBoxAccV2 ({default['max_box_acc_v2']:.1f} "
                         f"vs {c['max_box_acc_v2']:.1f}); top-1 {default['top1']:.1f} vs {c['top1']:.1f}.")
            lines.append("The SAOL options each recipe uses, and a 3-seed study of the variants (none of which "
                         "reached CAM's MaxBoxAccV2 on the embedded digits or on pets3), are in saolctl's "
                         "docs/saol-localization.md.")
        return lines + [""]


METHOD = SaolMethod()
