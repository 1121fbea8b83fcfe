"""SPG and ADL (issue 14, part B): their mechanisms on hand-made tensors, the backbone's insertion points,
every backbone family, and a short learning run each."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from saolctl.cli.options import parse_model_options
from saolctl.data import DigitsConfig
from saolctl.engine.checkpoint import load_checkpoint, model_from_checkpoint
from saolctl.engine.compare_run import CompareSettings, run_compare
from saolctl.engine.eval_run import EvalSettings, run_eval
from saolctl.engine.train import SilentReporter, TrainConfig, train
from saolctl.errors import UserError
from saolctl.localization.maps import raw_maps
from saolctl.methods import MapInputs, get_method, list_methods
from saolctl.methods.adl import AttentionDropout, adl, drop_mask, importance_map, self_attention
from saolctl.methods.spg import IGNORE, masked_bce, self_produced_mask
from saolctl.models.heads import min_max_normalize
from saolctl.models import create_model, create_objective
from saolctl.models.backbones import build_backbone

FAMILIES = ["resnet18", "cifar_resnet20", "efficientnet_lite0"]
FAMILIES_ALL = FAMILIES + [pytest.param("resnet50", marks=pytest.mark.slow)]

# --------------------------------------------------------------------------------------------
# ADL on hand-made tensors


def test_adl_drop_mask_zeroes_what_reaches_the_threshold_of_each_images_own_maximum() -> None:
    attention = torch.tensor([[[[0.0, 1.0], [2.0, 10.0]]],  # max 10: drop >= 9
                              [[[5.0, 4.5], [1.0, 0.0]]]])  # max 5: drop >= 4.5 (the reference keeps only < thr)
    expected = torch.tensor([[[[1.0, 1.0], [1.0, 0.0]]], [[[0.0, 0.0], [1.0, 1.0]]]])
    assert torch.equal(drop_mask(attention, 0.9), expected)
    assert torch.equal(drop_mask(attention, 0.0), (attention < 0).float())  # threshold 0: every pixel >= 0 dropped


def test_adl_importance_map_and_self_attention_follow_the_definition() -> None:
    x = torch.tensor([[[[1.0, -2.0]], [[3.0, 0.0]]]])  # (1, 2, 1, 2)
    attention = self_attention(x)
    assert torch.equal(attention, torch.tensor([[[[2.0, -1.0]]]]))
    assert torch.allclose(importance_map(attention), 1.0 / (1.0 + torch.exp(-attention)))


def test_adl_multiplies_by_the_drop_mask_or_the_importance_map_as_drawn() -> None:
    x = torch.tensor([[[[4.0, 1.0]]], [[[2.0, 3.0]]]])  # (2, 1, 1, 2): the attention is x itself
    dropped = adl(x, 0.9, torch.tensor(True).view(1, 1, 1, 1))
    assert torch.equal(dropped, torch.tensor([[[[0.0, 1.0]]], [[[2.0, 0.0]]]]))
    weighted = adl(x, 0.9, torch.tensor(False).view(1, 1, 1, 1))
    assert torch.allclose(weighted, x * torch.sigmoid(x))
    mixed = adl(x, 0.9, torch.tensor([True, False]).view(2, 1, 1, 1))
    assert torch.equal(mixed[0], dropped[0]) and torch.allclose(mixed[1], weighted[1])


def test_adl_is_the_identity_at_evaluation_and_draws_per_batch_or_per_image_in_training() -> None:
    x = torch.rand(64, 3, 4, 4) + 0.1
    layer = AttentionDropout(drop_rate=0.75, threshold=0.9).eval()
    assert layer(x) is x
    layer.train()
    always = AttentionDropout(1.0, 0.9).train()(x)
    assert torch.equal(always, x * drop_mask(self_attention(x), 0.9))
    never = AttentionDropout(0.0, 0.9).train()(x)
    assert torch.allclose(never, x * torch.sigmoid(self_attention(x)))

    def dropped(out: torch.Tensor) -> torch.Tensor:  # (B,) which images got the drop mask
        return (out == always).flatten(1).all(dim=1)

    torch.manual_seed(0)
    per_batch = [dropped(layer(x)) for _ in range(40)]
    assert all(bool(d.all()) or not bool(d.any()) for d in per_batch)  # one draw for the whole batch
    rate = float(torch.stack(per_batch).float().mean())
    assert 0.5 < rate < 0.95  # drop mask with probability 0.75
    per_image = dropped(AttentionDropout(0.5, 0.9, per_image=True).train()(x))
    assert 0 < int(per_image.sum()) < 64


# --------------------------------------------------------------------------------------------
# the backbone's insertion points


POINTS = {
    "resnet18": ["1:0", "1:1", "2:0", "2:1", "3:0", "3:1", "4:0", "4:1"],
    "cifar_resnet20": ["1:0", "1:1", "1:2", "2:0", "2:1", "2:2", "3:0", "3:1", "3:2"],
    "efficientnet_lite0": ["1:0", "1:1", "1:2", "2:0", "2:1", "3:0", "3:1", "3:2", "3:3", "3:4", "3:5",
                           "4:0", "4:1", "4:2", "4:3", "4:4"],
}


class Double(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 2.0 * x


@pytest.mark.parametrize("name", FAMILIES)
def test_insertion_points_tap_and_insert_on_every_backbone_family(name: str) -> None:
    torch.manual_seed(0)
    backbone = build_backbone(name).eval()
    assert backbone.insertion_points() == POINTS[name]
    keys = list(backbone.state_dict())
    x = torch.randn(2, 3, 64, 64)
    points = tuple(backbone.insertion_points())
    with torch.no_grad():
        plain = backbone(x)
        outs, taps = backbone.forward_taps(x, points)
    for a, b in zip(plain, outs):
        torch.testing.assert_close(a, b)
    for p in points:
        assert taps[p].shape[1] == backbone.point_channels(p)
    last_of_stage = {f"{s + 1}:{max(int(p.split(':')[1]) for p in points if p.startswith(f'{s + 1}:'))}": s
                     for s in range(backbone.num_stages)}
    for p, s in last_of_stage.items():
        torch.testing.assert_close(taps[p], plain[s])  # a stage's last point is its output
    for p in points:
        backbone.insert_after(p, nn.Identity(), "noop")
    assert list(backbone.state_dict()) == keys  # nothing moved
    with torch.no_grad():
        for a, b in zip(plain, backbone(x)):
            torch.testing.assert_close(a, b)
    backbone.insert_after(points[-2], Double(), "double")  # a point inside the last stage
    with torch.no_grad():
        assert not torch.allclose(backbone(x)[-1], plain[-1])
    with pytest.raises(UserError, match="no insertion point '9:9'; valid: 1:0"):
        backbone.insert_after("9:9", nn.Identity(), "x")


# --------------------------------------------------------------------------------------------
# ADL models


ADL_POINTS = {"resnet18": ["3:0", "4:0", "4:1"], "cifar_resnet20": ["2:0", "3:0", "3:2"],
              "efficientnet_lite0": ["3:0", "4:0", "4:4"], "resnet50": ["3:0", "4:0", "4:2"]}


@pytest.mark.parametrize("name", FAMILIES_ALL)
def test_adl_sits_where_the_reference_puts_it_and_keeps_the_backbones_weight_keys(name: str) -> None:
    model = create_model(name, "adl", num_classes=5)
    assert model.points == ADL_POINTS[name]
    assert sum(isinstance(m, AttentionDropout) for m in model.modules()) == 3
    plain = build_backbone(name)
    assert list(model.backbone.state_dict()) == list(plain.state_dict())
    model.backbone.load_state_dict(plain.state_dict(), strict=True)  # pretrained weights load key for key
    # at evaluation it is a CAM network: the same weights give the same logits
    cam = create_model(name, "cam", num_classes=5)
    cam.load_state_dict(model.state_dict(), strict=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x).logits, cam.eval()(x).logits)


def test_adl_points_can_be_named_and_bad_ones_are_refused() -> None:
    model = create_model("cifar_resnet20", "adl", num_classes=3, adl_points="1:2, 3:1")
    assert model.points == ["1:2", "3:1"]
    assert parse_model_options(["adl_points=3:0,4:2"]) == {"adl_points": "3:0,4:2"}  # `-O` keeps it a string
    with pytest.raises(UserError, match=r"cifar_resnet20 has no insertion point 4:0; valid: 1:0, 1:1"):
        create_model("cifar_resnet20", "adl", num_classes=3, adl_points="4:0")
    with pytest.raises(UserError, match="adl_points must be reference or a comma-separated list"):
        create_model("cifar_resnet20", "adl", num_classes=3, adl_points="layer3")


# --------------------------------------------------------------------------------------------
# SPG on hand-made tensors


def test_spg_self_produced_masks_mark_confident_foreground_1_background_0_and_the_rest_ignored() -> None:
    scores = torch.tensor([[[0.9, 0.7, 0.5], [0.02, 0.005, 0.71]]])  # (1, 2, 3)
    mask = self_produced_mask(scores, 0.7, 0.01)
    assert mask.dtype == torch.long
    assert mask.tolist() == [[[1, IGNORE, IGNORE], [IGNORE, 0, 1]]]  # > high: 1; < low: 0; else ignored
    # fewer than min_foreground pixels above high: those above 0.7 x the image's maximum instead
    faint = torch.tensor([[[0.6, 0.45, 0.4], [0.2, 0.0, 0.3]]])
    assert self_produced_mask(faint, 0.7, 0.01).tolist() == [[[IGNORE, IGNORE, IGNORE], [IGNORE, 0, IGNORE]]]
    assert self_produced_mask(faint, 0.7, 0.01, min_foreground=1).tolist() == [[[1, 1, IGNORE],
                                                                                  [IGNORE, 0, IGNORE]]]
    # both rules on one image: background is written last and wins
    assert self_produced_mask(torch.tensor([[[0.5]]]), 0.4, 0.6).tolist() == [[[0]]]


def test_spg_loss_ignores_ignored_pixels() -> None:
    mask = torch.tensor([[[1, 0], [IGNORE, IGNORE]], [[IGNORE, 1], [IGNORE, IGNORE]]])
    logits = torch.tensor([[[2.0, -1.0], [5.0, -7.0]], [[3.0, 0.5], [9.0, 1.0]]], requires_grad=True)
    loss = masked_bce(logits, mask)
    kept = torch.tensor([2.0, -1.0, 0.5])
    expected = F.binary_cross_entropy_with_logits(kept, torch.tensor([1.0, 0.0, 1.0]))
    torch.testing.assert_close(loss, expected)
    other = logits.detach().clone()
    other[mask == IGNORE] = -100.0
    torch.testing.assert_close(masked_bce(other, mask), expected)
    loss.backward()
    assert torch.equal(logits.grad[mask == IGNORE], torch.zeros(5))
    nothing = torch.full((1, 2, 2), IGNORE)
    zero = masked_bce(torch.ones(1, 2, 2, requires_grad=True), nothing)
    assert float(zero.detach()) == 0.0


def test_spg_normalises_each_map_by_its_own_range() -> None:
    maps = torch.tensor([[[1.0, 3.0], [2.0, 5.0]], [[4.0, 4.0], [4.0, 4.0]]])
    out = min_max_normalize(maps)
    torch.testing.assert_close(out[0], torch.tensor([[0.0, 0.5], [0.25, 1.0]]))
    assert torch.equal(out[1], torch.zeros(2, 2))  # a constant map: 0, not NaN


# --------------------------------------------------------------------------------------------
# both methods on every backbone family, through the registry


@pytest.mark.parametrize("name", FAMILIES_ALL)
@pytest.mark.parametrize("method", ["spg", "adl"])
def test_spg_and_adl_build_train_and_draw_their_map_on_every_backbone_family(method: str, name: str) -> None:
    torch.manual_seed(0)
    options = {"spg_c_width": 64} if method == "spg" else {}
    model = create_model(name, method, num_classes=5, **options)
    spec = get_method(method)
    assert not spec.uses_cutmix and "cutmix_prob" not in model.config.options
    x, y = torch.randn(2, 3, 64, 64), torch.tensor([1, 3])
    model.train()
    terms = create_objective(model.config)(model, x, y, np.random.default_rng(0))
    assert set(terms.terms) == set(spec.term_names()) and torch.isfinite(terms.total)
    terms.total.backward()
    heads = [p for n, p in model.named_parameters() if not n.startswith("backbone.")]
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in heads)
    if method == "spg":
        for branch in ("spg_b1", "spg_b2", "spg_c"):
            assert model(x).extras[branch].shape[:2] == (2, 1)
    model.eval()
    with torch.no_grad():
        out = model(x)
        assert out.method == method and out.logits.shape == (2, 5)
        assert out.features.shape[1] == model.backbone.channels[-1]
        maps = spec.map_kinds[0].compute(MapInputs(model, out, y, x))
    assert maps.shape == (2, *out.features.shape[-2:]) and torch.isfinite(maps).all()
    if method == "spg":
        assert set(out.extras) == {"class_maps"}  # the branches only run in training


def test_spg_and_adl_are_registered_in_order_without_cutmix() -> None:
    names = list_methods()
    assert names.index("acol") < names.index("spg") < names.index("adl") < names.index("abn")
    assert get_method("spg").term_names() == ("cls", "b2", "b1", "c")
    assert get_method("adl").term_names() == ("cls",)


def test_spg_adopts_an_imagenet_classifier_as_its_1x1_conv() -> None:
    torch.manual_seed(0)
    model = create_model("cifar_resnet20", "spg", num_classes=4, spg_c_width=16).eval()
    fc = nn.Linear(64, 4)
    get_method("spg").adopt_imagenet_classifier(model, fc)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        out = model(x)
        torch.testing.assert_close(out.logits, fc(out.features.mean(dim=(2, 3))))


@pytest.mark.slow
def test_spg_and_adl_train_evaluate_and_compare_through_the_registry(tmp_path: Path) -> None:
    digits = DigitsConfig(train_size=96, val_size=48, test_size=48)
    runs = {}
    for method, options in (("spg", {"spg_c_width": 64}), ("adl", {})):
        config = TrainConfig(method=method, out=tmp_path / method, epochs=1, batch_size=32, digits=digits,
                             device="cpu", threshold_step=0.05, model_options=options)
        runs[method] = train(config, SilentReporter())
        metrics = pd.read_csv(runs[method].out / "metrics.csv")
        assert metrics["val_max_box_acc_v2"].notna().all()
        assert all(f"loss_{t}" in metrics for t in get_method(method).term_names())
    ckpt = load_checkpoint(runs["spg"].last)
    assert ckpt["config"]["model"]["options"]["spg_c_width"] == 64
    model = model_from_checkpoint(ckpt).eval()
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        out = model(x)
    gradcam = raw_maps(model, out, torch.tensor([0, 1]), "gradcam", images=x)  # hooks on the last stage fire
    assert gradcam.shape[0] == 2 and torch.isfinite(gradcam).all()
    report, meta, _ = run_eval(EvalSettings(ckpt=runs["adl"].last, threshold_step=0.05), tmp_path / "eval")
    assert meta["method"] == "adl" and meta["map"] == "cam" and 0.0 < report.metrics["max_box_acc_v2"] <= 100.0
    compared = run_compare(CompareSettings(methods=("spg", "adl"), ckpts={m: r.last for m, r in runs.items()},
                                           out=tmp_path / "compare", device="cpu", threshold_step=0.05,
                                           grid_images=2))
    assert list(zip(compared.table["method"], compared.table["map"])) == [("spg", "cam"), ("adl", "cam")]
