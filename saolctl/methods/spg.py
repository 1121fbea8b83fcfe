"""SPG: Self-Produced Guidance (Zhang et al., ECCV 2018), wired as wsolevaluation wires it into ResNet-50.

The classifier (SPG-A) is the backbone, a 1x1 convolution to K class maps and global average pooling
(logits = GAP of the class maps; the map is the class map of the target class, as CAM's up to the bias).
Three auxiliary branches, each ending in one channel of logits, learn from pixel-level masks the network
produces itself: pixels of a map above a high threshold are foreground (1), below a low threshold background
(0), the rest ignored (255) (:func:`self_produced_mask`). The branches and their masks, all at the input's
resolution:

- SPG-B2 on X^{L-1} (the second-to-last stage's output) learns the mask of the classifier's class map of the
  labelled class, min-max normalised per image (thresholds ``spg_threshold_1h`` / ``_1l``: 0.7 / 0.01);
- SPG-B1 on the features after the first block of stage L-1 learns the mask of sigmoid(B2)
  (``_2h`` / ``_2l``: 0.5 / 0.05);
- SPG-C on X^L learns the mask of (sigmoid(B1) + sigmoid(B2)) / 2 (``_3h`` / ``_3l``: 0.7 / 0.1).

L = CE(z, y) + BCE_B2 + BCE_B1 + BCE_C, each BCE the mean over the pixels its mask does not ignore (over the
whole batch). The masks carry no gradient; the branches teach the shared features where the object is.

Choices and quirks, following wsolevaluation (clovaai/wsolevaluation: wsol/method/spg.py, wsol/resnet.py
``ResNetSpg``, config.py), which ports the authors' code (xiaomengyc/SPG):

- Wiring (ResNet-50 there): SPG-A1 = layer3's first block, A2 = the rest of layer3, the classifier a 1x1 conv
  on layer4 (``SPG_A4``). Here: stage L-1 plays layer3 (B1 taps its first block's output, B2 its output),
  stage L plays layer4, on every backbone.
- Branch layers: B1 and B2 each start with their own 3x3 conv + ReLU of width C_{L-1} (1024 on ResNet-50)
  and then share a 3x3 conv + ReLU + 1x1 conv to one channel (``SPG_B_shared``). The paper describes each
  SPG-B block as three convolutional layers and a sigmoid, and says nothing of sharing:
  ``spg_share_b=false`` gives B1 its own last two. SPG-C is a 3x3 conv to ``spg_c_width`` channels + ReLU +
  1x1 conv to one channel (512 on every architecture there; a small backbone's recipe may narrow it). The
  sigmoids sit in the BCE-with-logits. New layers get Xavier-uniform weights and zero biases
  (``initialize_weights(..., 'xavier')``).
- Foreground: map > high; an image with fewer than ``spg_min_foreground`` (30) such pixels takes
  map > 0.7 * its maximum instead (``mask_fg``). Background: map < low, written after the foreground, so it
  wins where both hold. Masks live at the input's resolution (224 x 224 there: every map and branch output
  is upsampled bilinearly to 224 px), so the 30 pixels are of the input's grid.
- The classifier's map for the B2 mask is that of the ground-truth class in training (``labels`` passed
  to the forward pass), upsampled, then min-max normalised per image; a constant map normalises to 0 here
  (the reference divides by zero).
- A batch whose masks ignore every pixel gives a zero term here (the reference's mean over no pixels is NaN).
- Thresholds: config.py ``--spg_threshold_{1,2,3}{h,l}``; the pairs go to B2, B1 and C in that order
  (``get_loss``). Every term has weight 1. wsolevaluation trains its heads at 10x the backbone's learning
  rate (``--lr_classifier_ratio``); saolctl's recipe sets that split for every method.
- The evaluated map is the classifier's class map of the target class (``return_cam``: ``feat_map[labels]``),
  not the branches' outputs. At evaluation the branches are not computed.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from saolctl.errors import UserError
from saolctl.methods.base import MapInputs, MapKind, Method, Objective
from saolctl.methods.options import Option, in_unit_interval, non_negative, positive
from saolctl.models.backbones import Backbone
from saolctl.models.heads import min_max_normalize, select_class
from saolctl.models.losses import LossTerms
from saolctl.models.outputs import ModelOutput

IGNORE = 255  # the mask value of pixels neither confidently foreground nor background
FALLBACK = 0.7  # an image with too few foreground pixels takes those above this fraction of its maximum


# --------------------------------------------------------------------------------------------
# pure functions


def self_produced_mask(scores: Tensor, high: float, low: float, *, min_foreground: int = 0) -> Tensor:
    """Return the self-produced mask (B, h, w) long of maps (B, h, w): 1 above ``high``, 0 below ``low``, else 255.

    An image with fewer than ``min_foreground`` pixels above ``high`` takes those above 0.7 times its
    maximum as foreground instead. Background is written last: a pixel both above and below is 0.
    """
    foreground = scores > high
    if min_foreground > 0:
        few = foreground.flatten(1).sum(dim=1) < min_foreground  # (B,)
        peak = scores.flatten(1).amax(dim=1).view(-1, *([1] * (scores.dim() - 1)))
        foreground = torch.where(few.view_as(peak), scores > FALLBACK * peak, foreground)
    ignore = torch.full_like(scores, IGNORE, dtype=torch.long)
    mask = torch.where(foreground, torch.ones_like(ignore), ignore)
    return torch.where(scores < low, torch.zeros_like(ignore), mask)


def masked_bce(logits: Tensor, mask: Tensor) -> Tensor:
    """Return the BCE of logits (B, h, w) against a mask's 1/0 pixels, averaged over the pixels it does not ignore.

    Ignored pixels (255) take no part; a mask that ignores every pixel gives 0.
    """
    keep = (mask != IGNORE).to(logits.dtype)
    target = (mask == 1).to(logits.dtype)
    loss = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    return (loss * keep).sum() / keep.sum().clamp(min=1.0)


# --------------------------------------------------------------------------------------------
# the network


def _conv_relu(in_ch: int, out_ch: int) -> list[nn.Module]:
    return [nn.Conv2d(in_ch, out_ch, 3, padding=1), nn.ReLU(inplace=True)]


def _to_logit(width: int) -> nn.Sequential:
    """3x3 conv + ReLU + 1x1 conv to one channel: the end of an SPG-B branch."""
    return nn.Sequential(*_conv_relu(width, width), nn.Conv2d(width, 1, 1))


class SpgNet(nn.Module):
    """Backbone + 1x1 conv class maps + GAP (SPG-A); in training also the SPG-B1, B2 and C branches."""

    def __init__(self, backbone: Backbone, num_classes: int, share_b: bool, c_width: int) -> None:
        super().__init__()
        if backbone.num_stages < 2:
            raise UserError(f"spg needs a backbone of at least 2 stages; {backbone.name} has 1")
        self.backbone = backbone
        self.tap = f"{backbone.num_stages - 1}:0"  # after the first block of stage L-1 (layer3.0 on ResNets)
        width = backbone.channels[-2]
        self.classifier = nn.Conv2d(backbone.channels[-1], num_classes, 1)
        self.b1 = nn.Sequential(*_conv_relu(backbone.point_channels(self.tap), width))
        self.b2 = nn.Sequential(*_conv_relu(width, width))
        self.b_shared = _to_logit(width)
        self.b1_own = None if share_b else _to_logit(width)
        self.spg_c = nn.Sequential(*_conv_relu(backbone.channels[-1], c_width), nn.Conv2d(c_width, 1, 1))
        for head in (self.classifier, self.b1, self.b2, self.b_shared, self.b1_own, self.spg_c):
            for m in head.modules() if head is not None else ():
                if isinstance(m, nn.Conv2d):
                    nn.init.xavier_uniform_(m.weight)
                    nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> ModelOutput:
        """Classify a batch (B, 3, H, W); in training ``extras`` also holds the branches' logits."""
        extras: dict[str, Tensor] = {}
        if self.training:
            stages, taps = self.backbone.forward_taps(x, (self.tap,))
            features = stages[-1]
            end_b1 = self.b_shared if self.b1_own is None else self.b1_own
            extras["spg_b1"] = end_b1(self.b1(taps[self.tap]))  # (B, 1, h', w')
            extras["spg_b2"] = self.b_shared(self.b2(stages[-2]))  # (B, 1, h', w')
            extras["spg_c"] = self.spg_c(features)  # (B, 1, h, w)
        else:
            features = self.backbone(x)[-1]
        class_maps = self.classifier(features)  # (B, K, h, w)
        extras["class_maps"] = class_maps
        logits = class_maps.mean(dim=(2, 3))
        return ModelOutput(method=SpgMethod.name, logits=logits, features=features, extras=extras)


