"""CutMix: CAM trained on CutMix-ed batches (Yun et al., ICCV 2019).

Paper: a box of area ratio 1 - λ, λ ~ Beta(α, α), is cut from another image of the batch and pasted at a
uniform centre; the target mixes the two labels by area, λ y_A + (1 - λ) y_B. The paper reports that this
improves CAM's weakly supervised localization, and the network itself is CAM's.

Reference (clovaai/wsolevaluation, main.py ``_wsol_training`` and wsol/method/cutmix.py): with probability
``--cutmix_prob`` (default 1.0) a batch is mixed: one λ, one box and one permutation for the whole batch,
λ then reset to the exact kept-area ratio after the box is clipped to the image, and the loss is
λ CE(z, y_A) + (1 - λ) CE(z, y_B); ``--cutmix_beta`` (default 1.0) is the Beta parameter.

Ours: ``CamNet`` and the `cam` map, trained by ``CamObjective`` with saolctl's CutMix
(saolctl/data/cutmix.py: the same per-batch draw; CE against the mixed soft target, which equals the
reference's λ-weighted sum of two CEs). Defaults are the reference's: ``cutmix_prob`` 1.0 (SAOL keeps its
own 0.5) and ``cutmix_alpha`` 1.0. Nothing is mixed at evaluation: the objective is the only place CutMix runs.
"""

from __future__ import annotations

from typing import Any, Mapping

from torch import nn

from saolctl.methods.base import Method, Objective, cutmix_options
from saolctl.methods.cam import CAM_MAP, CamNet
from saolctl.models.backbones import Backbone
from saolctl.models.losses import CamObjective


class CutMixMethod(Method):
    """CAM's network and map, trained on CutMix-ed batches: L = CE(z, λ y_A + (1 - λ) y_B)."""

    name = "cutmix"
    paper = ("Yun et al., CutMix: Regularization Strategy to Train Strong Classifiers with Localizable Features, "
             "ICCV 2019")
    summary = "CAM (GAP -> FC) trained on CutMix-ed batches; the map is CAM's"
    map_kinds = (CAM_MAP,)
    uses_cutmix = True
    option_defaults = {"cutmix_prob": 1.0, "cutmix_alpha": 1.0}  # wsolevaluation's --cutmix_prob, --cutmix_beta

    def build(self, backbone: Backbone, num_classes: int, options: Mapping[str, Any]) -> nn.Module:
        """Return backbone + GAP-FC (CAM's network)."""
        return CamNet(backbone, num_classes, self.name)

    def objective(self, options: Mapping[str, Any]) -> Objective:
        """Return CE of the logits against the CutMix-mixed target."""
        return CamObjective(cutmix_options(options))


METHOD = CutMixMethod()
