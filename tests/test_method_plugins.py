"""A third-party method end to end: docs/methods.md's worked example, registered from code and through an
entry point, trained for a few steps on the embedded digits, evaluated and compared with CAM."""

from __future__ import annotations

import importlib.metadata
import json
from pathlib import Path
from typing import Any, Iterator

import pandas as pd
import pytest
import torch

from saolctl.data import DigitsConfig, make_loader, open_dataset
from saolctl.engine.checkpoint import load_checkpoint, model_from_checkpoint
from saolctl.engine.compare_run import CompareSettings, run_compare
from saolctl.engine.eval_run import EvalSettings, run_eval
from saolctl.engine.evaluate import evaluate, summarize
from saolctl.engine.train import SilentReporter, TrainConfig, train
from saolctl.errors import UserError
from saolctl.localization.maps import map_kind_names, raw_maps
from saolctl.methods import ENTRY_POINT_GROUP, get_method, list_methods, register_map_kind, unregister_map_kind
from saolctl.methods import register_method, unregister_method
from saolctl.models import create_model

REPO = Path(__file__).resolve().parents[1]

# --- begin example (docs/methods.md holds this block verbatim; a test below checks it)
import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from saolctl.methods import MapInputs, MapKind, Method, Option, cutmix_options
from saolctl.models import LossTerms, ModelOutput
from saolctl.models.losses import CutMixOptions


class LseNet(nn.Module):
    """Backbone + a 1x1 conv to K class maps, pooled over space by log-sum-exp of sharpness r."""

    def __init__(self, backbone: nn.Module, num_classes: int, r: float) -> None:
        super().__init__()
        self.backbone = backbone
        self.classifier = nn.Conv2d(backbone.channels[-1], num_classes, 1)
        self.r = r

    def forward(self, x: Tensor) -> ModelOutput:
        """Classify a batch (B, 3, H, W)."""
        features = self.backbone(x)[-1]  # (B, C, h, w)
        maps = self.classifier(features)  # (B, K, h, w)
        # (1/r) log mean_ij exp(r s_ij): average pooling as r -> 0, max pooling as r -> infinity
        pooled = torch.logsumexp(self.r * maps.flatten(2), dim=2) - math.log(maps[0, 0].numel())
        return ModelOutput(method="lse", logits=pooled / self.r, features=features, extras={"class_maps": maps})


class LseObjective:
    """L = CE(z, y~): cross-entropy of the pooled logits against the CutMix-mixed target."""

    term_names = ("cls",)

    def __init__(self, cutmix: CutMixOptions) -> None:
        self.cutmix = cutmix

    def __call__(self, model: nn.Module, images: Tensor, labels: Tensor, rng: np.random.Generator) -> LossTerms:
        """Run the model on a training batch and return its loss terms."""
        batch = self.cutmix.apply(images, labels, rng)  # CutMix-ed with probability cutmix_prob
        out = model(batch.images)
        cls = F.cross_entropy(out.logits, batch.soft_targets(out.logits.shape[1]))
        return LossTerms(cls, {"cls": cls})


def lse_class_map(inputs: MapInputs) -> Tensor:
    """Return the class map s_c (B, h, w) of each image's target class, before pooling."""
    idx = torch.arange(inputs.targets.shape[0], device=inputs.targets.device)
    return inputs.output.extras["class_maps"][idx, inputs.targets]


class LseMethod(Method):
    """Log-sum-exp pooling of class maps (a CAM variant with another head)."""

    name = "lse"
    paper = "Pinheiro and Collobert, From Image-level to Pixel-level Labeling with Convolutional Networks, CVPR 2015"
    summary = "1x1 conv to class maps, log-sum-exp pooling over space"
    options = (Option("lse_r", float, 5.0, "sharpness r of the log-sum-exp pooling",
                      check=lambda r: None if r > 0 else f"lse_r must be positive, got {r}"),)
    map_kinds = (MapKind("class", "the class map s_c before pooling", lse_class_map),)

    def build(self, backbone: nn.Module, num_classes: int, options: dict[str, Any]) -> nn.Module:
        """Return backbone + class maps + LSE pooling."""
        return LseNet(backbone, num_classes, float(options["lse_r"]))

    def objective(self, options: dict[str, Any]) -> LseObjective:
        """Return CE of the pooled logits, on CutMix-ed batches (this method's cutmix_prob / cutmix_alpha)."""
        return LseObjective(cutmix_options(options))
# --- end example

TINY = DigitsConfig(train_size=96, val_size=48, test_size=48)


def tiny(method: str, out: Path, **options: Any) -> TrainConfig:
    """A training run of one epoch on 96 digits (a couple of seconds)."""
    return TrainConfig(method=method, out=out, epochs=1, batch_size=32, digits=TINY, device="cpu",
                       threshold_step=0.05, model_options=options)


@pytest.fixture
def lse() -> Iterator[Method]:
    method = register_method(LseMethod)
    yield method
    unregister_method("lse")


def fake_entry_points(*entries: tuple[str, str]) -> Any:
    """Return an importlib.metadata.entry_points that also lists these (name, "module:attr") plugins."""
    real = importlib.metadata.entry_points
    ours = [importlib.metadata.EntryPoint(name=n, value=v, group=ENTRY_POINT_GROUP) for n, v in entries]

    def entry_points(**kwargs: Any) -> Any:
        return ours if kwargs.get("group") == ENTRY_POINT_GROUP else real(**kwargs)

    return entry_points


def test_the_docs_hold_the_worked_example_verbatim() -> None:
    source = Path(__file__).read_text()
    example = source.split("# --- begin example")[1].split("\n", 1)[1].split("# --- end example")[0]
    assert example.strip() in (REPO / "docs" / "methods.md").read_text()


