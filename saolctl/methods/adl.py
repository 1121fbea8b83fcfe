"""ADL: the Attention-based Dropout Layer (Choe and Shim, CVPR 2019) on a GAP-FC (CAM) network.

ADL layers sit inside the backbone, after some residual blocks. In training each one computes the
self-attention map a = mean over channels of its input features and multiplies the features by one of two
maps, chosen at random: with probability ``adl_drop_rate`` the drop mask (0 where a >= ``adl_threshold`` *
max a, 1 elsewhere: hides the most discriminative part so that the rest must learn to classify), otherwise
the importance map sigmoid(a) (rewards the discriminative part). At evaluation it is the identity, so the
network is a plain CAM network; the map is its CAM. There are no extra weights and no extra loss term.

Choices, following wsolevaluation (clovaai/wsolevaluation, Choe et al., CVPR 2020), which holds the first
author's own reference code (wsol/method/adl.py):

- Defaults: drop rate 0.75 and threshold 0.9 (config.py: ``--adl_drop_rate 0.75``, ``--adl_threshold 0.9``,
  passed to the layer by main.py; the layer's own default of 0.8 is not used).
- Dropped pixels: those with a >= threshold * max a (the reference keeps ``a < thr``), so the maximum itself
  is always dropped when it is positive. The threshold is relative to each image's own maximum.
- The drop-or-importance choice is drawn once per layer and forward pass, for the whole batch
  (``torch.rand([])`` in the reference; the paper says "at each iteration"). ``adl_per_image=true`` draws
  it per image instead.
- Positions (``adl_points=reference``): wsolevaluation's ResNet-50 puts ADL after block 0 of layer3 and after
  blocks 0 and 2 (the last) of layer4 (``_ADL_POSITION`` in wsol/resnet.py). On any backbone this reads as:
  after the first block of the second-to-last stage, after the first block of the last stage, and at the end
  of the last stage (for EfficientNet-Lite0, after its 1x1 head conv, on the features the CAM reads). A
  comma-separated list of insertion points (``saolctl`` names them ``S:B``, see ``Backbone.insertion_points``;
  a colon, so that ``-O adl_points=3:0,4:2`` stays a string) puts them elsewhere.
- The random draw uses torch's global generator (the layer sits inside the forward pass, which the
  objective's numpy generator does not reach); seeding torch makes runs reproducible.
- The CAM (wsolevaluation's ``return_cam``) averages w_c * X over channels; ours sums them (the same map up to
  a factor, which the min-max normalisation removes). The off-the-shelf ImageNet classifier can be adopted
  (``eval --pretrained``): at evaluation ADL is the identity.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

import torch
from torch import Tensor, nn

from saolctl.errors import UserError
from saolctl.methods.base import Method, Objective
from saolctl.methods.cam import CAM_MAP
from saolctl.methods.options import Option, in_unit_interval
from saolctl.models.backbones import Backbone
from saolctl.models.heads import GapFc
from saolctl.models.losses import CamObjective
from saolctl.models.outputs import ModelOutput

REFERENCE = "reference"
_POINTS = re.compile(r"^\d+:\d+(,\d+:\d+)*$")


# --------------------------------------------------------------------------------------------
# pure functions


def self_attention(features: Tensor) -> Tensor:
    """Return ADL's self-attention map (B, 1, h, w): the mean over channels of features (B, C, h, w)."""
    return features.mean(dim=1, keepdim=True)


def drop_mask(attention: Tensor, threshold: float) -> Tensor:
    """Return 0 where attention >= threshold * its per-image maximum, 1 elsewhere (same shape, float)."""
    peak = attention.flatten(1).amax(dim=1).view(-1, *([1] * (attention.dim() - 1)))
    return (attention < threshold * peak).to(attention.dtype)


def importance_map(attention: Tensor) -> Tensor:
    """Return ADL's importance map sigmoid(attention)."""
    return torch.sigmoid(attention)


def adl(features: Tensor, threshold: float, choose_drop: Tensor) -> Tensor:
    """Return features times the drop mask where ``choose_drop`` is true, times the importance map elsewhere.

    ``choose_drop``: a bool tensor broadcastable to (B, 1, 1, 1) (one draw for the batch, or one per image).
    """
    attention = self_attention(features)
    chosen = torch.where(choose_drop, drop_mask(attention, threshold), importance_map(attention))
    return features * chosen


# --------------------------------------------------------------------------------------------
# the layer and the network


