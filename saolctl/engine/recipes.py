"""Per-dataset recipes: the defaults `train` uses unless an option overrides them."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

from saolctl.data import is_digits_folder


@dataclass(frozen=True)
class Recipe:
    """Training defaults for one kind of data; every field can be overridden from the CLI.

    The recipe is what every method shares (budget, optimiser, sizes, augmentation and ``model_options`` such
    as the backbone's); what defines a method belongs to the method, and ``method_options`` holds only the
    settings one method is tuned with on this data (e.g. SAOL's). ``options_for(method)`` merges the two.
    """

    name: str
    backbone: str
    optimizer: str  # "sgd" (momentum, Nesterov) or "adamw"
    img_size: int
    epochs: int
    batch_size: int
    lr: float  # peak learning rate of the head; the backbone gets lr * backbone_lr_mult
    backbone_lr_mult: float
    weight_decay: float
    momentum: float
    warmup_epochs: float
    pretrained: bool
    model_options: dict[str, Any]  # options every method gets (e.g. the backbone's last_stride)
    method_options: dict[str, dict[str, Any]] = field(default_factory=dict)  # method name -> its options

    def options_for(self, method: str) -> dict[str, Any]:
        """Return the model options a run of ``method`` starts from: the shared ones, then that method's."""
        return {**self.model_options, **self.method_options.get(method, {})}

    def with_overrides(self, **overrides: Any) -> "Recipe":
        """Return a copy with every non-None override applied."""
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})

    def to_dict(self) -> dict[str, Any]:
        """Return the recipe as plain values."""
        return asdict(self)


# The embedded default: a CIFAR-style ResNet-20 at 48 px (6x6 output grid), sized so that the three methods
# train in about 1.5 minutes together on 2 CPU cores (in channels-last memory format, the CPU default). Every
# method gets exactly this budget.
# AdamW: on these digits SGD (lr 0.1, one-cycle) stayed near chance for 4 epochs, AdamW 3e-3 did not.
# Batch 64: batch 32 trained better (CAM val top-1 after 4 epochs 73.8 / 83.0 for seeds 1 / 2 vs 67.8 / 78.4)
# but costs ~10% more time per image on CPU. AdamW lr 1e-3 and 1e-2 were both worse than 3e-3 (37.4 and 44.2
# for seed 1).
# 48 px instead of 64 (issue 12, "quickstart speed"): 1.8x fewer pixels; the digits (22-38 px at 48) keep every
# stroke of their 8x8 sources. At 48 px, 3 epochs were too few (seed 0 test top-1: CAM 64.6, ABN 67.4 on
# validation) and 4 epochs of 3000 images worse still; 4 epochs of 4000 keep every method above 75. Warm-up
# 0.2 epochs (was 0.6): CAM seed 0, 3 epochs, 69.5 vs 64.6. SAOL's projections at 64 channels (its default 256
# is sized for ResNet-50's 2048-channel features; ResNet-20's last stage has 64): SAOL's step 25% cheaper.
# Measurements: docs/benchmarks.md, "Quickstart budget".
DIGITS = Recipe(
    name="digits",
    backbone="cifar_resnet20",
    optimizer="adamw",
    img_size=48,
    epochs=4,
    batch_size=64,
    lr=3e-3,
    backbone_lr_mult=1.0,
    weight_decay=0.05,
    momentum=0.9,
    warmup_epochs=0.2,
    pretrained=False,
    model_options={},
    # SAOL: from docs/saol-localization.md (chosen on the validation split). CutMix p = 0.25 (was 0.5, and was
    # then shared by every method; CAM and ABN are now vanilla, without CutMix): with 0.5 a SAOL net trained
    # from scratch stayed at chance for the whole budget on 2 of 3 seeds (CAM did not). L_ss2 off (its teacher
    # is the untrained model itself; turning it off rescued one of those seeds) and the attention-targeted
    # self-supervision on (our addition: it keeps the attention from collapsing onto a few cells).
    # ACoL: its branches' 3x3 convs at 128 channels (the reference's 1024 is sized for ResNet-50's 2048-channel
    # features; ResNet-20's last stage has 64, and 1024 would make each branch ~40x the backbone), with
    # BatchNorm (our option): without it, at this lr and from scratch, the branches barely trained
    # (saolctl/methods/acol.py says by how much).
    method_options={"saol": {"cutmix_prob": 0.25, "att_ss_weight": 1.0, "ss2_weight": 0.0, "saol_mid": 64},
                    "acol": {"acol_mid": 128, "acol_bn": True},
                    # SPG-C at 128 channels (the reference's 512 is sized for ResNet-50; from ResNet-20's 64
                    # channels it would double the network)
                    "spg": {"spg_c_width": 128},
                    # HaS hides half of each training image by default (drop 0.5); on these 48-px digits, from
                    # scratch in 4 epochs, that stayed at chance on 1 of 3 seeds (test top-1 22.5 +- 8.5 over
                    # seeds 0-2). Chosen on val (seeds 0, 1; docs/methods.md): drop 0.25 reached 64.0 / 46.0,
                    # 4-px patches (the reference's reading) 41.0 / 16.2, an 8x8 grid 39.6 / 18.8.
                    "has": {"has_drop_rate": 0.25}},
)

# Real photos: the WSOL protocol's setting (ResNet-50, last stage at stride 1, 224 px, fine-tuned from
# ImageNet weights, head learning rate 10x the backbone's).
PHOTOS = Recipe(
    name="photos",
    backbone="resnet50",
    optimizer="sgd",
    img_size=224,
    epochs=10,
    batch_size=32,
    lr=0.01,
    backbone_lr_mult=0.1,
    weight_decay=1e-4,
    momentum=0.9,
    warmup_epochs=0.0,
    pretrained=True,
    model_options={"last_stride": 1},
    # SAOL options as chosen on pets3's validation split, and CUB's (20 classes, issue 15) prefers them too among
    # SAOL's readings (val contrib MaxBoxAccV2 36.8 vs paper 32.4, re-implementation 32.3, 3 seeds;
    # docs/saol-localization.md)
    method_options={"saol": {"att_ss_weight": 1.0, "ss2_weight": 0.0}},
)


# Real photos with the offline ImageNet-pretrained EfficientNet-Lite0 (the one backbone whose weights
# need no internet): last stage at stride 1 (14x14 maps at 224 px), small batches for small data sets.
LITE0_PHOTOS = replace(PHOTOS, name="lite0-photos", backbone="efficientnet_lite0", batch_size=16)


def recipe_for(source: str, backbone: str | None = None) -> Recipe:
    """Return the default recipe for a data source ("digits", a folder ``saolctl digits`` wrote, or photos)."""
    if source == "digits" or is_digits_folder(source):
        return DIGITS
    return LITE0_PHOTOS if backbone == "efficientnet_lite0" else PHOTOS
