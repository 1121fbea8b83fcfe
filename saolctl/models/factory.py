"""create_model / create_objective: build any (backbone, method) pair from named options."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from torch import nn

from saolctl.errors import UserError
from saolctl.models.backbones import build_backbone, list_backbones
from saolctl.models.heads import AbnNet, CamNet, SaolNet, SaolOptions
from saolctl.models.losses import (
    AbnObjective,
    CamObjective,
    CutMixOptions,
    SaolLossOptions,
    SaolObjective,
)

METHODS = ("cam", "abn", "saol")


@dataclass(frozen=True)
class ModelConfig:
    """Everything that defines a model and its objective; stored in checkpoints as a plain dict."""

    backbone: str
    method: str
    num_classes: int
    last_stride: int = 2  # 1 keeps the last stage at stride 1 (WSOL protocol: 14x14 at 224 px)
    small_stem: bool = False  # stem keeps full resolution, for 32-96 px inputs
    saol: SaolOptions = field(default_factory=SaolOptions)
    saol_loss: SaolLossOptions = field(default_factory=SaolLossOptions)
    cutmix: CutMixOptions = field(default_factory=CutMixOptions)

    def to_dict(self) -> dict[str, Any]:
        """Return the config as plain Python values (lists for tuples) for a weights_only checkpoint."""
        d = asdict(self)
        d["saol"]["taps"] = list(self.saol.taps)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        """Rebuild a config from :meth:`to_dict`'s output."""
        d = dict(d)
        saol = dict(d.pop("saol", {}))
        if "taps" in saol:
            saol["taps"] = tuple(saol["taps"])
        return cls(
            saol=SaolOptions(**saol),
            saol_loss=SaolLossOptions(**d.pop("saol_loss", {})),
            cutmix=CutMixOptions(**d.pop("cutmix", {})),
            **d,
        )


# flat option name -> (group, field) as users and the CLI spell them
_OPTION_MAP: dict[str, tuple[str, str]] = {
    "saol_taps": ("saol", "taps"),
    "saol_mid": ("saol", "mid"),
    "saol_kernel": ("saol", "kernel"),
    "saol_att_kernel": ("saol", "att_kernel"),
    "saol_resize": ("saol", "resize"),
    "saol_gap_head": ("saol", "gap_head"),
    "saol_grid": ("saol", "grid"),
    "sd_beta": ("saol_loss", "sd_beta"),
    "ss1_weight": ("saol_loss", "ss1_weight"),
    "ss2_weight": ("saol_loss", "ss2_weight"),
    "att_entropy": ("saol_loss", "att_entropy"),
    "att_ss_weight": ("saol_loss", "att_ss_weight"),
    "att_cam_weight": ("saol_loss", "att_cam_weight"),
    "cutmix_prob": ("cutmix", "prob"),
    "cutmix_alpha": ("cutmix", "alpha"),
    "last_stride": ("", "last_stride"),
    "small_stem": ("", "small_stem"),
}


def list_options() -> list[str]:
    """Return the names of all model and objective options accepted by create_model."""
    return list(_OPTION_MAP)


def make_config(backbone: str, method: str, num_classes: int, **options: Any) -> ModelConfig:
    """Validate names and options and return a ModelConfig."""
    if method not in METHODS:
        raise UserError(f"unknown method {method!r}; valid: {', '.join(METHODS)}")
    if backbone not in list_backbones():
        raise UserError(f"unknown backbone {backbone!r}; valid: {', '.join(list_backbones())}")
    if int(num_classes) < 2:
        raise UserError(f"num_classes must be at least 2, got {num_classes}")
    unknown = sorted(set(options) - set(_OPTION_MAP))
    if unknown:
        raise UserError(f"unknown option(s) {', '.join(unknown)}; valid: {', '.join(_OPTION_MAP)}")
    groups: dict[str, dict[str, Any]] = {"saol": {}, "saol_loss": {}, "cutmix": {}, "": {}}
    for name, value in options.items():
        group, key = _OPTION_MAP[name]
        groups[group][key] = tuple(value) if key == "taps" else value
    c = groups["cutmix"]
    if not 0.0 <= float(c.get("prob", 0.5)) <= 1.0:
        raise UserError(f"cutmix_prob must be in [0, 1], got {c['prob']}")
    if not 0.0 <= float(groups["saol_loss"].get("sd_beta", 0.5)) <= 1.0:
        raise UserError(f"sd_beta must be in [0, 1], got {groups['saol_loss']['sd_beta']}")
    return ModelConfig(
        backbone=backbone,
        method=method,
        num_classes=int(num_classes),
        saol=SaolOptions(**groups["saol"]),
        saol_loss=SaolLossOptions(**groups["saol_loss"]),
        cutmix=CutMixOptions(**groups["cutmix"]),
        **groups[""],
    )


def build_model(config: ModelConfig, *, pretrained: bool = False, init: str | Path | None = None) -> nn.Module:
    """Build the network a ModelConfig describes; ``model.config`` holds the config."""
    backbone = build_backbone(
        config.backbone,
        pretrained=pretrained,
        init=init,
        last_stride=config.last_stride,
        small_stem=config.small_stem,
    )
    model: nn.Module
    if config.method == "cam":
        model = CamNet(backbone, config.num_classes)
    elif config.method == "abn":
        model = AbnNet(backbone, config.num_classes)
    else:
        model = SaolNet(backbone, config.num_classes, config.saol)
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


def create_objective(config: ModelConfig) -> CamObjective | AbnObjective | SaolObjective:
    """Return the training objective of a config's method."""
    if config.method == "cam":
        return CamObjective(config.cutmix)
    if config.method == "abn":
        return AbnObjective(config.cutmix)
    return SaolObjective(config.cutmix, config.saol_loss)


def option_defaults() -> dict[str, Any]:
    """Return every option's default value, keyed by its flat name."""
    groups = {"saol": SaolOptions(), "saol_loss": SaolLossOptions(), "cutmix": CutMixOptions()}
    out: dict[str, Any] = {}
    base = {f.name: f.default for f in fields(ModelConfig) if f.name in ("last_stride", "small_stem")}
    for name, (group, key) in _OPTION_MAP.items():
        out[name] = base[key] if group == "" else getattr(groups[group], key)
    return out