class SpgObjective:
    """L = CE(z, y) + the masked BCE of SPG-B2, SPG-B1 and SPG-C against their self-produced masks."""

    term_names = ("cls", "b2", "b1", "c")

    def __init__(self, thresholds: tuple[tuple[float, float], ...], min_foreground: int) -> None:
        self.thresholds = thresholds
        self.min_foreground = min_foreground

    def __call__(self, model: nn.Module, images: Tensor, labels: Tensor, rng: np.random.Generator) -> LossTerms:
        """Run the model on a training batch and return its loss terms."""
        out = model(images)
        cls = F.cross_entropy(out.logits, labels)
        size = tuple(images.shape[-2:])

        def up(t: Tensor) -> Tensor:  # (B, 1, h, w) -> (B, H, W) at the input's resolution
            return F.interpolate(t.float(), size=size, mode="bilinear", align_corners=False)[:, 0]

        b1, b2, c = up(out.extras["spg_b1"]), up(out.extras["spg_b2"]), up(out.extras["spg_c"])
        (h1, l1), (h2, l2), (h3, l3) = self.thresholds
        with torch.no_grad():
            attention = min_max_normalize(up(select_class(out.extras["class_maps"], labels)[:, None]))
            p1, p2 = torch.sigmoid(b1), torch.sigmoid(b2)
            mask_b2 = self_produced_mask(attention, h1, l1, min_foreground=self.min_foreground)
            mask_b1 = self_produced_mask(p2, h2, l2, min_foreground=self.min_foreground)
            mask_c = self_produced_mask((p1 + p2) / 2.0, h3, l3, min_foreground=self.min_foreground)
        terms = {"cls": cls, "b2": masked_bce(b2, mask_b2), "b1": masked_bce(b1, mask_b1), "c": masked_bce(c, mask_c)}
        return LossTerms(cls + terms["b2"] + terms["b1"] + terms["c"], terms)