def test_a_registered_method_trains_evaluates_and_compares(lse: Method, tmp_path: Path) -> None:
    assert "lse" in list_methods() and get_method("lse") is lse
    assert map_kind_names("lse")[0] == "class"  # its own kind first (the default), then the shared post-hoc kinds
    # trained through the same engine as the built-in methods; the recipe's SAOL options are ignored
    result = train(tiny("lse", tmp_path / "lse", lse_r=3.0), SilentReporter())
    ckpt = load_checkpoint(result.last)
    assert ckpt["config"]["model"]["options"] == {"lse_r": 3.0, "cutmix_prob": 0.5, "cutmix_alpha": 1.0}
    model = model_from_checkpoint(ckpt)
    assert model.r == 3.0
    metrics = pd.read_csv(result.out / "metrics.csv")
    assert "loss_cls" in metrics and metrics["val_max_box_acc_v2"].notna().all()

    report, meta, out_dir = run_eval(EvalSettings(ckpt=result.last, threshold_step=0.05), tmp_path / "eval")
    assert meta["method"] == "lse" and meta["map"] == "class"
    assert json.loads((out_dir / "eval.json").read_text())["num_images"] == 48
    assert 0.0 < report.metrics["max_box_acc_v2"] <= 100.0

    cam = train(tiny("cam", tmp_path / "cam"), SilentReporter())
    compared = run_compare(CompareSettings(methods=("cam", "lse"), ckpts={"cam": cam.last, "lse": result.last},
                                           out=tmp_path / "compare", device="cpu", threshold_step=0.05,
                                           grid_images=2))
    assert list(zip(compared.table["method"], compared.table["map"])) == [("cam", "cam"), ("lse", "class")]
    assert "grid" in compared.files and "lse" in compared.files["report"].read_text()


def test_a_method_from_an_entry_point_loads_on_first_use(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.metadata, "entry_points", fake_entry_points(("lse", f"{__name__}:LseMethod")))
    try:
        assert list_methods()[-1] == "lse"  # listed before it is imported
        model = create_model("cifar_resnet20", "lse", num_classes=4, lse_r=2.0).eval()
        assert isinstance(get_method("lse"), LseMethod)
        with torch.no_grad():
            out = model(torch.randn(2, 3, 48, 48))
            maps = raw_maps(model, out, torch.tensor([1, 3]))
        assert maps.shape == (2, 6, 6)
        torch.testing.assert_close(maps[1], out.extras["class_maps"][1, 3])
    finally:
        unregister_method("lse")


def test_a_broken_plugin_fails_in_one_line_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.metadata, "entry_points",
                        fake_entry_points(("broken", "saolctl_no_such_plugin:Method"), ("odd", f"{__name__}:TINY")))
    assert list_methods()[-2:] == ["broken", "odd"]  # listing imports nothing
    with pytest.raises(UserError, match=r"^method plugin 'broken' \(saolctl_no_such_plugin:Method\) failed to load: "
                                        r"ModuleNotFoundError: No module named 'saolctl_no_such_plugin'$"):
        get_method("broken")
    with pytest.raises(UserError, match=r"^method plugin 'odd' .* is not a saolctl Method \(got DigitsConfig\)$"):
        get_method("odd")
    with pytest.raises(UserError, match="unknown method 'nope'; valid: cam, cutmix, has, acol, spg, adl, abn, saol, "
                                        "broken, odd$"):
        get_method("nope")


def test_bad_registrations_and_options_are_refused(lse: Method) -> None:
    with pytest.raises(UserError, match="already registered"):
        register_method(type("Other", (LseMethod,), {}))
    with pytest.raises(UserError, match="lower-case"):
        register_method(type("Bad", (LseMethod,), {"name": "Bad Name"}))
    with pytest.raises(UserError, match="lse_r must be positive, got -1"):
        create_model("cifar_resnet20", "lse", num_classes=3, lse_r=-1.0)
    with pytest.raises(UserError, match="model option lse_r must be a finite number"):
        create_model("cifar_resnet20", "lse", num_classes=3, lse_r="sharp")
    create_model("cifar_resnet20", "cam", num_classes=3, lse_r=1.0)  # another method's option: checked, ignored


def input_energy(inputs: MapInputs) -> Tensor:
    """A toy map kind computed from the images alone: the mean squared input (B, S, S)."""
    return inputs.images.pow(2).mean(dim=1)


def test_a_shared_map_kind_reaches_every_method_and_gets_the_images() -> None:
    register_map_kind(MapKind("energy", "mean squared input", input_energy, needs_images=True))
    try:
        assert map_kind_names("abn")[:2] == ["attention", "class"] and map_kind_names("abn")[-1] == "energy"
        model = create_model("cifar_resnet20", "cam", num_classes=10).eval()
        ds = open_dataset("digits", "test", train=False, img_size=48, digits=TINY)
        counters = evaluate(model, make_loader(ds, 48, shuffle=False, workers=0, seed=0), num_classes=10,
                            device=torch.device("cpu"), with_boxes=True, with_masks=False,
                            map_kinds=["cam", "energy"], threshold_step=0.05)
        energy = summarize(counters["energy"], ds.class_names).metrics
        assert energy["num_localized"] == 48 and energy["max_box_acc_v2"] > 0.0
        with torch.no_grad(), pytest.raises(UserError, match="computed from the input images"):
            raw_maps(model, model(torch.zeros(1, 3, 48, 48)), torch.tensor([0]), "energy")
    finally:
        unregister_map_kind("energy")
