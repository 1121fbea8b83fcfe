"""Post-hoc map kinds (Grad-CAM family) computed with pytorch-grad-cam, checked against the package itself."""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np
import pytest
import torch

from saolctl.errors import UserError
from saolctl.localization import posthoc
from saolctl.localization.maps import raw_maps
from saolctl.localization.posthoc import POSTHOC_KINDS, LogitsOf, posthoc_raw_maps, target_layer
from saolctl.models import create_model

grad_cam = pytest.importorskip("pytorch_grad_cam", reason="the posthoc extra (grad-cam) is not installed")
from pytorch_grad_cam.utils.image import scale_cam_image  # noqa: E402


def _as_the_package_scales(raw: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The package's own finish of one target layer: min-max, resize to the input, min-max again."""
    return scale_cam_image(scale_cam_image(raw, size))


def _model(method: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = create_model("cifar_resnet20", method, 5)
    for m in model.modules():  # non-trivial BatchNorm statistics, so eval mode differs from train mode
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    return model.eval()


def _images(n: int = 3, size: int = 32, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_grad_cam_of_a_gap_fc_network_is_its_relu_cam_over_the_grid_size() -> None:
    model, images, targets = _model("cam"), _images(), torch.tensor([0, 3, 4])
    ours = posthoc_raw_maps(model, images, targets, "gradcam")  # (B, h, w)
    with torch.no_grad():
        out = model(images)
        cam = raw_maps(model, out, targets, "cam")
    h, w = cam.shape[-2:]
    # d logit_c / d A_k(i, j) = w_ck / (h w), so Grad-CAM's channel weights are the FC weights / (h w)
    torch.testing.assert_close(ours, cam.clamp_min(0) / (h * w), rtol=1e-4, atol=1e-6)
    assert ours.shape == (3, h, w) and float(ours.max()) > 0


@pytest.mark.parametrize("method,kind", [("saol", k) for k in ("gradcam", "gradcampp", "xgradcam", "hirescam",
                                                                "layercam", "eigencam")] + [("abn", "gradcam")])
def test_each_kind_equals_the_package_output_once_finished_like_the_package(method: str, kind: str) -> None:
    model, images, targets = _model(method), _images(), torch.tensor([1, 2, 0])
    ours = posthoc_raw_maps(model, images, targets, kind).numpy()
    cls = getattr(grad_cam, POSTHOC_KINDS[kind].cam_class)
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    with cls(model=LogitsOf(model), target_layers=[target_layer(model)]) as cam:
        theirs = cam(input_tensor=images, targets=[ClassifierOutputTarget(int(t)) for t in targets])
    np.testing.assert_allclose(_as_the_package_scales(ours, (32, 32)), theirs, rtol=1e-4, atol=1e-5)
    if POSTHOC_KINDS[kind].uses_target:  # a class-specific map changes with the class
        other = posthoc_raw_maps(model, images, (targets + 1) % 5, kind).numpy()
        assert not np.allclose(other, ours)


def test_score_cam_equals_the_package_score_cam() -> None:
    model, images, targets = _model("cam"), _images(n=2), torch.tensor([4, 1])
    ours = posthoc_raw_maps(model, images, targets, "scorecam").numpy()
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    with grad_cam.ScoreCAM(model=LogitsOf(model), target_layers=[target_layer(model)]) as cam:
        theirs = cam(input_tensor=images, targets=[ClassifierOutputTarget(int(t)) for t in targets])
    np.testing.assert_allclose(_as_the_package_scales(ours, (32, 32)), theirs, rtol=1e-3, atol=1e-4)


def test_posthoc_maps_leave_the_model_as_they_found_it() -> None:
    model = _model("saol").train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    posthoc_raw_maps(model, _images(), torch.tensor([0, 1, 2]), "gradcampp")
    assert model.training
    assert all(p.grad is None for p in model.parameters())
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # no BatchNorm statistics moved


def test_a_posthoc_kind_without_its_package_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.import_module

    def no_grad_cam(name: str, *args: object) -> object:
        if name == "pytorch_grad_cam":
            raise ImportError("No module named 'pytorch_grad_cam'")
        return real(name, *args)

    monkeypatch.setattr(posthoc.importlib, "import_module", no_grad_cam)
    with pytest.raises(UserError, match=r"map kind 'gradcam' needs the posthoc extra: pip install 'saolctl\[posthoc\]'"):
        posthoc_raw_maps(_model("cam"), _images(), torch.tensor([0, 1, 2]), "gradcam")


def test_an_unknown_posthoc_kind_fails_in_one_line() -> None:
    with pytest.raises(UserError, match="unknown post-hoc map kind 'gradcam2'; valid: gradcam, gradcampp"):
        posthoc_raw_maps(_model("cam"), _images(), torch.tensor([0, 1, 2]), "gradcam2")


# the post-hoc kinds through the registry: eval --map gradcam and compare --add-maps


@pytest.fixture(scope="module")
def tiny_cam(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from saolctl.data import DigitsConfig
    from saolctl.engine.train import TrainConfig, train

    out = tmp_path_factory.mktemp("posthoc") / "cam"
    train(TrainConfig(method="cam", out=out, epochs=1, batch_size=32, device="cpu",
                      digits=DigitsConfig(train_size=96, val_size=32, test_size=32)))
    return out


def test_every_method_offers_the_posthoc_kinds_after_its_own() -> None:
    from saolctl.localization.maps import default_map_kind, map_kind_names

    for method in ("cam", "abn", "saol"):
        names = map_kind_names(method)
        assert names[-len(POSTHOC_KINDS):] == list(POSTHOC_KINDS) and default_map_kind(method) == names[0]


def test_eval_scores_a_posthoc_map_kind(tiny_cam: Path, tmp_path: Path) -> None:
    from saolctl.engine.eval_run import EvalSettings, run_eval

    report, meta, _ = run_eval(EvalSettings(ckpt=tiny_cam / "last.pt", split="test", map_kind="gradcam",
                                            device="cpu", threshold_step=0.01), out_dir=tmp_path / "e")
    assert meta["map"] == "gradcam" and report.metrics["num_images"] == 32
    cam, _, _ = run_eval(EvalSettings(ckpt=tiny_cam / "last.pt", split="test", device="cpu", threshold_step=0.01),
                         out_dir=tmp_path / "c")
    assert report.metrics["top1"] == cam.metrics["top1"]  # the same classifier, another map
    assert "gradcam" in (tmp_path / "e" / "eval.json").read_text()


@pytest.mark.slow
def test_compare_adds_posthoc_rows_for_every_method(tiny_cam: Path, tmp_path: Path) -> None:
    from saolctl.engine.compare_run import CompareSettings, run_compare

    result = run_compare(CompareSettings(methods=("cam",), ckpts={"cam": tiny_cam / "last.pt"}, out=tmp_path / "c",
                                         device="cpu", grid_images=2, threshold_step=0.05,
                                         extra_maps=("gradcam", "eigencam")))
    assert list(result.table["map"]) == ["cam", "gradcam", "eigencam"]
    assert result.table["max_box_acc_v2"].between(0, 100).all() and result.table["top1"].nunique() == 1


def test_compare_refuses_a_kind_that_is_not_shared() -> None:
    from saolctl.engine.compare_run import CompareSettings

    with pytest.raises(UserError, match="--add-maps: 'contrib' is not a map kind every method has"):
        CompareSettings(extra_maps=("contrib",))


def test_a_missing_extra_fails_before_evaluating(monkeypatch: pytest.MonkeyPatch, tiny_cam: Path,
                                                 tmp_path: Path) -> None:
    from saolctl.engine.eval_run import EvalSettings, run_eval

    monkeypatch.setattr(posthoc, "_package_installed", lambda: False)
    with pytest.raises(UserError, match=r"map kind 'gradcam' needs the posthoc extra: pip install"):
        run_eval(EvalSettings(ckpt=tiny_cam / "last.pt", split="test", map_kind="gradcam", device="cpu"),
                 out_dir=tmp_path / "e")
    assert not (tmp_path / "e").exists()
