"""Post-hoc maps for any model: the Grad-CAM family of pytorch-grad-cam (the optional ``posthoc`` extra).

Every kind is computed at the backbone's last stage (``model.backbone.stages[-1]``, the layer CAM reads) for
a given class per image, at feature resolution and after the package's ReLU; the evaluation then upsamples
and min-max normalises it like every other map (SPEC 2.2), so all kinds meet the same protocol.

The score differentiated is ``model(x).logits[:, c]``: the class logit for CAM and ABN (the GAP-FC head of
the perception branch for ABN), and for SAOL, whose logits are log-probabilities, ``log y_hat_c``, the log of
the attention-weighted class probability (SPEC 1.3).

Score-CAM is this project's own batched implementation (the package scores one image at a time behind a
progress bar); ``tests/test_posthoc.py`` checks it against the package's ``ScoreCAM``.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from saolctl.errors import UserError
from saolctl.methods.base import MapInputs, MapKind

INSTALL_HINT = "pip install 'saolctl[posthoc]' (the grad-cam package)"


@dataclass(frozen=True)
class PosthocKind:
    """One post-hoc map kind: the pytorch-grad-cam class that defines it and where it comes from."""

    name: str
    cam_class: str  # class name in pytorch_grad_cam ("" for this project's own implementation)
    paper: str
    uses_target: bool = True  # False: the map is the same for every class (EigenCAM)


POSTHOC_KINDS: dict[str, PosthocKind] = {k.name: k for k in (
    PosthocKind("gradcam", "GradCAM", "Selvaraju et al., Grad-CAM, ICCV 2017"),
    PosthocKind("gradcampp", "GradCAMPlusPlus", "Chattopadhay et al., Grad-CAM++, WACV 2018"),
    PosthocKind("xgradcam", "XGradCAM", "Fu et al., Axiom-based Grad-CAM, BMVC 2020"),
    PosthocKind("hirescam", "HiResCAM", "Draelos and Carin, HiResCAM, 2020 (arXiv 2011.08891)"),
    PosthocKind("layercam", "LayerCAM", "Jiang et al., LayerCAM, IEEE TIP 2021"),
    PosthocKind("scorecam", "", "Wang et al., Score-CAM, CVPR Workshops 2020"),
    PosthocKind("eigencam", "EigenCAM", "Muhammad and Yeasin, Eigen-CAM, IJCNN 2020", uses_target=False),
)}


class LogitsOf(nn.Module):
    """A saolctl model seen as a plain classifier: ``forward(x)`` returns its logits (B, K)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        """Return the model's logits for a batch (B, 3, H, W)."""
        return self.model(x).logits


def target_layer(model: nn.Module) -> nn.Module:
    """Return the layer post-hoc maps are computed at: the backbone's last stage."""
    return model.backbone.stages[-1]


def grad_cam_module(kind: str) -> Any:
    """Return the imported ``pytorch_grad_cam`` package, or fail in one line saying what to install."""
    try:
        return importlib.import_module("pytorch_grad_cam")
    except ImportError:
        raise UserError(f"map kind {kind!r} needs the posthoc extra: {INSTALL_HINT}") from None


def posthoc_raw_maps(model: nn.Module, images: Tensor, targets: Tensor, kind: str) -> Tensor:
    """Return post-hoc maps (B, h, w) of classes ``targets`` (B,) at feature resolution, before normalisation."""
    spec = POSTHOC_KINDS.get(kind)
    if spec is None:
        raise UserError(f"unknown post-hoc map kind {kind!r}; valid: {', '.join(POSTHOC_KINDS)}")
    if spec.name == "scorecam":
        return score_cam(model, images, targets)
    package = grad_cam_module(kind)
    layer = target_layer(model)
    was_training = model.training
    cam = getattr(package, spec.cam_class)(model=LogitsOf(model), target_layers=[layer])
    try:
        with torch.enable_grad():
            logits = cam.activations_and_grads(images)  # (B, K); hooks keep the layer's activations and gradients
            if cam.uses_gradients:
                score = logits.gather(1, targets[:, None].to(logits.device)).sum()
                score.backward()
        activations = cam.activations_and_grads.activations[0].cpu().numpy()  # (B, C, h, w)
        grads = (cam.activations_and_grads.gradients[0].cpu().numpy()
                 if cam.activations_and_grads.gradients else None)
        wanted = [package.utils.model_targets.ClassifierOutputTarget(int(t)) for t in targets.tolist()]
        raw = cam.get_cam_image(images, layer, wanted, activations, grads, eigen_smooth=False)  # (B, h, w)
    finally:
        cam.activations_and_grads.release()
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    return torch.from_numpy(np.maximum(np.asarray(raw, dtype=np.float32), 0.0)).to(images.device)


@torch.no_grad()
def score_cam(model: nn.Module, images: Tensor, targets: Tensor, chunk: int = 256) -> Tensor:
    """Return Score-CAM maps (B, h, w): channels weighted by the softmax of the class score of masked inputs."""
    was_training = model.training
    model.eval()
    features: list[Tensor] = []
    handle = target_layer(model).register_forward_hook(lambda _m, _i, out: features.append(out))
    try:
        model(images)
    finally:
        handle.remove()
    acts = features[0].float()  # (B, C, h, w)
    b, c = acts.shape[:2]
    up = torch.nn.functional.interpolate(acts, size=images.shape[-2:], mode="bilinear", align_corners=True)
    flat = up.flatten(2)
    lo, hi = flat.min(dim=2).values[..., None, None], flat.max(dim=2).values[..., None, None]
    masks = (up - lo) / (hi - lo + 1e-8)  # (B, C, H, W) each channel scaled to [0, 1]
    scores = torch.empty(b, c, device=images.device)
    for i in range(b):
        for start in range(0, c, chunk):
            masked = images[i][None] * masks[i, start:start + chunk, None]  # (n, 3, H, W)
            scores[i, start:start + chunk] = model(masked).logits[:, int(targets[i])].float()
    weights = scores.softmax(dim=1)  # (B, C)
    model.train(was_training)
    return torch.einsum("bc,bchw->bhw", weights, acts).clamp_min(0.0)


def _package_installed() -> bool:
    """Return whether pytorch-grad-cam can be imported (without importing it)."""
    return importlib.util.find_spec("pytorch_grad_cam") is not None


def _map_kind(spec: PosthocKind) -> MapKind:
    """Return the registry's view of one post-hoc kind (computed from the batch's images, with gradients)."""

    def compute(inputs: MapInputs) -> Tensor:  # raw_maps has checked that the images were given
        return posthoc_raw_maps(inputs.model, inputs.images, inputs.targets, spec.name)

    needs_package = bool(spec.cam_class)
    return MapKind(name=spec.name, doc=f"post-hoc, at the backbone's last stage ({spec.paper})", compute=compute,
                   needs_images=True, available=(lambda _m: _package_installed()) if needs_package else (lambda _m: True),
                   needs=f"the posthoc extra: {INSTALL_HINT}" if needs_package else "")


POSTHOC_MAP_KINDS: tuple[MapKind, ...] = tuple(_map_kind(spec) for spec in POSTHOC_KINDS.values())
