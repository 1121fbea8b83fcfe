"""The base of every WSOL method: one object that says how its network is built, trained and read.

A method is a small subclass of :class:`Method` that fills in a few class attributes (name, paper,
options, map kinds) and overrides two hooks, ``build`` and ``objective`` — pytorch-grad-cam's shape: one
base, each method a small class. docs/methods.md walks through adding one.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable, ClassVar, Mapping, Protocol

import numpy as np
import pandas as pd
from torch import Tensor, nn

from saolctl.errors import UserError
from saolctl.methods.options import CUTMIX_OPTIONS, Option
from saolctl.models.backbones import Backbone
from saolctl.models.losses import CutMixOptions, LossTerms
from saolctl.models.outputs import ModelOutput


class Objective(Protocol):
    """A training objective: runs the model on a batch and returns its named loss terms."""

    term_names: tuple[str, ...]

    def __call__(self, model: nn.Module, images: Tensor, labels: Tensor, rng: np.random.Generator) -> LossTerms: ...


@dataclass(frozen=True)
class MapInputs:
    """What a map kind may read to draw the maps of one batch."""

    model: nn.Module  # the network (unwrapped), in eval mode
    output: ModelOutput  # its output on the batch
    targets: Tensor  # (B,) the class each image's map is for
    images: Tensor | None = None  # (B, 3, S, S) the batch itself, for kinds computed from the input


def _always(_model: nn.Module) -> bool:
    return True


@dataclass(frozen=True)
class MapKind:
    """One kind of score map: how it is computed, and what the model and its forward pass must provide.

    ``compute`` returns raw maps (B, h, w) at any resolution, before upsampling and normalisation.
    Kinds that need something beyond a plain forward pass say so here rather than in the evaluators:
    ``forward_options`` are keyword arguments the forward pass must get (e.g. ``with_gap_head=True``),
    ``available(model)`` says whether this model can draw the kind at all (``needs`` says what it lacks),
    and ``needs_images`` marks kinds that read the input images (post-hoc kinds computed with gradients).
    """

    name: str
    doc: str
    compute: Callable[[MapInputs], Tensor]
    forward_options: Mapping[str, Any] = field(default_factory=dict)
    available: Callable[[nn.Module], bool] = _always
    needs: str = ""
    needs_images: bool = False

    def check_available(self, model: nn.Module) -> None:
        """Raise UserError in one line when ``model`` cannot draw this kind."""
        if not self.available(model):
            raise UserError(f"map kind {self.name!r} needs {self.needs or 'what this model lacks'}")


class Method:
    """A WSOL method: subclass it, fill in the class attributes and override ``build`` and ``objective``."""

    name: ClassVar[str] = ""  # how users name it: --method NAME
    paper: ClassVar[str] = ""  # the citation
    summary: ClassVar[str] = ""  # one line: what its head does
    options: ClassVar[tuple[Option, ...]] = ()  # its own options (beyond the backbone's and CutMix's)
    map_kinds: ClassVar[tuple[MapKind, ...]] = ()  # its own map kinds; the first is the default
    uses_cutmix: ClassVar[bool] = True  # its objective trains on CutMix-ed batches (cutmix_prob / cutmix_alpha)
    # this method's defaults for options it shares with others (e.g. {"cutmix_prob": 1.0}); values are checked
    option_defaults: ClassVar[Mapping[str, Any]] = {}

    def build(self, backbone: Backbone, num_classes: int, options: Mapping[str, Any]) -> nn.Module:
        """Return the network on ``backbone``; its forward returns a ModelOutput with ``method=self.name``."""
        raise NotImplementedError(f"method {self.name!r} does not say how its network is built")

    def objective(self, options: Mapping[str, Any]) -> Objective:
        """Return the training objective for these option values."""
        raise NotImplementedError(f"method {self.name!r} does not say how it is trained")

    def adopt_imagenet_classifier(self, model: nn.Module, classifier: nn.Linear) -> None:
        """Give ``model`` an off-the-shelf ImageNet classifier's final layer (for `eval` without a checkpoint)."""
        raise UserError(f"method {self.name!r} cannot use an off-the-shelf ImageNet classifier's head")

    def report_notes(self, table: pd.DataFrame) -> list[str]:
        """Return lines this method adds to compare's report.md, given the comparison table."""
        return []

    # ---- derived from the declarations above

    def all_options(self) -> tuple[Option, ...]:
        """Return the options a model of this method stores: its own, then CutMix's if it uses CutMix.

        Each carries this method's default: ``option_defaults`` replaces a shared option's declared one.
        """
        declared = self.options + (CUTMIX_OPTIONS if self.uses_cutmix else ())
        names = {o.name for o in declared}
        stray = sorted(set(self.option_defaults) - names)
        if stray:
            raise UserError(f"method {self.name!r} gives defaults to options it does not have: {', '.join(stray)}")
        out = []
        for opt in declared:
            if opt.name in self.option_defaults:
                opt = replace(opt, default=self.option_defaults[opt.name])
                opt.validate(opt.default)
            out.append(opt)
        return tuple(out)

    @property
    def default_map_kind(self) -> str:
        """Return the name of the default map kind."""
        return self.map_kinds[0].name

    def term_names(self) -> tuple[str, ...]:
        """Return the names of the objective's loss terms (with default options)."""
        return tuple(self.objective({o.name: o.default for o in self.all_options()}).term_names)


def cutmix_options(options: Mapping[str, Any]) -> CutMixOptions:
    """Return the CutMix settings (probability, Beta's alpha) of a method's option values."""
    return CutMixOptions(prob=float(options["cutmix_prob"]), alpha=float(options["cutmix_alpha"]))
