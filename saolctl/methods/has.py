"""HaS: Hide-and-Seek, CAM trained on images with random grid patches hidden (Singh and Lee, ICCV 2017).

Paper: the training image is divided into a grid of S x S-pixel patches and each patch is hidden with
probability p (0.5), so that the network cannot rely on the most discriminative part alone and must seek
the others; a hidden patch takes the mean pixel value of the data, which keeps the activations' expected
value the same at test time, when nothing is hidden. The network and its map are CAM's.

Reference (clovaai/wsolevaluation, wsol/method/has.py, called in main.py ``_wsol_training`` on every
training batch; options ``--has_grid_size 4`` and ``--has_drop_rate 0.5`` in config.py): for each image it
walks ``range(0, size, grid_size)`` in both directions, so **the "grid size" is the patch side in pixels**
(4 px patches at 224 px: a 56 x 56 grid), as in the original Hide-and-Seek code; each patch is hidden when
``random.random() <= drop_rate`` by setting it to 0 after the ImageNet mean/std normalisation (the mean);
patches at the far edge are cut short by the image border. (Its two loops also swap height and width,
which only matters for non-square inputs.)

Ours: ``has_grid_size`` is read as **the number of cells per side** by default (``has_grid_mode=cells``):
4 gives a 4 x 4 grid of 56-px patches at 224 px (the paper's largest patch size) and of 12-px patches on the
48-px digits, the same hiding at every image size; ``has_grid_mode=pixels`` is the reference's reading
(patches of ``has_grid_size`` pixels). A cell is hidden with probability ``has_drop_rate`` (drawn as
``u < p`` from the objective's ``rng``: p = 0 hides nothing, p = 1 everything), set to 0 after normalisation
(the dataset mean, as the reference). ``has_grid_size=0`` hides nothing (as the reference). Hiding happens
only in the objective: evaluation, localization and the maps see whole images.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from saolctl.methods.base import Method, Objective
from saolctl.methods.cam import CAM_MAP, CamNet
from saolctl.methods.options import Option, in_unit_interval, non_negative, one_of
from saolctl.models.backbones import Backbone
from saolctl.models.losses import LossTerms
from saolctl.models.outputs import ModelOutput

GRID_MODES = ("cells", "pixels")


def cell_edges(length: int, grid_size: int, mode: str) -> list[int]:
    """Return the edges [0, ..., length] of the cells along one side of an image.

    ``cells``: ``grid_size`` cells of (near) equal size; ``pixels``: cells ``grid_size`` pixels long, the last
    one cut short by the border (the reference's walk). Every cell is at least one pixel long.
    """
    if mode == "cells":
        n = min(grid_size, length)
        return [i * length // n for i in range(n + 1)]
    return [*range(0, length, grid_size), length]


def hide_patches(images: Tensor, grid_size: int, drop_rate: float, rng: np.random.Generator,
                 mode: str = "cells", fill: float = 0.0) -> tuple[Tensor, Tensor]:
    """Return (images with random grid cells set to ``fill``, which cells were hidden (B, rows, cols) bool).

    Each cell of each image is hidden independently with probability ``drop_rate`` (one draw ``u < p`` per
    cell from ``rng``); ``images`` (B, C, H, W) is not modified. ``grid_size=0`` hides nothing.
    """
    b, _, h, w = images.shape
    if grid_size <= 0:
        return images, torch.zeros(b, 0, 0, dtype=torch.bool, device=images.device)
    rows, cols = cell_edges(h, grid_size, mode), cell_edges(w, grid_size, mode)
    hidden = torch.from_numpy(rng.random((b, len(rows) - 1, len(cols) - 1)) < drop_rate).to(images.device)
    heights = torch.tensor(np.diff(rows), device=images.device)
    widths = torch.tensor(np.diff(cols), device=images.device)
    pixels = hidden.repeat_interleave(heights, dim=1).repeat_interleave(widths, dim=2)  # (B, H, W)
    out = images.masked_fill(pixels.unsqueeze(1), fill)
    return out, hidden


class HasObjective:
    """HaS: L = CE(z(hide(x)), y), where hide sets random grid cells of each training image to the mean."""

    term_names = ("cls",)

    def __init__(self, grid_size: int, drop_rate: float, mode: str) -> None:
        self.grid_size, self.drop_rate, self.mode = grid_size, drop_rate, mode

    def __call__(self, model: nn.Module, images: Tensor, labels: Tensor, rng: np.random.Generator) -> LossTerms:
        """Hide patches of the training batch, run the model on it and return its loss terms."""
        hidden, _ = hide_patches(images, self.grid_size, self.drop_rate, rng, self.mode)
        out: ModelOutput = model(hidden)
        cls = F.cross_entropy(out.logits, labels)
        return LossTerms(cls, {"cls": cls})


class HasMethod(Method):
    """Hide-and-Seek: CAM's network and map, trained on images with random grid cells hidden."""

    name = "has"
    paper = ("Singh and Lee, Hide-and-Seek: Forcing a Network to be Meticulous for Weakly-supervised Object and "
             "Action Localization, ICCV 2017")
    summary = "CAM (GAP -> FC) trained on images with random grid patches hidden; the map is CAM's"
    options = (
        Option("has_grid_size", int, 4, "HaS: cells per side of the hiding grid (`has_grid_mode=pixels`: patch "
               "side in pixels, wsolevaluation's reading); 0 hides nothing", non_negative("has_grid_size")),
        Option("has_drop_rate", float, 0.5, "HaS: probability that each cell is hidden",
               in_unit_interval("has_drop_rate")),
        Option("has_grid_mode", str, "cells", "HaS: how `has_grid_size` is read: `cells` (per side) or `pixels` "
               "(patch side, as wsolevaluation's code)", one_of("has_grid_mode", GRID_MODES, "'cells' or 'pixels'")),
    )
    map_kinds = (CAM_MAP,)
    uses_cutmix = False

    def build(self, backbone: Backbone, num_classes: int, options: Mapping[str, Any]) -> nn.Module:
        """Return backbone + GAP-FC (CAM's network: nothing is hidden outside the objective)."""
        return CamNet(backbone, num_classes, self.name)

    def objective(self, options: Mapping[str, Any]) -> Objective:
        """Return CE on the batch with random grid cells hidden."""
        return HasObjective(int(options["has_grid_size"]), float(options["has_drop_rate"]),
                            str(options["has_grid_mode"]))


METHOD = HasMethod()
