"""One training objective per method, each returning its named loss terms and the total.

Pure loss functions come first (testable on hand-made tensors), then the objectives that run the
model on a batch: CAM {cls} (plain batches; CutMix-ed ones for the `cutmix` method); ABN {att, per} (plain
batches); SAOL {cls, gap, ss1, ss2, entropy, att_ss, att_cam} (CutMix-ed batches). HaS's and ACoL's
objectives sit in their own modules (saolctl/methods/has.py, acol.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from saolctl.data.cutmix import MixedBatch, cutmix, no_mix
from saolctl.engine.distributed import unwrap_model
from saolctl.models.batchnorm import frozen_running_stats
from saolctl.models.heads import resize_to
from saolctl.models.outputs import ModelOutput

EPS = 1e-8


@dataclass(frozen=True)
class LossTerms:
    """The total loss and every named term it is made of (terms as computed, before weights)."""

    total: Tensor
    terms: dict[str, Tensor] = field(default_factory=dict)

    def as_floats(self) -> dict[str, float]:
        """Return every term and the total as Python floats (for logging)."""
        out = {k: float(v.detach()) for k, v in self.terms.items()}
        out["total"] = float(self.total.detach())
        return out


# --------------------------------------------------------------------------------------------
# pure functions


def soft_cross_entropy(logits: Tensor, target: Tensor) -> Tensor:
    """Return mean_b -sum_k target_bk log softmax(logits)_bk, for (B, K) logits and probability targets."""
    return F.cross_entropy(logits, target)


def nll_of_log_probs(log_probs: Tensor, target: Tensor) -> Tensor:
    """Return mean_b -sum_k target_bk log p_bk for log-probabilities that already sum to 1 (no softmax)."""
    return -(target * log_probs).sum(dim=1).mean()


def kl_divergence(p: Tensor, log_q: Tensor, dim: int = 1) -> Tensor:
    """Return KL(p || q) summed over ``dim`` (elementwise over the rest), with 0 log 0 = 0."""
    return F.kl_div(log_q, p, reduction="none").sum(dim=dim)


def self_distillation(gap_logits: Tensor, saol_probs: Tensor, target: Tensor, beta: float) -> Tensor:
    """Return (1 - beta) CE(z_g, target) + beta KL(y_hat.detach() || softmax(z_g))."""
    ce = soft_cross_entropy(gap_logits, target)
    kl = kl_divergence(saol_probs.detach(), F.log_softmax(gap_logits, dim=1)).mean()
    return (1.0 - beta) * ce + beta * kl


def paste_bce(spatial_log_probs: Tensor, labels_a: Tensor, labels_b: Tensor, pasted: Tensor) -> Tensor:
    """Return L_ss1: BCE of p_ij = Y_yB / (Y_yA + Y_yB) against the pasted fraction, over images with yA != yB.

    Computed in the logits form p = sigmoid(log Y_yB - log Y_yA), which is exact, needs no epsilon and
    is safe under autocast (CUDA autocast refuses ``F.binary_cross_entropy`` on probabilities).
    spatial_log_probs: (B, K, H, W) log Y; pasted: (H, W) or (B, H, W) fraction of each cell that was pasted.
    """
    valid = labels_a != labels_b  # (B,)
    if not bool(valid.any()):
        return spatial_log_probs.new_zeros((), dtype=torch.float32)
    log_y = spatial_log_probs[valid].float()  # (V, K, H, W)
    idx = torch.arange(log_y.shape[0], device=log_y.device)
    logit = log_y[idx, labels_b[valid]] - log_y[idx, labels_a[valid]]  # (V, H, W) log(Y_yB / Y_yA)
    target = pasted.expand_as(logit) if pasted.dim() == 2 else pasted[valid]
    return F.binary_cross_entropy_with_logits(logit, target.to(logit.dtype))


def paste_kl(teacher_log_probs: Tensor, student_log_probs: Tensor, pasted: Tensor, min_fraction: float = 0.5) -> Tensor:
    """Return L_ss2: mean over cells pasted at least ``min_fraction`` of KL(Y0 || Y), the teacher detached.

    teacher/student: (B, K, H, W) log-probabilities; pasted: (H, W) fraction of each cell that was pasted.
    """
    cells = pasted >= min_fraction  # (H, W)
    if not bool(cells.any()):
        return student_log_probs.new_zeros(())
    t = teacher_log_probs.detach()
    kl = (t.exp() * (t - student_log_probs)).sum(dim=1)  # (B, H, W)
    return kl[:, cells].mean()


def attention_entropy(log_attention: Tensor) -> Tensor:
    """Return H(A) = -sum_ij A_ij log A_ij averaged over the batch, for log A (B, H, W).

    Computed from log A rather than with ``torch.special.entr(A)`` (same values): entr's gradient is
    infinite where A underflows to 0, which turns the whole gradient into NaN even at weight 0.
    """
    return -(log_attention.exp() * log_attention).flatten(1).sum(dim=1).mean()


def normalize_mass(weights: Tensor) -> Tensor:
    """Return non-negative weights (B, H, W) divided by their sum per image; an all-zero map becomes uniform."""
    flat = weights.clamp_min(0.0).flatten(1)
    total = flat.sum(dim=1, keepdim=True)
    uniform = torch.full_like(flat, 1.0 / flat.shape[1])
    return torch.where(total > EPS, flat / total.clamp_min(EPS), uniform).view_as(weights)


def attention_paste_target(teacher_attention: Tensor, perm: Tensor, pasted: Tensor, lam: float) -> Tensor:
    """Return the attention a CutMix-ed image should have: each source's own attention, inside its region.

    T = lam * N((1 - m) A0_A) + (1 - lam) * N(m A0_B), with A0 the attention (B, H, W) of the clean
    images, A0_B = A0[perm], m (H, W) the pasted fraction of each cell and N a per-image normalisation;
    the mass of each region equals its share of the mixed label, as the classification loss asks.
    """
    kept = normalize_mass((1.0 - pasted) * teacher_attention)
    paste = normalize_mass(pasted * teacher_attention[perm])
    return lam * kept + (1.0 - lam) * paste


def attention_kl(target: Tensor, log_attention: Tensor) -> Tensor:
    """Return mean_b KL(T_b || A_b) over positions, for a target T (B, H, W) and log A (B, H, W)."""
    return kl_divergence(target.detach().flatten(1), log_attention.flatten(1)).mean()


def cam_attention_target(features: Tensor, fc_weight: Tensor, labels_a: Tensor, labels_b: Tensor,
                         lam: float, grid: tuple[int, int]) -> Tensor:
    """Return the CAM-shaped target attention (B, H, W): N(ReLU(CAM_yA)) mixed with N(ReLU(CAM_yB)) by lam.

    features: X^L (B, C, h, w); fc_weight: the GAP-FC head's weights (K, C); maps are resized to the grid.
    """
    cams = torch.einsum("bchw,bkc->bkhw", features, torch.stack([fc_weight[labels_a], fc_weight[labels_b]], 1))
    cams = resize_to(cams, grid, "bilinear")
    target_a, target_b = normalize_mass(cams[:, 0]), normalize_mass(cams[:, 1])
    return lam * target_a + (1.0 - lam) * target_b


def area_fraction(mask: Tensor, grid: tuple[int, int]) -> Tensor:
    """Return the fraction (H, W) of each output-grid cell covered by a pixel mask (1, 1, H_img, W_img)."""
    return F.adaptive_avg_pool2d(mask, grid)[0, 0]


def mixed_cross_entropy(logits: Tensor, batch: MixedBatch) -> Tensor:
    """Return CE against the mixed target lam * y_A + (1 - lam) * y_B."""
    return soft_cross_entropy(logits, batch.soft_targets(logits.shape[1]))


# --------------------------------------------------------------------------------------------
# objectives


@dataclass(frozen=True)
class CutMixOptions:
    """CutMix settings of the methods that train on CutMix-ed batches (`cutmix`, SAOL; SPEC 1.3)."""

    prob: float = 0.5
    alpha: float = 1.0

    def apply(self, images: Tensor, labels: Tensor, rng: np.random.Generator) -> MixedBatch:
        """Return the batch CutMix-ed with these settings."""
        return cutmix(images, labels, prob=self.prob, alpha=self.alpha, rng=rng)


def maybe_cutmix(cutmix_opts: CutMixOptions | None, images: Tensor, labels: Tensor,
                 rng: np.random.Generator) -> MixedBatch:
    """Return the batch CutMix-ed with ``cutmix_opts``, or untouched (and ``rng`` unused) when it is None."""
    return no_mix(images, labels) if cutmix_opts is None else cutmix_opts.apply(images, labels, rng)


class CamObjective:
    """CAM: L = CE(z, y); with CutMix settings (the `cutmix` method), L = CE(z, y~) on CutMix-ed batches."""

    term_names = ("cls",)

    def __init__(self, cutmix_opts: CutMixOptions | None = None) -> None:
        self.cutmix = cutmix_opts

    def __call__(self, model: nn.Module, images: Tensor, labels: Tensor, rng: np.random.Generator) -> LossTerms:
        """Run the model on a training batch and return its loss terms."""
        batch = maybe_cutmix(self.cutmix, images, labels, rng)
        out: ModelOutput = model(batch.images)
        cls = mixed_cross_entropy(out.logits, batch)
        return LossTerms(cls, {"cls": cls})


class AbnObjective:
    """ABN: L = CE(z_att, y) + CE(z_per, y) (vanilla ABN: plain batches unless CutMix settings are given)."""

    term_names = ("att", "per")

    def __init__(self, cutmix_opts: CutMixOptions | None = None) -> None:
        self.cutmix = cutmix_opts

    def __call__(self, model: nn.Module, images: Tensor, labels: Tensor, rng: np.random.Generator) -> LossTerms:
        """Run the model on a training batch and return its loss terms."""
        batch = maybe_cutmix(self.cutmix, images, labels, rng)
        out: ModelOutput = model(batch.images)
        assert out.att_logits is not None
        att = mixed_cross_entropy(out.att_logits, batch)
        per = mixed_cross_entropy(out.logits, batch)
        return LossTerms(att + per, {"att": att, "per": per})


@dataclass(frozen=True)
class SaolLossOptions:
    """Weights of SAOL's objective (SPEC 1.3-1.5)."""

    sd_beta: float = 0.5
    ss1_weight: float = 1.0
    ss2_weight: float = 1.0
    att_entropy: float = 0.0  # our addition: entropy bonus w_H on A
    att_ss_weight: float = 0.0  # our addition: under CutMix, A follows each source's clean attention in its region
    att_cam_weight: float = 0.0  # our addition: A follows the (detached) CAM of the GAP-FC head


