"""Score maps of every method and their normalisation (SPEC 2.2)."""

from __future__ import annotations

import pytest
import torch

from saolctl.localization.maps import check_map_kind, default_map_kind, map_kind_names, normalize_maps, raw_maps, score_maps
from saolctl.models import create_model


def test_normalize_is_min_max_per_image_after_bicubic_upsampling() -> None:
    maps = torch.tensor([[[0.0, 1.0], [2.0, 3.0]], [[5.0, 5.0], [5.0, 5.0]], [[1.0, float("nan")], [0.0, 2.0]]])
    out = normalize_maps(maps, (8, 8))
    assert out.shape == (3, 8, 8)
    assert float(out[0].min()) == 0.0 and float(out[0].max()) == 1.0
    assert torch.equal(out[1], torch.zeros(8, 8))  # constant -> zeros
    assert torch.equal(out[2], torch.zeros(8, 8))  # NaN -> zeros
    # same size: pure min-max
    same = normalize_maps(torch.tensor([[[2.0, 4.0], [6.0, 10.0]]]), (2, 2))
    torch.testing.assert_close(same[0], torch.tensor([[0.0, 0.25], [0.5, 1.0]]))


@pytest.fixture(scope="module")
def batch() -> torch.Tensor:
    return torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(0))


def test_cam_map_is_the_class_weighted_sum_of_features(batch: torch.Tensor) -> None:
    model = create_model("cifar_resnet20", "cam", num_classes=5).eval()
    targets = torch.tensor([0, 3, 4])
    with torch.no_grad():
        out = model(batch)
        got = raw_maps(model, out, targets)
    w = model.head.fc.weight
    for i, c in enumerate(targets):
        torch.testing.assert_close(got[i], (w[c][:, None, None] * out.features[i]).sum(0))


def test_saol_map_kinds(batch: torch.Tensor) -> None:
    model = create_model("cifar_resnet20", "saol", num_classes=5).eval()
    targets = torch.tensor([1, 1, 2])
    with torch.no_grad():
        out = model(batch, with_gap_head=True)
        a, y = out.attention, out.spatial_probs
        idx = torch.arange(3)
        torch.testing.assert_close(raw_maps(model, out, targets, "attention"), a)
        torch.testing.assert_close(raw_maps(model, out, targets, "spatial"), y[idx, targets])
        torch.testing.assert_close(raw_maps(model, out, targets), a * y[idx, targets])  # contrib is the default
        gap = raw_maps(model, out, targets, "gapcam")
        torch.testing.assert_close(gap[0], (model.gap_head.fc.weight[1][:, None, None] * out.features[0]).sum(0))
        maps = score_maps(model, out, targets, (64, 64))
    assert maps.shape == (3, 64, 64) and float(maps.min()) >= 0.0 and float(maps.max()) <= 1.0


def test_abn_map_kinds(batch: torch.Tensor) -> None:
    model = create_model("cifar_resnet20", "abn", num_classes=5).eval()
    with torch.no_grad():
        out = model(batch)
        targets = torch.tensor([4, 0, 2])
        torch.testing.assert_close(raw_maps(model, out, targets), out.attention)
        torch.testing.assert_close(raw_maps(model, out, targets, "class")[2], out.class_maps[2, 2])


def test_unknown_map_kinds_list_the_valid_ones() -> None:
    assert default_map_kind("saol") == "contrib" and default_map_kind("abn") == "attention"
    assert map_kind_names("saol")[:4] == ["contrib", "attention", "spatial", "gapcam"]  # then the post-hoc kinds
    with pytest.raises(ValueError, match="valid: contrib, attention, spatial, gapcam, gradcam, gradcampp"):
        check_map_kind("saol", "cam")
    model = create_model("cifar_resnet20", "saol", num_classes=3, saol_gap_head=False).eval()
    with torch.no_grad():
        out = model(torch.zeros(1, 3, 64, 64))
    with pytest.raises(ValueError, match="GAP-FC head"):
        raw_maps(model, out, torch.tensor([0]), "gapcam")