class AttentionDropout(nn.Module):
    """The ADL layer: identity at evaluation; in training, features times the drop mask or the importance map."""

    def __init__(self, drop_rate: float, threshold: float, per_image: bool = False) -> None:
        super().__init__()
        self.drop_rate = drop_rate
        self.threshold = threshold
        self.per_image = per_image

    def forward(self, x: Tensor) -> Tensor:
        """Return x at evaluation; x times a randomly chosen map in training."""
        if not self.training:
            return x
        draws = x.shape[0] if self.per_image else 1
        choose_drop = torch.rand(draws, 1, 1, 1, device=x.device) < self.drop_rate
        return adl(x, self.threshold, choose_drop)

    def extra_repr(self) -> str:
        return f"drop_rate={self.drop_rate}, threshold={self.threshold}, per_image={self.per_image}"


def adl_points(backbone: Backbone, spec: str) -> list[str]:
    """Return the insertion points an ``adl_points`` value names on this backbone."""
    if spec != REFERENCE:
        points = [p.strip() for p in spec.split(",")]
        valid = backbone.insertion_points()
        bad = [p for p in points if p not in valid]
        if bad:
            raise UserError(f"adl_points: {backbone.name} has no insertion point {bad[0]}; valid: {', '.join(valid)}")
        return list(dict.fromkeys(points))
    if backbone.num_stages < 2:
        raise UserError(f"adl_points=reference needs a backbone of at least 2 stages; {backbone.name} has 1")
    last = backbone.num_stages
    blocks_last = sum(p.startswith(f"{last}:") for p in backbone.insertion_points())
    return list(dict.fromkeys([f"{last - 1}:0", f"{last}:0", f"{last}:{blocks_last - 1}"]))


class AdlNet(nn.Module):
    """Backbone with ADL layers after some blocks + GAP-FC; the CAM of class c is sum_k w_ck X^L_k."""

    def __init__(self, backbone: Backbone, num_classes: int, options: Mapping[str, Any]) -> None:
        super().__init__()
        self.points = adl_points(backbone, str(options["adl_points"]))
        for point in self.points:
            layer = AttentionDropout(float(options["adl_drop_rate"]), float(options["adl_threshold"]),
                                     bool(options["adl_per_image"]))
            backbone.insert_after(point, layer, "adl")
        self.backbone = backbone
        self.head = GapFc(backbone.channels[-1], num_classes)

    def forward(self, x: Tensor) -> ModelOutput:
        """Classify a batch (B, 3, H, W)."""
        features = self.backbone(x)[-1]
        logits = self.head(features)
        return ModelOutput(method=AdlMethod.name, logits=logits, features=features, gap_logits=logits)


def _points_check(value: str) -> str | None:
    if value == REFERENCE or _POINTS.match(value.replace(" ", "")):
        return None
    return (f"adl_points must be {REFERENCE} or a comma-separated list of insertion points S:B (e.g. 3:0,4:2), "
            f"got {value!r}")


class AdlMethod(Method):
    """ADL: attention-based dropout inside the backbone in training; a CAM network at evaluation."""

    name = "adl"
    paper = "Choe and Shim, Attention-based Dropout Layer for Weakly Supervised Object Localization, CVPR 2019"
    summary = "ADL layers after some backbone blocks (training only: drop mask or importance map) + GAP -> FC"
    uses_cutmix = False
    options = (
        Option("adl_drop_rate", float, 0.75, "ADL: probability that a layer applies its drop mask rather than its "
               "importance map", in_unit_interval("adl_drop_rate")),
        Option("adl_threshold", float, 0.9, "ADL: drop where the channel-mean attention >= this times its maximum",
               in_unit_interval("adl_threshold")),
        Option("adl_points", str, REFERENCE, "ADL: where its layers go: `reference` (after the first block of the last "
               "two stages and at the end of the last) or insertion points S:B, e.g. 3:0,4:0,4:2", _points_check),
        Option("adl_per_image", bool, False, "ADL: draw drop-or-importance per image (the reference draws once "
               "per batch)"),
    )
    map_kinds = (CAM_MAP,)

    def build(self, backbone: Backbone, num_classes: int, options: Mapping[str, Any]) -> nn.Module:
        """Return the backbone with ADL layers inserted + GAP-FC."""
        return AdlNet(backbone, num_classes, options)

    def objective(self, options: Mapping[str, Any]) -> Objective:
        """Return CE of the logits against the label (no CutMix)."""
        return CamObjective()

    def adopt_imagenet_classifier(self, model: nn.Module, classifier: nn.Linear) -> None:
        """Load the classifier's weights into the GAP-FC layer (ADL is the identity at evaluation)."""
        model.head.fc.load_state_dict(classifier.state_dict())


METHOD = AdlMethod()
