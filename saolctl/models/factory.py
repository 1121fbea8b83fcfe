"""create_model / create_objective: build any (backbone, method) pair from named options.

The methods themselves (their networks, objectives, options and maps) live in ``saolctl.methods``; this
module turns names and option values into a :class:`ModelConfig` and asks the method registry to build it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

from saolctl.errors import UserError
from saolctl.methods.options import BACKBONE_OPTIONS, values_of
from saolctl.methods.registry import all_options, get_method
from saolctl.models.backbones import build_backbone, list_backbones

if TYPE_CHECKING:  # saolctl.methods.base imports saolctl.models
    from saolctl.methods.base import Objective


@dataclass(frozen=True)
class ModelConfig:
    """Everything that defines a model and its objective; stored in checkpoints as a plain dict."""

    backbone: str
    method: str
    num_classes: int
    last_stride: int = 2  # 1 keeps the last stage at stride 1 (WSOL protocol: 14x14 at 224 px)
    small_stem: bool = False  # stem keeps full resolution, for 32-96 px inputs
    options: dict[str, Any] = field(default_factory=dict)  # every option of the method, by name (defaults filled)

    def to_dict(self) -> dict[str, Any]:
        """Return the config as plain Python values (lists for tuples) for a weights_only checkpoint."""
        declared = {o.name: o for o in get_method(self.method).all_options()}
        return {"backbone": self.backbone, "method": self.method, "num_classes": self.num_classes,
                "last_stride": self.last_stride, "small_stem": self.small_stem,
                "options": {k: declared[k].plain(v) if k in declared else v for k, v in self.options.items()}}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        """Rebuild a config from :meth:`to_dict`'s output, or from the grouped dict checkpoints held before.

        Before the method registry, options sat in groups ("saol", "saol_loss", "cutmix") for every method;
        each option names its old place (``Option.legacy``), and groups of other methods' options are dropped.
        Options the method no longer has but another still declares are dropped too: a CAM trained when CAM
        used CutMix stored cutmix_prob / cutmix_alpha, which do not change its network.
        """
        method = get_method(str(d["method"]))
        given = dict(d.get("options", {}))
        for opt in method.all_options():
            if opt.legacy is not None:
                group, key = opt.legacy
                old = d.get(group)
                if isinstance(old, dict) and key in old:
                    given.setdefault(opt.name, old[key])
        own = {o.name for o in method.all_options()}
        others = {o.name for o in all_options()} - own
        given = {k: v for k, v in given.items() if k not in others}
        unknown = sorted(set(given) - own)
        if unknown:
            raise UserError(f"unknown option(s) of {method.name}: {', '.join(unknown)}")
        return cls(backbone=str(d["backbone"]), method=method.name, num_classes=int(d["num_classes"]),
                   last_stride=d.get("last_stride", 2), small_stem=d.get("small_stem", False),
                   options=values_of(method.all_options(), given))


def list_options() -> list[str]:
    """Return the names of all model and objective options accepted by create_model (every method's)."""
    return [o.name for o in all_options()]


def option_defaults(method: str | None = None) -> dict[str, Any]:
    """Return every option's default value, keyed by its name, or a method's (its own defaults included).

    Without a method, a shared option shows its declared default (cutmix_prob: 0.5), not a method's own.
    """
    options = all_options() if method is None else get_method(method).all_options() + BACKBONE_OPTIONS
    return {o.name: o.default for o in options}


def make_config(backbone: str, method: str, num_classes: int, **options: Any) -> ModelConfig:
    """Validate names and options and return a ModelConfig.

    Options of other methods are checked and then ignored, so one set of options (a recipe's) serves
    every method.
    """
    spec = get_method(method)
    if backbone not in list_backbones():
        raise UserError(f"unknown backbone {backbone!r}; valid: {', '.join(list_backbones())}")
    if int(num_classes) < 2:
        raise UserError(f"num_classes must be at least 2, got {num_classes}")
    known = {o.name: o for o in all_options()}
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise UserError(f"unknown option(s) {', '.join(unknown)}; valid: {', '.join(known)}")
    for name, value in options.items():
        known[name].validate(value)
    base = values_of(BACKBONE_OPTIONS, options)
    return ModelConfig(backbone=backbone, method=spec.name, num_classes=int(num_classes), **base,
                       options=values_of(spec.all_options(), options))


def build_model(config: ModelConfig, *, pretrained: bool = False, init: str | Path | None = None) -> nn.Module:
    """Build the network a ModelConfig describes; ``model.config`` holds the config."""
    backbone = build_backbone(
        config.backbone,
        pretrained=pretrained,
        init=init,
        last_stride=config.last_stride,
        small_stem=config.small_stem,
    )
    model = get_method(config.method).build(backbone, config.num_classes, config.options)
    model.config = config  # type: ignore[assignment]
    return model


def create_model(
    backbone: str = "resnet18",
    method: str = "saol",
    num_classes: int = 1000,
    *,
    pretrained: bool = False,
    init: str | Path | None = None,
    **options: Any,
) -> nn.Module:
    """Create a (backbone, method) network; ``options`` are the named options of SPEC section 1."""
    return build_model(make_config(backbone, method, num_classes, **options), pretrained=pretrained, init=init)


def create_objective(config: ModelConfig) -> "Objective":
    """Return the training objective of a config's method."""
    return get_method(config.method).objective(config.options)