class SaolObjective:
    """SAOL: L_cls + L_gap + w1 L_ss1 + w2 L_ss2 - w_H H(A) + w_a L_att_ss + w_c L_att_cam.

    The ss terms run only on CutMix-ed batches; L_ss2 and L_att_ss share one no-gradient pass on the
    clean images, which leaves BatchNorm's running statistics alone and skips the GAP-FC head.
    """

    term_names = ("cls", "gap", "ss1", "ss2", "entropy", "att_ss", "att_cam")

    def __init__(self, cutmix_opts: CutMixOptions, opts: SaolLossOptions) -> None:
        self.cutmix = cutmix_opts
        self.opts = opts

    def __call__(self, model: nn.Module, images: Tensor, labels: Tensor, rng: np.random.Generator) -> LossTerms:
        """Run the model on a training batch (and, for L_ss2 / L_att_ss, once more without gradient)."""
        o = self.opts
        batch = self.cutmix.apply(images, labels, rng)
        out: ModelOutput = model(batch.images)
        assert out.spatial_log_probs is not None and out.log_attention is not None
        target = batch.soft_targets(out.logits.shape[1])
        cls = nll_of_log_probs(out.logits, target)
        zero = out.logits.new_zeros(())
        gap = self_distillation(out.gap_logits, out.probs, target, o.sd_beta) if out.gap_logits is not None else zero
        ss1, ss2, att_ss, att_cam = zero, zero, zero, zero
        grid = (out.spatial_log_probs.shape[-2], out.spatial_log_probs.shape[-1])
        pasted = area_fraction(batch.paste_mask(), grid) if batch.mixed else None  # (H, W)
        if pasted is not None:
            if o.ss1_weight > 0:
                ss1 = paste_bce(out.spatial_log_probs, batch.labels_a, batch.labels_b, pasted)
            want_ss2 = o.ss2_weight > 0 and bool((pasted >= 0.5).any())
            if want_ss2 or o.att_ss_weight > 0:
                with torch.no_grad(), frozen_running_stats(model):
                    # the clean images' Y0 and A0: batch statistics as the student's pass, but BatchNorm's
                    # running statistics move once per step (with the CutMix-ed batch), and no GAP-FC head
                    clean = model(images, with_gap_head=False)
                if want_ss2:
                    ss2 = paste_kl(clean.spatial_log_probs[batch.perm], out.spatial_log_probs, pasted)
                if o.att_ss_weight > 0:
                    target = attention_paste_target(clean.attention, batch.perm, pasted, batch.lam)
                    att_ss = attention_kl(target, out.log_attention)
        if o.att_cam_weight > 0 and out.gap_logits is not None:
            net = unwrap_model(model)
            cam_target = cam_attention_target(out.features.detach(), net.gap_head.fc.weight.detach(),
                                              batch.labels_a, batch.labels_b, batch.lam, grid)
            att_cam = attention_kl(cam_target, out.log_attention)
        entropy = attention_entropy(out.log_attention)
        total = (cls + gap + o.ss1_weight * ss1 + o.ss2_weight * ss2 - o.att_entropy * entropy
                 + o.att_ss_weight * att_ss + o.att_cam_weight * att_cam)
        return LossTerms(total, {"cls": cls, "gap": gap, "ss1": ss1, "ss2": ss2, "entropy": entropy,
                                 "att_ss": att_ss, "att_cam": att_cam})