def class_map(inputs: MapInputs) -> Tensor:
    """Return the classifier's class map of each image's target class (B, h, w), before pooling."""
    return select_class(inputs.output.extras["class_maps"], inputs.targets)


def _threshold(name: str, default: float, doc: str) -> Option:
    return Option(name, float, default, doc, in_unit_interval(name))


class SpgMethod(Method):
    """SPG: auxiliary branches trained on the network's own confident foreground/background masks."""

    name = "spg"
    paper = "Zhang et al., Self-produced Guidance for Weakly-supervised Object Localization, ECCV 2018"
    summary = ("1x1 conv class maps + GAP; branches on stage L-1 (B1, B2) and X^L (C) learn self-produced "
               "foreground/background masks")
    uses_cutmix = False
    options = (
        _threshold("spg_threshold_1h", 0.7, "SPG: B2's mask (normalised class map): foreground above"),
        _threshold("spg_threshold_1l", 0.01, "SPG: B2's mask: background below"),
        _threshold("spg_threshold_2h", 0.5, "SPG: B1's mask (sigmoid of B2): foreground above"),
        _threshold("spg_threshold_2l", 0.05, "SPG: B1's mask: background below"),
        _threshold("spg_threshold_3h", 0.7, "SPG: C's mask (mean sigmoid of B1 and B2): foreground above"),
        _threshold("spg_threshold_3l", 0.1, "SPG: C's mask: background below"),
        Option("spg_min_foreground", int, 30, "SPG: an image with fewer foreground pixels (input grid) takes "
               "those above 0.7 x its maximum", non_negative("spg_min_foreground")),
        Option("spg_share_b", bool, True, "SPG: B1 and B2 share their last two convs (the reference); "
               "false: B1 has its own"),
        Option("spg_c_width", int, 512, "SPG: channels of SPG-C's 3x3 conv", positive("spg_c_width")),
    )
    map_kinds = (MapKind("cam", "the classifier's class map of the target class (1x1 conv, before GAP)", class_map),)

    def build(self, backbone: Backbone, num_classes: int, options: Mapping[str, Any]) -> nn.Module:
        """Return backbone + class maps + the SPG branches."""
        return SpgNet(backbone, num_classes, bool(options["spg_share_b"]), int(options["spg_c_width"]))

    def objective(self, options: Mapping[str, Any]) -> Objective:
        """Return CE + the masked BCE of the three branches."""
        pairs = tuple((float(options[f"spg_threshold_{i}h"]), float(options[f"spg_threshold_{i}l"])) for i in (1, 2, 3))
        return SpgObjective(pairs, int(options["spg_min_foreground"]))

    def adopt_imagenet_classifier(self, model: nn.Module, classifier: nn.Linear) -> None:
        """Load an off-the-shelf ImageNet classifier into the 1x1 conv (GAP of its maps = the classifier's logits)."""
        with torch.no_grad():
            model.classifier.weight.copy_(classifier.weight[:, :, None, None])
            model.classifier.bias.copy_(classifier.bias)


METHOD = SpgMethod()
