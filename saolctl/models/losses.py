"""One training objective per method, each returning its named loss terms and the total.

Pure loss functions come first (testable on hand-made tensors), then the objectives that run the
model on a (possibly CutMix-ed) batch: CAM {cls}; ABN {att, per}; SAOL {cls, gap, ss1, ss2, entropy}.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from saolctl.data.cutmix import MixedBatch, cutmix
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
    """Return mean_b -sum_k target_bk log softmax(logits)_bk, for (B, K) logits and targets."""
    return -(target * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


def nll_of_log_probs(log_probs: Tensor, target: Tensor) -> Tensor:
    """Return mean_b -sum_k target_bk log p_bk for log-probabilities that already sum to 1 (no softmax)."""
    return -(target * log_probs).sum(dim=1).mean()


def kl_divergence(p: Tensor, log_q: Tensor, dim: int = 1) -> Tensor:
    """Return KL(p || q) summed over ``dim`` (elementwise over the rest), with 0 log 0 = 0."""
    return (torch.xlogy(p, p) - p * log_q).sum(dim=dim)


def self_distillation(gap_logits: Tensor, saol_probs: Tensor, target: Tensor, beta: float) -> Tensor:
    """Return (1 - beta) CE(z_g, target) + beta KL(y_hat.detach() || softmax(z_g))."""
    ce = soft_cross_entropy(gap_logits, target)
    kl = kl_divergence(saol_probs.detach(), F.log_softmax(gap_logits, dim=1)).mean()
    return (1.0 - beta) * ce + beta * kl


def paste_bce(spatial_probs: Tensor, labels_a: Tensor, labels_b: Tensor, pasted: Tensor) -> Tensor:
    """Return L_ss1: BCE of p_ij = Y_yB / (Y_yA + Y_yB) against the pasted fraction, over images with yA != yB.

    spatial_probs: (B, K, H, W) Y; pasted: (H, W) or (B, H, W) fraction of each cell that was pasted.
    """
    valid = labels_a != labels_b  # (B,)
    if not bool(valid.any()):
        return spatial_probs.new_zeros(())
    y = spatial_probs[valid]  # (V, K, H, W)
    idx = torch.arange(y.shape[0], device=y.device)
    ya = y[idx, labels_a[valid]]  # (V, H, W)
    yb = y[idx, labels_b[valid]]
    p = (yb / (ya + yb + EPS)).clamp(EPS, 1.0 - EPS)
    target = pasted.expand_as(p) if pasted.dim() == 2 else pasted[valid]
    return F.binary_cross_entropy(p, target)


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
    """Return H(A) = -sum_ij A_ij log A_ij averaged over the batch, for log A (B, H, W)."""
    return -(log_attention.exp() * log_attention).flatten(1).sum(dim=1).mean()


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
    """CutMix recipe shared by all methods (SPEC 1.3)."""

    prob: float = 0.5
    alpha: float = 1.0

    def apply(self, images: Tensor, labels: Tensor, rng: np.random.Generator) -> MixedBatch:
        """Return the batch CutMix-ed with this recipe."""
        return cutmix(images, labels, prob=self.prob, alpha=self.alpha, rng=rng)


class CamObjective:
    """CAM: L = CE(z, y~)."""

    term_names = ("cls",)

    def __init__(self, cutmix_opts: CutMixOptions) -> None:
        self.cutmix = cutmix_opts

    def __call__(self, model: nn.Module, images: Tensor, labels: Tensor, rng: np.random.Generator) -> LossTerms:
        """Run the model on a training batch and return its loss terms."""
        batch = self.cutmix.apply(images, labels, rng)
        out: ModelOutput = model(batch.images)
        cls = mixed_cross_entropy(out.logits, batch)
        return LossTerms(cls, {"cls": cls})


class AbnObjective:
    """ABN: L = CE(z_att, y~) + CE(z_per, y~)."""

    term_names = ("att", "per")

    def __init__(self, cutmix_opts: CutMixOptions) -> None:
        self.cutmix = cutmix_opts

    def __call__(self, model: nn.Module, images: Tensor, labels: Tensor, rng: np.random.Generator) -> LossTerms:
        """Run the model on a training batch and return its loss terms."""
        batch = self.cutmix.apply(images, labels, rng)
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
    att_entropy: float = 0.0


class SaolObjective:
    """SAOL: L_cls + L_gap + w1 L_ss1 + w2 L_ss2 - w_H H(A); ss terms only on CutMix-ed batches."""

    term_names = ("cls", "gap", "ss1", "ss2", "entropy")

    def __init__(self, cutmix_opts: CutMixOptions, opts: SaolLossOptions) -> None:
        self.cutmix = cutmix_opts
        self.opts = opts

    def __call__(self, model: nn.Module, images: Tensor, labels: Tensor, rng: np.random.Generator) -> LossTerms:
        """Run the model on a training batch (and, for L_ss2, once more without gradient)."""
        o = self.opts
        batch = self.cutmix.apply(images, labels, rng)
        out: ModelOutput = model(batch.images)
        assert out.spatial_log_probs is not None and out.log_attention is not None
        target = batch.soft_targets(out.logits.shape[1])
        cls = nll_of_log_probs(out.logits, target)
        zero = out.logits.new_zeros(())
        gap = self_distillation(out.gap_logits, out.probs, target, o.sd_beta) if out.gap_logits is not None else zero
        ss1, ss2 = zero, zero
        if batch.mixed:
            grid = (out.spatial_log_probs.shape[-2], out.spatial_log_probs.shape[-1])
            pasted = area_fraction(batch.paste_mask(), grid)  # (H, W)
            if o.ss1_weight > 0:
                ss1 = paste_bce(out.spatial_log_probs.exp(), batch.labels_a, batch.labels_b, pasted)
            if o.ss2_weight > 0 and bool((pasted >= 0.5).any()):
                with torch.no_grad():
                    teacher = model(images).spatial_log_probs[batch.perm]  # Y0 of x_B, (B, K, H, W)
                ss2 = paste_kl(teacher, out.spatial_log_probs, pasted)
        entropy = attention_entropy(out.log_attention)
        total = cls + gap + o.ss1_weight * ss1 + o.ss2_weight * ss2 - o.att_entropy * entropy
        return LossTerms(total, {"cls": cls, "gap": gap, "ss1": ss1, "ss2": ss2, "entropy": entropy})
