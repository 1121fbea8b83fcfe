"""CAM: the classic GAP-FC head, whose class activation map is the class-weighted sum of the last features.

Vanilla CAM (Zhou et al., CVPR 2016): trained with plain cross-entropy on plain batches, no CutMix (CAM
trained with CutMix is the `cutmix` method). ``CamNet`` and ``cam_map`` also serve the methods that change
only how CAM is trained (`cutmix`, `has`).
"""

from __future__ import annotations

from typing import Any, Mapping

from torch import Tensor, nn

from saolctl.methods.base import MapInputs, MapKind, Method, Objective
from saolctl.models.backbones import Backbone
from saolctl.models.heads import GapFc
from saolctl.models.losses import CamObjective
from saolctl.models.outputs import ModelOutput


class CamNet(nn.Module):
    """Backbone + GAP-FC; the CAM of class c is sum_k w_ck X^L_k. ``method`` names the method it serves."""

    def __init__(self, backbone: Backbone, num_classes: int, method: str = "cam") -> None:
        super().__init__()
        self.backbone = backbone
        self.head = GapFc(backbone.channels[-1], num_classes)
        self.method = method

    def forward(self, x: Tensor) -> ModelOutput:
        """Classify a batch (B, 3, H, W)."""
        features = self.backbone(x)[-1]
        logits = self.head(features)
        return ModelOutput(method=self.method, logits=logits, features=features, gap_logits=logits)


def cam_map(inputs: MapInputs) -> Tensor:
    """Return sum_k w_ck X^L_k (B, h, w) with the GAP-FC weights (no bias, no ReLU)."""
    return inputs.model.head.class_maps(inputs.output.features, inputs.targets)


CAM_MAP = MapKind("cam", "sum_k w_ck X^L_k with the GAP-FC weights (no bias, no ReLU)", cam_map)  # also cutmix's, has's, adl's


class CamMethod(Method):
    """CAM (SPEC 1.1): GAP -> FC with bias; loss CE(z, y) on plain batches."""

    name = "cam"
    paper = "Zhou et al., Learning Deep Features for Discriminative Localization, CVPR 2016"
    summary = "GAP -> FC (bias on); the map is the class-weighted sum of the last features"
    map_kinds = (CAM_MAP,)
    uses_cutmix = False

    def build(self, backbone: Backbone, num_classes: int, options: Mapping[str, Any]) -> nn.Module:
        """Return backbone + GAP-FC."""
        return CamNet(backbone, num_classes, self.name)

    def objective(self, options: Mapping[str, Any]) -> Objective:
        """Return CE of the logits against the target."""
        return CamObjective()

    def adopt_imagenet_classifier(self, model: nn.Module, classifier: nn.Linear) -> None:
        """Load the classifier's weights into the GAP-FC layer: the CAM of the off-the-shelf network."""
        model.head.fc.load_state_dict(classifier.state_dict())


METHOD = CamMethod()
