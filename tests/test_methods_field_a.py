"""The WSOL field, part A: vanilla CAM and ABN, and the `cutmix`, `has` and `acol` methods.

Each mechanism on hand-made tensors (HaS hides exactly the drawn cells, and only in training; ACoL erases
exactly branch A's region above its threshold; CutMix mixes the labels by pasted area; CAM and ABN train on
the batch untouched), each method on every backbone family, old checkpoints' configs, per-method option
defaults and recipes, and a short learning test per new method.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from saolctl.data import DigitsConfig
from saolctl.data.cutmix import cutmix
from saolctl.engine.checkpoint import load_checkpoint
from saolctl.engine.compare_run import CompareSettings, run_compare
from saolctl.engine.eval_run import EvalSettings, run_eval
from saolctl.engine.localize_run import LocalizeSettings, run_localize
from saolctl.engine.recipes import DIGITS, LITE0_PHOTOS, PHOTOS
from saolctl.engine.train import SilentReporter, TrainConfig, train
from saolctl.errors import UserError
from saolctl.localization.maps import map_kind_names, raw_maps
from saolctl.methods import Method, get_method, list_methods
from saolctl.methods.acol import erase_mask
from saolctl.models.heads import min_max_normalize
from saolctl.methods.docs import options_table
from saolctl.methods.has import cell_edges, hide_patches
from saolctl.methods.options import CUTMIX_OPTIONS
from saolctl.models import ModelConfig, build_model, create_model, create_objective, make_config, option_defaults

NEW = ("cutmix", "has", "acol")
FAMILIES = ("resnet18", "resnet50", "cifar_resnet20", "efficientnet_lite0")
QUICK = ("resnet18", "cifar_resnet20")  # the others run under -m slow


class Recorder:
    """A forward pre-hook that keeps the first input of every call of a module."""

    def __init__(self, module: nn.Module) -> None:
        self.seen: list[Tensor] = []
        self.handle = module.register_forward_pre_hook(lambda _m, args: self.seen.append(args[0].detach().clone()))


def _batch(b: int = 4, size: int = 32, seed: int = 0) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, 3, size, size, generator=g), torch.arange(b) % 3


# ------------------------------------------------------------------------------------------------
# the registry: the order, and the old methods without CutMix


def test_the_builtin_methods_in_their_order() -> None:
    names = list_methods()
    assert names[:4] == ["cam", "cutmix", "has", "acol"] and names.index("abn") < names.index("saol")
    for name in NEW:
        method = get_method(name)
        assert method.paper and method.summary and method.__class__.__module__ == f"saolctl.methods.{name}"
        assert map_kind_names(name)[0] == method.default_map_kind


@pytest.mark.parametrize("name", ["cam", "abn"])
def test_cam_and_abn_are_vanilla_their_objective_leaves_the_batch_untouched(name: str) -> None:
    assert not get_method(name).uses_cutmix
    model = create_model("cifar_resnet20", name, num_classes=3, cutmix_prob=1.0)  # another method's option: ignored
    assert "cutmix_prob" not in model.config.options
    seen = Recorder(model)
    images, labels = _batch()
    rng = np.random.default_rng(0)
    before = rng.bit_generator.state
    model.train()
    terms = create_objective(model.config)(model, images, labels, rng)
    assert len(seen.seen) == 1 and torch.equal(seen.seen[0], images)
    assert rng.bit_generator.state == before  # nothing drawn
    logits = model(images).logits
    key = "cls" if name == "cam" else "per"
    torch.testing.assert_close(terms.terms[key], F.cross_entropy(logits, labels))


# ------------------------------------------------------------------------------------------------
# per-method option defaults, recipes, old checkpoints


def test_each_method_has_its_own_cutmix_defaults() -> None:
    assert make_config("cifar_resnet20", "cutmix", 3).options == {"cutmix_prob": 1.0, "cutmix_alpha": 1.0}
    assert make_config("cifar_resnet20", "saol", 3).options["cutmix_prob"] == 0.5
    assert make_config("cifar_resnet20", "cutmix", 3, cutmix_prob=0.3).options["cutmix_prob"] == 0.3
    assert option_defaults()["cutmix_prob"] == CUTMIX_OPTIONS[0].default == 0.5  # the declared default
    assert option_defaults("cutmix")["cutmix_prob"] == 1.0 and option_defaults("saol")["cutmix_prob"] == 0.5
    assert "| `cutmix_prob` | cutmix, saol |" in options_table() and "| 1.0 (cutmix); 0.5 (saol) |" in options_table()
    # the default is part of the method, not of the option's identity: both declare the same option
    assert get_method("cutmix").all_options()[0] == get_method("saol").all_options()[-2]


def test_a_default_for_an_option_the_method_does_not_have_is_refused() -> None:
    class Odd(Method):
        name = "odd"
        uses_cutmix = False
        option_defaults = {"cutmix_prob": 1.0}

    with pytest.raises(UserError, match="odd.*cutmix_prob"):
        Odd().all_options()


def test_recipes_keep_method_options_per_method() -> None:
    assert DIGITS.options_for("cam") == {} and DIGITS.options_for("cutmix") == {}
    assert DIGITS.options_for("saol") == {"cutmix_prob": 0.25, "att_ss_weight": 1.0, "ss2_weight": 0.0,
                                          "saol_mid": 64}
    assert DIGITS.options_for("acol") == {"acol_mid": 128, "acol_bn": True}
    assert PHOTOS.options_for("abn") == {"last_stride": 1} == LITE0_PHOTOS.options_for("has")
    assert PHOTOS.options_for("saol") == {"last_stride": 1, "att_ss_weight": 1.0, "ss2_weight": 0.0}
    for recipe in (DIGITS, PHOTOS):
        for name in list_methods():
            make_config(recipe.backbone, name, 3, **recipe.options_for(name))  # every method takes its options
    assert replace(DIGITS, epochs=1).to_dict()["method_options"]["saol"]["cutmix_prob"] == 0.25


# a CAM (and an ABN) checkpoint's config from when every method trained on CutMix-ed batches
OLD_CAM = {"backbone": "cifar_resnet20", "method": "cam", "num_classes": 10, "last_stride": 2, "small_stem": False,
           "options": {"cutmix_prob": 0.25, "cutmix_alpha": 1.0}}


@pytest.mark.parametrize("name", ["cam", "abn"])
def test_an_old_checkpoint_with_cutmix_options_still_loads(name: str) -> None:
    cfg = ModelConfig.from_dict({**OLD_CAM, "method": name})
    assert cfg == make_config("cifar_resnet20", name, 10) and cfg.options == {}
    model = build_model(cfg)
    old = build_model(cfg).state_dict()
    model.load_state_dict(old)  # the network did not change
    # the grouped form from before the method registry too
    grouped = {k: v for k, v in OLD_CAM.items() if k != "options"} | {"method": name,
                                                                       "cutmix": {"prob": 0.5, "alpha": 1.0}}
    assert ModelConfig.from_dict(grouped) == cfg
    with pytest.raises(UserError, match="unknown option"):
        ModelConfig.from_dict({**OLD_CAM, "method": name, "options": {"no_such_option": 1}})


# ------------------------------------------------------------------------------------------------
# CutMix


def test_cutmix_mixes_the_labels_by_pasted_area() -> None:
    torch.manual_seed(0)
    model = create_model("cifar_resnet20", "cutmix", num_classes=6)
    assert model.config.options["cutmix_prob"] == 1.0
    b, size = 6, 32
    images = (torch.arange(b, dtype=torch.float32) + 1.0).view(b, 1, 1, 1).expand(b, 3, size, size).contiguous()
    labels = torch.arange(b)
    seen = Recorder(model)
    model.train()
    objective = create_objective(model.config)
    for seed in range(3):
        seen.seen.clear()
        terms = objective(model, images, labels, np.random.default_rng(seed))
        fed = seen.seen[0]
        expected = cutmix(images, labels, prob=1.0, alpha=1.0, rng=np.random.default_rng(seed))
        assert torch.equal(fed, expected.images)  # the same draw from the objective's rng
        own = fed[:, 0] == images[:, 0]  # (B, H, W): pixels an image kept
        moved = [i for i in range(b) if int(expected.perm[i]) != i]
        pasted = {float((~own[i]).float().mean()) for i in moved}
        assert len(pasted) <= 1  # one box for the batch
        area = pasted.pop() if pasted else 0.0
        assert abs(expected.lam - (1.0 - area)) < 1e-9
        for i in moved:  # the pasted pixels are the source image's
            assert bool((fed[i, 0][~own[i]] == images[int(expected.perm[i]), 0, 0, 0]).all())
        logits = model(fed).logits
        lam = expected.lam
        want = lam * F.cross_entropy(logits, labels) + (1 - lam) * F.cross_entropy(logits, labels[expected.perm])
        torch.testing.assert_close(terms.terms["cls"], want)


# ------------------------------------------------------------------------------------------------
# HaS


def test_cell_edges_in_both_readings() -> None:
    assert cell_edges(48, 4, "cells") == [0, 12, 24, 36, 48]
    assert cell_edges(10, 4, "cells") == [0, 2, 5, 7, 10]
    assert cell_edges(3, 4, "cells") == [0, 1, 2, 3]  # never an empty cell
    assert cell_edges(10, 4, "pixels") == [0, 4, 8, 10]  # the reference's walk: 4-px patches, the last cut short
    assert cell_edges(3, 4, "pixels") == [0, 3]


@pytest.mark.parametrize("mode,shape", [("cells", (4, 4)), ("pixels", (3, 3))])
def test_has_hides_exactly_the_drawn_cells(mode: str, shape: tuple[int, int]) -> None:
    images = torch.arange(3 * 2 * 12 * 10, dtype=torch.float32).view(3, 2, 12, 10) + 1.0  # no zero anywhere
    original = images.clone()
    hidden, cells = hide_patches(images, 4, 0.5, np.random.default_rng(7), mode)
    assert torch.equal(images, original)  # the input is left alone
    drawn = np.random.default_rng(7).random((3, *shape)) < 0.5
    assert cells.shape == (3, *shape) and np.array_equal(cells.numpy(), drawn)
    assert 0 < drawn.sum() < drawn.size
    rows, cols = cell_edges(12, 4, mode), cell_edges(10, 4, mode)
    for b in range(3):
        for i in range(len(rows) - 1):
            for j in range(len(cols) - 1):
                patch = hidden[b, :, rows[i]:rows[i + 1], cols[j]:cols[j + 1]]
                want = torch.zeros_like(patch) if drawn[b, i, j] else original[b, :, rows[i]:rows[i + 1],
                                                                              cols[j]:cols[j + 1]]
                assert torch.equal(patch, want), (b, i, j)


def test_has_drop_rate_and_grid_extremes() -> None:
    images, _ = _batch()
    rng = np.random.default_rng(0)
    assert torch.equal(hide_patches(images, 4, 0.0, rng)[0], images)
    assert not bool(hide_patches(images, 4, 1.0, rng)[0].any())
    assert torch.equal(hide_patches(images, 0, 1.0, rng)[0], images)  # grid 0: nothing hidden (the reference)


def test_has_hides_in_training_only() -> None:
    torch.manual_seed(0)
    model = create_model("cifar_resnet20", "has", num_classes=3)
    assert model.config.options == {"has_grid_size": 4, "has_drop_rate": 0.5, "has_grid_mode": "cells"}
    images, labels = _batch()
    seen = Recorder(model)
    model.train()
    terms = create_objective(model.config)(model, images, labels, np.random.default_rng(3))
    hidden, _ = hide_patches(images, 4, 0.5, np.random.default_rng(3))
    assert torch.equal(seen.seen[0], hidden) and not torch.equal(hidden, images)
    torch.testing.assert_close(terms.total, F.cross_entropy(model(hidden).logits, labels))
    seen.seen.clear()
    model.eval()
    with torch.no_grad():
        out = model(images)
        maps = raw_maps(model, out, labels)  # the default map, CAM's
    assert torch.equal(seen.seen[0], images)  # evaluation sees the whole image
    assert out.method == "has" and maps.shape == (4, 4, 4)
    # the network itself has no randomness: training-mode forward passes agree
    model.train()
    torch.testing.assert_close(model(images).logits, model(images).logits)


# ------------------------------------------------------------------------------------------------
# ACoL


def test_acol_erase_mask_on_a_hand_made_map() -> None:
    class_map = torch.arange(9, dtype=torch.float32).view(1, 3, 3) * 2.0 - 3.0  # normalised: k / 8
    mask = erase_mask(class_map, 0.7)
    assert mask.shape == (1, 1, 3, 3)
    assert mask.flatten().tolist() == [1, 1, 1, 1, 1, 1, 0, 0, 0]  # 6/8, 7/8, 8/8 >= 0.7
    assert erase_mask(class_map, 0.75).flatten().tolist() == [1, 1, 1, 1, 1, 1, 0, 0, 0]  # >=, as the reference
    assert erase_mask(class_map, 1.0).flatten().tolist() == [1] * 8 + [0]  # the maximum is always erased
    assert bool(erase_mask(torch.full((2, 3, 3), 5.0), 0.7).all())  # a flat map: nothing erased
    torch.testing.assert_close(min_max_normalize(class_map), torch.arange(9.0).view(1, 3, 3) / 8)


def test_acol_branch_b_sees_exactly_the_features_outside_a_s_region() -> None:
    torch.manual_seed(0)
    model = create_model("cifar_resnet20", "acol", num_classes=3, acol_mid=16)
    images, labels = _batch(size=48)
    seen_b = Recorder(model.branch_b)
    model.train()
    terms = create_objective(model.config)(model, images, labels, np.random.default_rng(0))
    assert set(terms.terms) == {"cls_a", "cls_b"}
    with torch.no_grad():
        out = model(images, labels=labels)
    features, maps_a = out.features, out.extras["maps_a"]
    norm = min_max_normalize(maps_a[torch.arange(4), labels])  # (B, h, w) A's map of the true class
    region = norm >= 0.7
    fed = seen_b.seen[-1]
    assert bool(region.any()) and not bool(region.all())
    assert bool((fed.permute(1, 0, 2, 3)[:, region] == 0).all())  # erased: every channel, inside the region
    torch.testing.assert_close(fed.permute(1, 0, 2, 3)[:, ~region], features.permute(1, 0, 2, 3)[:, ~region])
    torch.testing.assert_close(terms.terms["cls_b"], F.cross_entropy(out.extras["logits_b"], labels))
    torch.testing.assert_close(out.logits, maps_a.mean(dim=(2, 3)))  # the prediction is A's
    # without labels (evaluation), B erases A's predicted class
    model.eval()
    with torch.no_grad():
        out = model(images)
        pred = out.logits.argmax(dim=1)
        want = model.branch_b(out.features * erase_mask(out.extras["maps_a"][torch.arange(4), pred], 0.7))
        torch.testing.assert_close(out.extras["maps_b"], want)
        # the maps: B on the features erased for the map's class; fused = max of both normalised maps
        targets = (pred + 1) % 3
        a_c = raw_maps(model, out, targets, "branch_a")
        b_c = raw_maps(model, out, targets, "branch_b")
        fused = raw_maps(model, out, targets, "fused")
        erased = out.features * erase_mask(out.extras["maps_a"][torch.arange(4), targets], 0.7)
    torch.testing.assert_close(a_c, out.extras["maps_a"][torch.arange(4), targets])
    torch.testing.assert_close(b_c, model.branch_b(erased)[torch.arange(4), targets])
    torch.testing.assert_close(fused, torch.maximum(min_max_normalize(a_c), min_max_normalize(b_c)))
    assert map_kind_names("acol")[:3] == ["fused", "branch_a", "branch_b"]


def test_acol_s_erasing_passes_no_gradient_to_branch_a() -> None:
    torch.manual_seed(0)
    model = create_model("cifar_resnet20", "acol", num_classes=3, acol_mid=8)
    images, labels = _batch(size=48)
    out = model.train()(images, labels=labels)
    F.cross_entropy(out.extras["logits_b"], labels).backward()
    assert all(p.grad is None for p in model.branch_a.parameters())  # only through the features
    assert all(p.grad is not None for p in model.branch_b.parameters())


# ------------------------------------------------------------------------------------------------
# every backbone family


@pytest.mark.parametrize("backbone", [pytest.param(b, marks=() if b in QUICK else pytest.mark.slow) for b in FAMILIES])
@pytest.mark.parametrize("name", NEW)
def test_each_new_method_builds_trains_and_draws_its_maps_on_every_backbone(backbone: str, name: str) -> None:
    torch.manual_seed(0)
    model = create_model(backbone, name, num_classes=5, acol_mid=16)
    x, labels = torch.randn(2, 3, 64, 64), torch.tensor([0, 4])
    model.train()
    terms = create_objective(model.config)(model, x, labels, np.random.default_rng(1))
    assert torch.isfinite(terms.total) and set(terms.terms) == set(get_method(name).term_names())
    terms.total.backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert missing == []  # DDP runs with find_unused_parameters=False
    model.eval()
    with torch.no_grad():
        out = model(x)
        assert out.method == name and out.logits.shape == (2, 5)
        h, w = out.features.shape[-2:]
        for kind in get_method(name).map_kinds:
            maps = raw_maps(model, out, labels, kind.name)
            assert maps.shape == (2, h, w) and bool(torch.isfinite(maps).all()), kind.name


# ------------------------------------------------------------------------------------------------
# through the engine: train, eval, localize and compare ask the registry only


@pytest.mark.slow
def test_the_new_methods_train_evaluate_localize_and_compare(tmp_path: Path) -> None:
    tiny = DigitsConfig(train_size=96, val_size=48, test_size=48)
    ckpts = {}
    for name in NEW:
        result = train(TrainConfig(method=name, out=tmp_path / name, epochs=1, batch_size=32, digits=tiny,
                                   device="cpu", threshold_step=0.05), SilentReporter())
        ckpt = load_checkpoint(result.last)
        assert ckpt["config"]["model"]["method"] == name
        # the method's own defaults, then what the digits recipe sets for it (ACoL's acol_mid, acol_bn)
        defaults = {o.name: o.default for o in get_method(name).all_options()}
        assert ckpt["config"]["model"]["options"] == {**defaults, **DIGITS.options_for(name)}
        report, meta, _ = run_eval(EvalSettings(ckpt=result.last, threshold_step=0.05), tmp_path / f"eval-{name}")
        assert meta["map"] == get_method(name).default_map_kind and 0.0 <= report.metrics["max_box_acc_v2"] <= 100.0
        rows = run_localize(LocalizeSettings(ckpt=result.last, num_samples=2, threshold=0.5, device="cpu"),
                            tmp_path / f"loc-{name}")
        assert len(rows) == 2
        ckpts[name] = result.last
    compared = run_compare(CompareSettings(methods=NEW, ckpts=ckpts, out=tmp_path / "compare", device="cpu",
                                           threshold_step=0.05, grid_images=2))
    kinds = {name: [k.name for k in get_method(name).map_kinds] for name in NEW}
    assert list(zip(compared.table["method"], compared.table["map"])) == [(n, k) for n in NEW for k in kinds[n]]
