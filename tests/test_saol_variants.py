"""The SAOL study's options (issue 8): output grid, attention self-supervision, CAM-guided attention."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from saolctl.models import create_model, create_objective, make_config
from saolctl.models.losses import attention_kl, attention_paste_target, cam_attention_target, normalize_mass


def test_penultimate_grid_doubles_the_output_grid() -> None:
    torch.manual_seed(0)
    model = create_model("cifar_resnet20", "saol", num_classes=4, saol_grid="penultimate").eval()
    out = model(torch.randn(2, 3, 64, 64))
    assert out.spatial_log_probs.shape == (2, 4, 16, 16)
    assert out.attention.shape == (2, 16, 16)
    assert out.features.shape[-2:] == (8, 8)  # X^L itself keeps its 8x8 grid (the GAP-FC head uses it)
    torch.testing.assert_close(out.attention.sum(dim=(1, 2)), torch.ones(2))
    y_hat = (out.attention[:, None] * out.spatial_log_probs.exp()).sum(dim=(2, 3))  # (B, K)
    torch.testing.assert_close(out.probs, y_hat, rtol=1e-5, atol=1e-6)


def test_bad_grid_name_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="last, penultimate"):
        make_config("cifar_resnet20", "saol", 4, saol_grid="finest")


def test_normalize_mass_sums_to_one_and_zero_maps_become_uniform() -> None:
    w = torch.tensor([[[1.0, 3.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]]])
    n = normalize_mass(w)
    torch.testing.assert_close(n[0], torch.tensor([[0.25, 0.75], [0.0, 0.0]]))
    torch.testing.assert_close(n[1], torch.full((2, 2), 0.25))


def test_paste_target_gives_each_region_its_label_share_shaped_by_its_source() -> None:
    a0 = torch.tensor([[[0.1, 0.3], [0.2, 0.4]], [[0.4, 0.1], [0.1, 0.4]]])  # clean attention of 2 images
    perm = torch.tensor([1, 0])
    pasted = torch.tensor([[0.0, 0.0], [0.0, 1.0]])  # the bottom-right cell comes from the other image
    t = attention_paste_target(a0, perm, pasted, lam=0.75)
    # image 0: kept cells follow a0[0] (0.1, 0.3, 0.2 normalised) with mass 0.75; the pasted cell has 0.25
    expected0 = torch.tensor([[0.1, 0.3], [0.2, 0.0]]) / 0.6 * 0.75 + torch.tensor([[0, 0], [0, 0.25]])
    torch.testing.assert_close(t[0], expected0)
    torch.testing.assert_close(t.sum(dim=(1, 2)), torch.ones(2))


def test_cam_target_is_the_normalised_positive_cam_of_each_label() -> None:
    features = torch.zeros(1, 2, 2, 2)
    features[0, 0, 0, 0] = 2.0  # channel 0 fires top-left
    features[0, 1, 1, 1] = 1.0  # channel 1 fires bottom-right
    weight = torch.tensor([[1.0, -1.0], [0.0, 1.0]])  # class 0 likes channel 0, class 1 channel 1
    t = cam_attention_target(features, weight, torch.tensor([0]), torch.tensor([1]), lam=0.5, grid=(2, 2))
    torch.testing.assert_close(t[0], torch.tensor([[0.5, 0.0], [0.0, 0.5]]))
    assert float(attention_kl(t, t.clamp_min(1e-12).log())) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("options", [{"att_ss_weight": 1.0}, {"att_cam_weight": 1.0},
                                     {"saol_grid": "penultimate", "att_entropy": 0.3}])
def test_variant_objectives_train_the_attention(options: dict) -> None:
    torch.manual_seed(0)
    cfg = make_config("cifar_resnet20", "saol", 4, cutmix_prob=1.0, **options)
    from saolctl.models import build_model

    model = build_model(cfg).train()
    objective = create_objective(cfg)
    images, labels = torch.randn(6, 3, 32, 32), torch.tensor([0, 1, 2, 3, 0, 1])
    terms = objective(model, images, labels, np.random.default_rng(0))
    name = "att_ss" if "att_ss_weight" in options else "att_cam" if "att_cam_weight" in options else "entropy"
    assert torch.isfinite(terms.total) and float(terms.terms[name]) > 0.0
    terms.total.backward()
    assert model.attention.score.weight.grad is not None
    assert float(model.attention.score.weight.grad.abs().sum()) > 0.0
