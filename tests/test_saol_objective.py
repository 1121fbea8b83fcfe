"""SAOL's objective on the GPU path: L_ss1 in the autocast-safe logits form, and one BatchNorm update per step."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.nn.modules.batchnorm import _BatchNorm

from saolctl.data.cutmix import cutmix
from saolctl.models import build_model, create_objective, make_config
from saolctl.models.batchnorm import frozen_running_stats
from saolctl.models.losses import paste_bce

OPTIONS = {"cutmix_prob": 1.0, "ss1_weight": 1.0, "ss2_weight": 1.0, "att_ss_weight": 1.0}


def _saol(**options: float) -> tuple[torch.nn.Module, object]:
    torch.manual_seed(0)
    cfg = make_config("cifar_resnet20", "saol", 4, **{**OPTIONS, **options})
    return build_model(cfg), create_objective(cfg)


def _batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(6, 3, 32, 32, generator=g), torch.tensor([0, 1, 2, 3, 0, 1])


def test_paste_bce_logits_form_equals_the_probability_form() -> None:
    g = torch.Generator().manual_seed(1)
    log_y = torch.randn(3, 5, 4, 4, generator=g).log_softmax(dim=1)
    a, b = torch.tensor([0, 1, 2]), torch.tensor([3, 1, 4])  # image 1 has y_A == y_B: left out
    pasted = torch.rand(4, 4, generator=g)
    y = log_y.exp()
    keep = torch.tensor([0, 2])
    p = y[keep, b[keep]] / (y[keep, a[keep]] + y[keep, b[keep]])  # (2, 4, 4)
    expected = F.binary_cross_entropy(p, pasted.expand_as(p))
    torch.testing.assert_close(paste_bce(log_y, a, b, pasted), expected)


def test_paste_bce_stays_finite_where_both_classes_vanish() -> None:
    log_y = torch.full((1, 3, 1, 2), -200.0)
    log_y[0, 2] = 0.0  # Y of both labels is e^-200: the probability form divides 0 by 0
    loss = paste_bce(log_y, torch.tensor([0]), torch.tensor([1]), torch.tensor([[0.0, 1.0]]))
    assert abs(float(loss) - math.log(2)) < 1e-6


@pytest.mark.slow
def test_saol_objective_never_calls_binary_cross_entropy_under_autocast(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise RuntimeError("torch.nn.functional.binary_cross_entropy is unsafe to autocast")

    monkeypatch.setattr(F, "binary_cross_entropy", refuse)
    model, objective = _saol()
    model.train()
    images, labels = _batch()
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        terms = objective(model, images, labels, np.random.default_rng(0))
    assert float(terms.terms["ss1"].detach()) > 0 and bool(torch.isfinite(terms.total))
    terms.total.backward()


@pytest.mark.parametrize("options", [{}, pytest.param({"ss2_weight": 0.0}, marks=pytest.mark.slow),
                                     pytest.param({"att_ss_weight": 0.0}, marks=pytest.mark.slow)])
def test_one_saol_step_moves_batchnorm_statistics_exactly_once(options: dict[str, float]) -> None:
    model, objective = _saol(**options)
    model.train()
    images, labels = _batch()
    expected = copy.deepcopy(model)
    mixed = cutmix(images, labels, prob=1.0, alpha=1.0, rng=np.random.default_rng(3))
    assert mixed.mixed
    with torch.no_grad():
        expected(mixed.images)  # one training-mode forward of the CutMix-ed batch: the only update wanted

    terms = objective(model, images, labels, np.random.default_rng(3))  # the same CutMix draw
    assert float(terms.terms["att_ss"].detach()) > 0 or options.get("att_ss_weight") == 0.0

    norms = [(n, m) for n, m in model.named_modules() if isinstance(m, _BatchNorm)]
    assert norms
    want = dict(expected.named_modules())
    for name, bn in norms:
        assert int(bn.num_batches_tracked) == 1, name
        torch.testing.assert_close(bn.running_mean, want[name].running_mean, msg=name)
        torch.testing.assert_close(bn.running_var, want[name].running_var, msg=name)


def test_teacher_pass_skips_the_gap_head(monkeypatch: pytest.MonkeyPatch) -> None:
    model, objective = _saol()
    model.train()
    calls: list[int] = []
    monkeypatch.setattr(model.gap_head, "forward", lambda x: calls.append(1) or model.gap_head.fc(x.mean((2, 3))))
    images, labels = _batch()
    objective(model, images, labels, np.random.default_rng(3))
    assert calls == [1]  # the student's pass only


def test_frozen_running_stats_normalises_with_batch_statistics_and_restores_tracking() -> None:
    bn = torch.nn.BatchNorm2d(3).train()
    x = torch.randn(4, 3, 5, 5) * 3 + 1
    with frozen_running_stats(bn):
        y = bn(x)
    torch.testing.assert_close(y, F.batch_norm(x, None, None, bn.weight, bn.bias, training=True))
    assert int(bn.num_batches_tracked) == 0 and torch.equal(bn.running_mean, torch.zeros(3))
    assert bn.track_running_stats
    bn(x)
    assert int(bn.num_batches_tracked) == 1
