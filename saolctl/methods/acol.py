"""ACoL: Adversarial Complementary Learning (Zhang et al., CVPR 2018).

Paper: two classifiers share the backbone's features. Classifier A finds the most discriminative region of
the target class (its class map, a CAM computed directly by a 1x1 conv to K channels); that region, where
A's normalised map reaches a threshold, is erased from the features that classifier B sees, so that B must
find complementary object parts. Both are trained with cross-entropy; the localization map fuses the two
branches' maps by an elementwise maximum.

Reference (clovaai/wsolevaluation, wsol/method/acol.py with wsol/method/util.py and ``ResNetAcol`` in
wsol/resnet.py; ``--acol_threshold 0.7`` in config.py):
- each branch is conv3x3(C -> 1024) -> ReLU -> conv3x3(1024 -> 1024) -> ReLU -> conv1x1(1024 -> K), no
  BatchNorm; its logits are the global average of its class maps;
- A's map of the erased class is detached, min-max normalised over space (``normalize_tensor``), and the
  feature cells where it is ``>= threshold`` are set to 0 (one mask over all channels) before B;
- the erased class is the ground truth in training and for the maps (``model(images, targets)``), and A's
  arg-max when no label is given (accuracy);
- loss CE(A) + CE(B); the prediction (``logits``) is **A's alone**;
- map (``return_cam``): max(normalise(A_c), normalise(B_c)), each min-max normalised over space, with B run
  on the features erased by A's map of the same class c. So at evaluation B sees erased features too.

Ours follows the reference in all of the above. The branches' hidden width is the option ``acol_mid``
(1024, the reference's; the digits recipe uses 128 on ResNet-20's 64 channels). ``acol_bn`` (off by
default, as the reference) puts a BatchNorm after each 3x3 conv: trained from scratch at the digits
recipe's shared AdamW lr 3e-3, the BatchNorm-free branches barely moved (30 steps on 64 digits: top-1 16%,
vs 100% with BatchNorm and 95% without it at lr 1e-3), so the digits recipe turns it on. A map with max = min
(constant) normalises to 0, so nothing is erased (the reference divides 0 by 0: NaN, also nothing erased).
Map kinds: ``fused`` (the reference's map, default), ``branch_a`` and ``branch_b`` (each branch's raw class
map; B's on the features erased for the target class).
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from saolctl.methods.base import MapInputs, MapKind, Method, Objective
from saolctl.methods.options import Option, in_unit_interval, positive
from saolctl.models.backbones import Backbone
from saolctl.models.heads import min_max_normalize, select_class
from saolctl.models.losses import LossTerms
from saolctl.models.outputs import ModelOutput


def erase_mask(class_map: Tensor, threshold: float) -> Tensor:
    """Return ACoL's keep mask (B, 1, h, w): 0 where the min-max normalised map (B, h, w) is >= threshold, else 1.

    The map is detached: erasing steers what branch B sees, it is not a path for gradients.
    """
    return (min_max_normalize(class_map.detach()) < threshold).to(class_map.dtype).unsqueeze(1)


class AcolBranch(nn.Sequential):
    """conv3x3 -> ReLU -> conv3x3 -> ReLU -> conv1x1 to K class maps (the reference's classifier_A / _B).

    ``bn`` puts a BatchNorm after each 3x3 conv (our option; the reference has none).
    """

    def __init__(self, in_ch: int, mid: int, num_classes: int, bn: bool = False) -> None:
        super().__init__(*_conv3x3(in_ch, mid, bn), *_conv3x3(mid, mid, bn), nn.Conv2d(mid, num_classes, 1))


def _conv3x3(in_ch: int, out_ch: int, bn: bool) -> list[nn.Module]:
    """Return conv3x3 -> (BN ->) ReLU as a list of layers."""
    conv = nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=not bn)
    return [conv, nn.BatchNorm2d(out_ch), nn.ReLU()] if bn else [conv, nn.ReLU()]


class AcolNet(nn.Module):
    """Backbone + two branches: A on X^L, B on X^L with A's region of the class erased; logits are A's."""

    def __init__(self, backbone: Backbone, num_classes: int, mid: int, threshold: float, bn: bool = False) -> None:
        super().__init__()
        self.backbone = backbone
        self.branch_a = AcolBranch(backbone.channels[-1], mid, num_classes, bn)
        self.branch_b = AcolBranch(backbone.channels[-1], mid, num_classes, bn)
        self.threshold = threshold

    def complementary(self, features: Tensor, maps_a: Tensor, classes: Tensor) -> Tensor:
        """Return branch B's class maps (B, K, h, w) on the features with A's region of ``classes`` erased."""
        return self.branch_b(features * erase_mask(select_class(maps_a, classes), self.threshold))

    def forward(self, x: Tensor, labels: Tensor | None = None) -> ModelOutput:
        """Classify a batch (B, 3, H, W); B erases the region of ``labels`` (training) or of A's prediction."""
        features = self.backbone(x)[-1]  # (B, C, h, w)
        maps_a = self.branch_a(features)  # (B, K, h, w)
        logits = maps_a.mean(dim=(2, 3))
        erased_for = logits.argmax(dim=1) if labels is None else labels
        maps_b = self.complementary(features, maps_a, erased_for)
        return ModelOutput(method=AcolMethod.name, logits=logits, features=features,
                           extras={"maps_a": maps_a, "maps_b": maps_b, "logits_b": maps_b.mean(dim=(2, 3))})


class AcolObjective:
    """ACoL: L = CE(z_A, y) + CE(z_B, y), B erasing A's region of the ground-truth class."""

    term_names = ("cls_a", "cls_b")

    def __call__(self, model: nn.Module, images: Tensor, labels: Tensor, rng: np.random.Generator) -> LossTerms:
        """Run the model on a training batch (erasing for the true labels) and return its loss terms."""
        out: ModelOutput = model(images, labels=labels)
        cls_a = F.cross_entropy(out.logits, labels)
        cls_b = F.cross_entropy(out.extras["logits_b"], labels)
        return LossTerms(cls_a + cls_b, {"cls_a": cls_a, "cls_b": cls_b})


def _maps_for_targets(inputs: MapInputs) -> tuple[Tensor, Tensor]:
    """Return (A_c, B_c) (B, h, w) for the target classes, B run on the features erased for those classes."""
    maps_a = inputs.output.extras["maps_a"]
    maps_b = inputs.model.complementary(inputs.output.features, maps_a, inputs.targets)
    return select_class(maps_a, inputs.targets), select_class(maps_b, inputs.targets)


def fused_map(inputs: MapInputs) -> Tensor:
    """Return max(N(A_c), N(B_c)) (B, h, w), N a min-max normalisation over space (the reference's map)."""
    a, b = _maps_for_targets(inputs)
    return torch.maximum(min_max_normalize(a), min_max_normalize(b))


def branch_a_map(inputs: MapInputs) -> Tensor:
    """Return branch A's class map A_c (B, h, w)."""
    return _maps_for_targets(inputs)[0]


def branch_b_map(inputs: MapInputs) -> Tensor:
    """Return branch B's class map B_c (B, h, w) on the features erased for class c."""
    return _maps_for_targets(inputs)[1]


class AcolMethod(Method):
    """ACoL: two classifiers, B on the features with A's most discriminative region erased."""

    name = "acol"
    paper = "Zhang et al., Adversarial Complementary Learning for Weakly Supervised Object Localization, CVPR 2018"
    summary = ("two conv classifiers on X^L; B sees X^L with A's region of the class (normalised map >= threshold) "
               "erased; the map is max of both")
    options = (
        Option("acol_threshold", float, 0.7, "ACoL: erase where A's min-max normalised class map is >= this",
               in_unit_interval("acol_threshold")),
        Option("acol_mid", int, 1024, "ACoL: channels of each branch's two 3x3 convs", positive("acol_mid")),
        Option("acol_bn", bool, False, "ACoL: BatchNorm after each branch's 3x3 convs (our addition; the "
               "reference has none)"),
    )
    map_kinds = (
        MapKind("fused", "max of both branches' min-max normalised class maps (B on erased features)", fused_map),
        MapKind("branch_a", "branch A's class map A_c", branch_a_map),
        MapKind("branch_b", "branch B's class map B_c, on the features erased by A's region of class c", branch_b_map),
    )
    uses_cutmix = False

    def build(self, backbone: Backbone, num_classes: int, options: Mapping[str, Any]) -> nn.Module:
        """Return backbone + the two branches."""
        return AcolNet(backbone, num_classes, int(options["acol_mid"]), float(options["acol_threshold"]),
                       bool(options["acol_bn"]))

    def objective(self, options: Mapping[str, Any]) -> Objective:
        """Return CE of both branches."""
        return AcolObjective()


METHOD = AcolMethod()
