"""CAM: the classic GAP-FC head, whose class activation map is the class-weighted sum of the last features."""

from __future__ import annotations

from typing import Any, Mapping

from torch import Tensor, nn

from saolctl.methods.base import MapInputs, MapKind, Method, Objective, cutmix_options
from saolctl.models.backbones import Backbone
from saolctl.models.heads import GapFc
from saolctl.models.losses import CamObjective
from saolctl.models.outputs import ModelOutput


class CamNet(nn.Module):
    """Backbone + GAP-FC; the CAM of class c is sum_k w_ck X^L_k."""

    def __init__(self, backbone: Backbone, num_classes: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = GapFc(backbone.channels[-1], num_classes)

    def forward(self, x: Tensor) -> ModelOutput:
        """Classify a batch (B, 3, H, W)."""
        features = self.backbone(x)[-1]
        logits = self.head(features)
        return ModelOutput(method=CamMethod.name, logits=logits, features=features, gap_logits=logits)


def cam_map(inputs: MapInputs) -> Tensor:
    """Return sum_k w_ck X^L_k (B, h, w) with the GAP-FC weights (no bias, no ReLU)."""
    return inputs.model.head.class_maps(inputs.output.features, inputs.targets)


class CamMethod(Method):
    """CAM (SPEC 1.1): GAP -> FC with bias; loss CE(z, y~)."""

    name = "cam"
    paper = "Zhou et al., Learning Deep Features for Discriminative Localization, CVPR 2016"
    summary = "GAP -> FC (bias on); the map is the class-weighted sum of the last features"
    map_kinds = (MapKind("cam", "sum_k w_ck X^L_k with the GAP-FC weights (no bias, no ReLU)", cam_map),)

    def build(self, backbone: Backbone, num_classes: int, options: Mapping[str, Any]) -> nn.Module:
        """Return backbone + GAP-FC."""
        return CamNet(backbone, num_classes)

    def objective(self, options: Mapping[str, Any]) -> Objective:
        """Return CE of the logits against the (CutMix-mixed) target."""
        return CamObjective(cutmix_options(options))

    def adopt_imagenet_classifier(self, model: nn.Module, classifier: nn.Linear) -> None:
        """Load the classifier's weights into the GAP-FC layer: the CAM of the off-the-shelf network."""
        model.head.fc.load_state_dict(classifier.state_dict())


METHOD = CamMethod()
