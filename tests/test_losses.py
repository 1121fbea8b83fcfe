"""Each loss term on hand-made tensors with a known value, and CutMix's geometry."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from saolctl.data.cutmix import cutmix, cutmix_box, no_mix
from saolctl.models.losses import (
    area_fraction,
    attention_entropy,
    kl_divergence,
    nll_of_log_probs,
    paste_bce,
    paste_kl,
    self_distillation,
    soft_cross_entropy,
)


def test_kl_of_identical_distributions_is_zero() -> None:
    p = torch.tensor([[0.2, 0.3, 0.5], [1.0, 0.0, 0.0]])
    kl = kl_divergence(p, torch.log(p.clamp_min(1e-30)))
    torch.testing.assert_close(kl, torch.zeros(2))


def test_kl_known_value() -> None:
    p = torch.tensor([[0.5, 0.5]])
    q = torch.tensor([[0.25, 0.75]])
    expected = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    assert abs(float(kl_divergence(p, q.log())) - expected) < 1e-6


def test_soft_cross_entropy_matches_hard_labels_and_mixes_linearly() -> None:
    logits = torch.tensor([[2.0, 0.0, -1.0]])
    hard = F.cross_entropy(logits, torch.tensor([0]))
    assert torch.allclose(soft_cross_entropy(logits, torch.tensor([[1.0, 0.0, 0.0]])), hard)
    mixed = soft_cross_entropy(logits, torch.tensor([[0.7, 0.3, 0.0]]))
    expected = 0.7 * F.cross_entropy(logits, torch.tensor([0])) + 0.3 * F.cross_entropy(logits, torch.tensor([1]))
    assert torch.allclose(mixed, expected)


def test_nll_of_probabilities_takes_no_second_softmax() -> None:
    probs = torch.tensor([[0.5, 0.25, 0.25]])
    assert abs(float(nll_of_log_probs(probs.log(), torch.tensor([[0.0, 1.0, 0.0]]))) - math.log(4)) < 1e-6


def test_paste_bce_against_a_known_mask() -> None:
    # 1 image, 3 classes, 1x2 grid; y_A = 0, y_B = 1. Cell 0 says A (p = 0.2), cell 1 says B (p = 0.8).
    y = torch.zeros(1, 3, 1, 2)
    y[0, 0, 0, 0], y[0, 1, 0, 0], y[0, 2, 0, 0] = 0.4, 0.1, 0.5
    y[0, 0, 0, 1], y[0, 1, 0, 1], y[0, 2, 0, 1] = 0.1, 0.4, 0.5
    pasted = torch.tensor([[0.0, 1.0]])
    loss = paste_bce(y.log(), torch.tensor([0]), torch.tensor([1]), pasted)
    expected = -(math.log(1 - 0.2) + math.log(0.8)) / 2
    assert abs(float(loss) - expected) < 1e-5


def test_paste_bce_ignores_images_whose_two_labels_agree() -> None:
    y = torch.full((2, 2, 1, 1), 0.5).log()
    assert float(paste_bce(y, torch.tensor([1, 0]), torch.tensor([1, 0]), torch.ones(1, 1))) == 0.0


def test_paste_kl_only_counts_mostly_pasted_cells() -> None:
    teacher = torch.tensor([0.9, 0.1]).log().view(1, 2, 1, 1).expand(1, 2, 1, 2).clone()
    student = torch.tensor([0.5, 0.5]).log().view(1, 2, 1, 1).expand(1, 2, 1, 2).clone()
    student[0, :, 0, 1] = teacher[0, :, 0, 1] + 0.0  # cell 1 agrees with the teacher
    expected_cell0 = 0.9 * math.log(0.9 / 0.5) + 0.1 * math.log(0.1 / 0.5)
    assert abs(float(paste_kl(teacher, student, torch.tensor([[0.6, 0.0]]))) - expected_cell0) < 1e-5
    assert abs(float(paste_kl(teacher, student, torch.tensor([[0.0, 0.5]])))) < 1e-7
    assert float(paste_kl(teacher, student, torch.tensor([[0.4, 0.1]]))) == 0.0


def test_attention_entropy_of_uniform_and_one_hot() -> None:
    uniform = torch.full((2, 4, 4), 1 / 16).log()
    assert abs(float(attention_entropy(uniform)) - math.log(16)) < 1e-5
    one_hot = torch.full((1, 2, 2), -1e4)
    one_hot[0, 0, 0] = 0.0
    assert abs(float(attention_entropy(one_hot))) < 1e-6


def test_self_distillation_is_ce_when_beta_zero_and_kl_when_one() -> None:
    z = torch.tensor([[1.0, -1.0]])
    target = torch.tensor([[1.0, 0.0]])
    saol = torch.tensor([[0.5, 0.5]])
    assert torch.allclose(self_distillation(z, saol, target, 0.0), soft_cross_entropy(z, target))
    kl = kl_divergence(saol, F.log_softmax(z, 1)).mean()
    assert torch.allclose(self_distillation(z, saol, target, 1.0), kl)


def test_area_fraction_of_a_pasted_quarter() -> None:
    m = torch.zeros(1, 1, 8, 8)
    m[..., 0:4, 0:2] = 1.0  # covers half of grid cell (0, 0) at 2x2 grid... cells are 4x4 pixels
    frac = area_fraction(m, (2, 2))
    torch.testing.assert_close(frac, torch.tensor([[0.5, 0.0], [0.0, 0.0]]))


def test_cutmix_area_ratio_matches_the_pasted_box() -> None:
    g = torch.Generator().manual_seed(0)
    images = torch.rand(6, 3, 32, 48, generator=g)
    labels = torch.arange(6)
    for seed in range(20):
        b = cutmix(images, labels, prob=1.0, alpha=1.0, rng=np.random.default_rng(seed))
        y0, y1, x0, x1 = b.box
        area = (y1 - y0) * (x1 - x0)
        assert abs(b.lam - (1 - area / (32 * 48))) < 1e-12
        mask = b.paste_mask()[0, 0]
        assert int(mask.sum()) == area
        changed = (b.images != images).any(dim=1)  # (B, H, W)
        for i in range(6):
            if b.perm[i] != i:
                assert torch.equal(b.images[i][:, mask.bool()], images[b.perm[i]][:, mask.bool()])
                assert not changed[i][~mask.bool()].any()
        if b.mixed:
            t = b.soft_targets(6)
            torch.testing.assert_close(t.sum(1), torch.ones(6))
            assert abs(float(t[0, labels[0]]) - (b.lam if b.perm[0] != 0 else 1.0)) < 1e-6


def test_cutmix_respects_probability_and_box_is_clipped() -> None:
    images, labels = torch.zeros(4, 3, 16, 16), torch.arange(4)
    assert not cutmix(images, labels, prob=0.0, alpha=1.0, rng=np.random.default_rng(0)).mixed
    assert no_mix(images, labels).lam == 1.0
    for seed in range(50):
        y0, y1, x0, x1 = cutmix_box(16, 16, 0.1, np.random.default_rng(seed))
        assert 0 <= y0 <= y1 <= 16 and 0 <= x0 <= x1 <= 16


def test_torch_losses_equal_the_hand_written_formulas() -> None:
    """soft_cross_entropy and kl_divergence now call torch; same values and (for CE) the same gradients."""
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(16, 10, generator=g, requires_grad=True)
    target = torch.rand(16, 10, generator=g)
    target = target / target.sum(dim=1, keepdim=True)
    target[0] = F.one_hot(torch.tensor(4), 10).float()  # zeros in the target: 0 log 0 = 0
    by_hand = -(target * F.log_softmax(logits, dim=1)).sum(dim=1).mean()
    ours = soft_cross_entropy(logits, target)
    torch.testing.assert_close(ours, by_hand, rtol=1e-6, atol=1e-6)
    (g_hand,), (g_ours,) = torch.autograd.grad(by_hand, logits), torch.autograd.grad(ours, logits)
    assert torch.equal(g_hand, g_ours)
    log_q = F.log_softmax(torch.randn(16, 10, generator=g), dim=1)
    assert torch.equal(kl_divergence(target, log_q), (torch.xlogy(target, target) - target * log_q).sum(dim=1))


def test_attention_entropy_equals_entr_but_keeps_a_finite_gradient_where_a_underflows() -> None:
    log_a = F.log_softmax(torch.tensor([[0.0, 0.5, -200.0, 1.0]]) * 2, dim=1).view(1, 2, 2).requires_grad_()
    assert float(log_a.detach().exp().min()) == 0.0  # one cell underflowed
    torch.testing.assert_close(attention_entropy(log_a), torch.special.entr(log_a.exp()).sum(), rtol=1e-6, atol=1e-7)
    (grad,) = torch.autograd.grad(0.0 * attention_entropy(log_a), log_a)
    assert torch.isfinite(grad).all()  # entr's would be NaN here (its derivative at 0 is infinite)
