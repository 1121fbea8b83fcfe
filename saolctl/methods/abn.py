"""ABN: the Attention Branch Network (official code's choices, SPEC 1.2).

Vanilla ABN (Fukui et al., CVPR 2019): both branches' cross-entropy on plain batches, no CutMix.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from saolctl.methods.base import MapInputs, MapKind, Method, Objective
from saolctl.models.backbones import Backbone, stride_one_copy
from saolctl.models.heads import GapFc
from saolctl.models.losses import AbnObjective
from saolctl.models.outputs import ModelOutput


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
            method=AbnMethod.name,
            logits=logits,
            features=features,
            gap_logits=logits,
            attention=m[:, 0],
            att_logits=z_att,
            class_maps=q,
        )


def attention_map(inputs: MapInputs) -> Tensor:
    """Return the attention map M (B, h, w)."""
    return inputs.output.attention


def class_map(inputs: MapInputs) -> Tensor:
    """Return the attention branch's class channel Q_c (B, h, w)."""
    idx = torch.arange(inputs.targets.shape[0], device=inputs.targets.device)
    return inputs.output.class_maps[idx, inputs.targets]


class AbnMethod(Method):
    """ABN: L = CE(z_att, y) + CE(z_per, y); the map is the attention M or a class channel of Q."""

    name = "abn"
    paper = "Fukui et al., Attention Branch Network: Learning of Attention Mechanism for Visual Explanation, CVPR 2019"
    summary = "attention branch (stride-1 copy of the last stage) weighting the perception branch by (1 + M)"
    map_kinds = (
        MapKind("attention", "the attention map M in [0, 1]", attention_map),
        MapKind("class", "the attention branch's class channel Q_c", class_map),
    )
    uses_cutmix = False

    def build(self, backbone: Backbone, num_classes: int, options: Mapping[str, Any]) -> nn.Module:
        """Return backbone + attention and perception branches."""
        return AbnNet(backbone, num_classes)

    def objective(self, options: Mapping[str, Any]) -> Objective:
        """Return CE of both branches' logits against the target."""
        return AbnObjective()


METHOD = AbnMethod()
