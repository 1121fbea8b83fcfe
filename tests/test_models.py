"""Every (backbone, method) pair: shapes, finiteness, gradients, SAOL's probability structure, determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from saolctl.methods import list_methods
from saolctl.models import ModelConfig, create_model, create_objective, list_backbones, make_config

QUICK_BACKBONES = ("resnet18", "cifar_resnet20")  # every method on these in `pytest -m "not slow"`; the rest: slow
PAIRS = [pytest.param(b, m, marks=() if b in QUICK_BACKBONES else pytest.mark.slow)
         for b in list_backbones() for m in list_methods()]


def _input(backbone: str, batch: int = 4, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, 64, 64, generator=g)


@pytest.mark.parametrize("backbone,method", PAIRS)
def test_forward_shapes_and_gradients(backbone: str, method: str) -> None:
    torch.manual_seed(0)
    model = create_model(backbone, method, num_classes=5, cutmix_prob=1.0)
    model.train()
    x = _input(backbone)
    labels = torch.tensor([0, 1, 2, 3])
    out = model(x)
    assert out.method == method
    assert out.logits.shape == (4, 5)
    assert torch.isfinite(out.logits).all()
    assert out.features.dim() == 4 and out.features.shape[1] == model.backbone.channels[-1]
    objective = create_objective(model.config)
    terms = objective(model, x, labels, np.random.default_rng(1))
    assert set(terms.terms) == set(objective.term_names)
    assert torch.isfinite(terms.total)
    terms.total.backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert missing == []
    zero = [n for n, p in model.named_parameters() if p.requires_grad and float(p.grad.abs().sum()) == 0.0]
    assert zero == []
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("backbone", ["resnet18", "cifar_resnet20", "efficientnet_lite0"])
def test_saol_probability_structure(backbone: str) -> None:
    torch.manual_seed(0)
    model = create_model(backbone, "saol", num_classes=7).eval()
    with torch.no_grad():
        out = model(_input(backbone))
    a, y = out.attention, out.spatial_probs  # (B, H, W), (B, K, H, W)
    assert a is not None and y is not None
    torch.testing.assert_close(a.sum(dim=(1, 2)), torch.ones(4), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.sum(dim=1), torch.ones_like(y[:, 0]), atol=1e-5, rtol=0)
    explicit = (a.unsqueeze(1) * y).sum(dim=(2, 3))  # (B, K) = sum_ij A_ij Y_kij
    torch.testing.assert_close(out.probs, explicit, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(out.logits.exp(), explicit, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(out.probs.sum(dim=1), torch.ones(4), atol=1e-6, rtol=0)


def test_saol_gap_head_runs_only_in_training_or_on_request() -> None:
    model = create_model("cifar_resnet20", "saol", num_classes=3)
    x = _input("cifar_resnet20", batch=2)
    assert model.train()(x).gap_logits is not None
    model.eval()
    assert model(x).gap_logits is None
    assert model(x, with_gap_head=True).gap_logits.shape == (2, 3)
    no_head = create_model("cifar_resnet20", "saol", num_classes=3, saol_gap_head=False).train()
    assert no_head.gap_head is None and no_head(x).gap_logits is None


def test_abn_taps_the_stage_before_last() -> None:
    model = create_model("resnet18", "abn", num_classes=4).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 128, 128))
    # layer3 of ResNet-18 at 128 px is 8x8; the attention branch keeps it (stride-1 copy of layer4)
    assert out.attention.shape == (2, 8, 8)
    assert out.class_maps.shape == (2, 4, 8, 8)
    assert out.features.shape == (2, 512, 4, 4)
    assert ((out.attention >= 0) & (out.attention <= 1)).all()


@pytest.mark.slow
def test_last_stride_one_gives_14x14_at_224() -> None:
    model = create_model("resnet50", "cam", num_classes=2, last_stride=1).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 224, 224))
    assert out.features.shape == (1, 2048, 14, 14)


def test_small_stem_keeps_8x8_at_64px() -> None:
    for name, kw in [("cifar_resnet20", {}), ("resnet18", {"small_stem": True})]:
        model = create_model(name, "saol", num_classes=10, **kw).eval()
        with torch.no_grad():
            out = model(torch.randn(1, 3, 64, 64))
        assert out.features.shape[-2:] == (8, 8), name


def test_saol_options_change_the_head() -> None:
    model = create_model(
        "resnet18", "saol", num_classes=3, saol_taps=[-2, -1], saol_mid=32, saol_kernel=3, saol_att_kernel=3,
        saol_resize="bilinear",
    )
    assert model.tap_indices == (2, 3)
    assert len(model.spatial_logits.projections) == 2
    assert model.spatial_logits.fuse.kernel_size == (3, 3)
    assert model.attention.hidden[0].kernel_size == (3, 3)
    out = model.eval()(torch.randn(1, 3, 64, 64))
    assert out.logits.shape == (1, 3)


def test_two_runs_with_the_same_seed_are_identical() -> None:
    def run() -> tuple[float, list[torch.Tensor]]:
        torch.manual_seed(123)
        model = create_model("cifar_resnet20", "saol", num_classes=4, cutmix_prob=1.0)
        x = _input("cifar_resnet20", seed=5)
        terms = create_objective(model.config)(model, x, torch.tensor([0, 1, 2, 3]), np.random.default_rng(9))
        terms.total.backward()
        return float(terms.total.detach()), [p.grad.clone() for p in model.parameters()]

    t1, g1 = run()
    t2, g2 = run()
    assert t1 == t2
    assert all(torch.equal(a, b) for a, b in zip(g1, g2))


def test_config_round_trips_through_plain_dict() -> None:
    cfg = make_config("cifar_resnet20", "saol", 10, saol_taps=[-2, -1], att_entropy=0.3, cutmix_prob=0.25)
    d = cfg.to_dict()
    assert d["options"]["saol_taps"] == [-2, -1] and isinstance(d["options"]["saol_taps"], list)
    assert ModelConfig.from_dict(d) == cfg


# the model config of a SAOL checkpoint written before the method registry (options grouped per head)
OLD_SAOL_DICT = {
    "backbone": "cifar_resnet20", "method": "saol", "num_classes": 10, "last_stride": 2, "small_stem": False,
    "saol": {"taps": [-2, -1], "mid": 64, "kernel": 1, "att_kernel": 1, "resize": "area", "gap_head": True,
             "grid": "last"},
    "saol_loss": {"sd_beta": 0.5, "ss1_weight": 1.0, "ss2_weight": 0.0, "att_entropy": 0.3, "att_ss_weight": 1.0,
                  "att_cam_weight": 0.0},
    "cutmix": {"prob": 0.25, "alpha": 1.0},
}


def test_a_config_dict_from_before_the_registry_still_loads() -> None:
    cfg = ModelConfig.from_dict(OLD_SAOL_DICT)
    assert cfg == make_config("cifar_resnet20", "saol", 10, saol_taps=[-2, -1], saol_mid=64, ss2_weight=0.0,
                              att_entropy=0.3, att_ss_weight=1.0, cutmix_prob=0.25)
    # an old CAM checkpoint held every method's groups: those of other methods are dropped (CutMix's too: CAM
    # is vanilla now; the cutmix method keeps them)
    cam = ModelConfig.from_dict({**OLD_SAOL_DICT, "method": "cam"})
    assert cam.options == {}
    assert ModelConfig.from_dict(cam.to_dict()) == cam
    assert ModelConfig.from_dict({**OLD_SAOL_DICT, "method": "cutmix"}).options == {"cutmix_prob": 0.25,
                                                                                    "cutmix_alpha": 1.0}


def test_other_methods_options_are_checked_then_ignored() -> None:
    cfg = make_config("cifar_resnet20", "cutmix", 3, saol_mid=64, cutmix_prob=0.25)  # one recipe for every method
    assert cfg.options == {"cutmix_prob": 0.25, "cutmix_alpha": 1.0}
    assert make_config("cifar_resnet20", "cam", 3, saol_mid=64, cutmix_prob=0.25).options == {}
    with pytest.raises(ValueError, match="odd"):
        make_config("cifar_resnet20", "cam", 3, saol_kernel=2)


@pytest.mark.parametrize(
    "kwargs,needle",
    [
        ({"backbone": "resnet9000"}, "valid: resnet18"),
        ({"method": "gradcam"}, "valid: cam, cutmix, has, acol, spg, adl, abn, saol"),
        ({"saol_resize": "nearest"}, "saol_resize"),
        ({"saol_kernel": 2}, "odd"),
        ({"cutmix_prob": 1.5}, "cutmix_prob"),
        ({"bogus": 1}, "unknown option"),
        ({"saol_taps": [-9]}, "out of range"),
    ],
)
def test_bad_names_and_options_say_what_is_valid(kwargs: dict, needle: str) -> None:
    args = {"backbone": "cifar_resnet20", "method": "saol", "num_classes": 3}
    args.update(kwargs)
    with pytest.raises(ValueError, match=needle):
        create_model(**args)
