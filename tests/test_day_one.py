"""What a new user hits on day one (issue "Day one at real scale"): recipes, class sets, workers, config keys,
eval's split and threshold, best.pt selection, resuming into AMP and upright phone photos."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from saolctl.cli.app import app
from saolctl.data import DigitsConfig, default_workers, write_digits
from saolctl.engine import compare_run
from saolctl.engine.checkpoint import load_checkpoint
from saolctl.engine.compare_run import CompareSettings, run_compare
from saolctl.engine.eval_run import EvalSettings, run_eval
from saolctl.data.coverage import class_coverage_warning
from saolctl.engine.device import restore_scaler, wants_channels_last
from saolctl.engine.train import TrainConfig, TrainResult, train
from saolctl.errors import UserError

runner = CliRunner()
TINY = DigitsConfig(train_size=96, val_size=48, test_size=48)


class Recorder:
    """A Reporter that keeps the messages."""

    def __init__(self) -> None:
        self.messages: list[str] = []

    def start(self, epochs: int, steps_per_epoch: int, start_epoch: int) -> None: ...

    def step(self, epoch: int, step: int, terms: dict, images_per_s: float) -> None: ...

    def epoch_end(self, epoch: int, row: dict) -> None: ...

    def message(self, text: str) -> None:
        self.messages.append(text)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3-epoch CAM run on tiny digits (validation has boxes)."""
    out = tmp_path_factory.mktemp("day1") / "cam"
    train(TrainConfig(method="cam", out=out, epochs=3, batch_size=32, device="cpu", digits=TINY))
    return out


# 5. a folder written by `saolctl digits` trains with the digits recipe


def test_a_digits_folder_gets_the_digits_recipe(tmp_path: Path) -> None:
    root = write_digits(tmp_path / "d", DigitsConfig(train_size=20, val_size=10, test_size=10), seed=0)
    recipe = TrainConfig(data=str(root)).recipe()
    assert recipe.name == "digits" and recipe.backbone == "cifar_resnet20" and not recipe.pretrained
    assert TrainConfig(data=str(tmp_path)).recipe().name == "photos"  # any other folder: photos


# 6. train and val with different class sets


def test_class_coverage_warning_names_both_sides() -> None:
    names = ["albatross", "ani", "auklet", "blackbird"]
    text = class_coverage_warning(names, np.array([0, 1, 2, 2]), np.array([0, 2, 3]))
    assert text is not None and "\n" not in text
    assert "without training images (never learned): blackbird" in text
    assert "without validation images (not validated): ani" in text
    assert class_coverage_warning(names, np.array([0, 1, 2, 3]), np.array([3, 2, 1, 0])) is None


def _folder(root: Path, split: str, classes: list[str], n: int = 4) -> None:
    rng = np.random.default_rng(len(classes))
    for c in classes:
        d = root / split / c
        d.mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(d / f"{i}.png")


def test_training_on_mismatched_class_sets_warns_once_and_records_it(tmp_path: Path) -> None:
    _folder(tmp_path / "data", "train", ["albatross", "ani", "auklet"])
    _folder(tmp_path / "data", "val", ["albatross", "auklet", "blackbird"])
    rec = Recorder()
    train(TrainConfig(method="cam", data=str(tmp_path / "data"), out=tmp_path / "run", backbone="cifar_resnet20",
                      pretrained=False, img_size=32, epochs=1, batch_size=8, device="cpu", workers=0), rec)
    warned = [m for m in rec.messages if m.startswith("warning:")]
    assert len(warned) == 1 and "blackbird" in warned[0] and "ani" in warned[0]
    assert json.loads((tmp_path / "run" / "config.json").read_text())["warnings"] == warned


# 7. workers: a sensible default for folders, and compare honours the speed options


def test_default_workers_are_none_for_digits_and_per_core_for_folders(tmp_path: Path) -> None:
    assert default_workers("digits") == 0
    assert 1 <= default_workers(str(tmp_path)) <= 8


def test_train_records_the_workers_it_used(run_dir: Path) -> None:
    cfg = json.loads((run_dir / "config.json").read_text())
    assert cfg["workers"] == 0 and cfg["train"]["workers"] is None


class Stop(Exception):
    """Raised by a stand-in to end a run once what it was given has been recorded."""


def test_compare_passes_its_options_to_training(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    seen: list[TrainConfig] = []

    def fake_train(cfg: TrainConfig, reporter: object = None) -> None:
        seen.append(cfg)
        raise Stop

    monkeypatch.setattr(compare_run, "train", fake_train)
    settings = CompareSettings(methods=("cam",), out=tmp_path / "c", batch_size=16, amp=True, channels_last=True,
                               workers=1, device="cpu", epochs=2)
    with pytest.raises(Stop):
        run_compare(settings)
    (cfg,) = seen
    assert (cfg.batch_size, cfg.amp, cfg.channels_last, cfg.workers, cfg.device, cfg.epochs) == (16, True, True, 1, "cpu", 2)


def test_compare_evaluates_with_its_options(monkeypatch: pytest.MonkeyPatch, run_dir: Path, tmp_path: Path) -> None:
    seen: dict = {}

    def fake_evaluate(model: torch.nn.Module, loader: object, **kwargs: object) -> None:
        seen.update(kwargs, batch_size=loader.batch_size, workers=loader.num_workers,
                    channels_last=kwargs["channels_last"], amp=kwargs["autocast"] is not None)
        raise Stop

    monkeypatch.setattr(compare_run, "evaluate", fake_evaluate)
    settings = CompareSettings(methods=("cam",), ckpts={"cam": run_dir / "best.pt"}, out=tmp_path / "c",
                               batch_size=16, amp=True, channels_last=True, workers=0, device="cpu")
    with pytest.raises(Stop):
        run_compare(settings)
    assert seen["batch_size"] == 16 and seen["channels_last"] and seen["device"] == torch.device("cpu")
    with seen["autocast"]():
        assert torch.get_autocast_dtype("cpu") == torch.bfloat16 and torch.is_autocast_enabled("cpu")


def test_compare_evaluates_in_float32_unless_amp_is_asked(monkeypatch: pytest.MonkeyPatch, run_dir: Path,
                                                          tmp_path: Path) -> None:
    """The default precision (bfloat16 training on an AMX CPU) never reaches the reported numbers."""
    seen: dict = {}

    def fake_evaluate(model: torch.nn.Module, loader: object, **kwargs: object) -> None:
        seen.update(kwargs)
        raise Stop

    monkeypatch.setattr(compare_run, "evaluate", fake_evaluate)
    settings = CompareSettings(methods=("cam",), ckpts={"cam": run_dir / "best.pt"}, out=tmp_path / "c",
                               device="cpu")
    assert settings.amp is None
    with pytest.raises(Stop):
        run_compare(settings)
    with seen["autocast"]():
        assert not torch.is_autocast_enabled("cpu")


# 9. config keys, eval's split, the stored threshold, resuming into AMP


def test_config_file_keys_are_exactly_the_options(tmp_path: Path) -> None:
    for key in ("threshold_step", "train_split", "val_split", "boxes_dir"):
        cfg = tmp_path / f"{key}.json"
        cfg.write_text(json.dumps({key: "x"}))
        r = runner.invoke(app, ["train", "--config", str(cfg), "--out", str(tmp_path / "o")])
        assert r.exit_code == 2 and f"unknown key(s) in {cfg}: {key}" in r.output, r.output
        assert not (tmp_path / "o").exists()


def test_config_file_long_option_names_reach_the_run(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('method = "cam"\nepochs = 1\nbatch-size = 32\nformat = "digits"\n[digits]\n'
                   "train_size = 40\nval_size = 20\ntest_size = 20\n")
    r = runner.invoke(app, ["train", "--config", str(cfg), "--device", "cpu", "--out", str(tmp_path / "o")],
                      env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    train_cfg = json.loads((tmp_path / "o" / "config.json").read_text())["train"]
    assert (train_cfg["method"], train_cfg["epochs"], train_cfg["batch_size"], train_cfg["format"]) == ("cam", 1, 32, "digits")


def _wsol(root: Path, splits: dict[str, str]) -> Path:
    """A 2-class WSOL layout; each split's class_labels.txt is given (a broken one: text that fails to parse)."""
    for split, labels in splits.items():
        meta = root / "metadata" / split
        meta.mkdir(parents=True)
        (root / "images" / split).mkdir(parents=True)
        ids = [f"{split}/{i}.png" for i in range(4)]
        for i, image_id in enumerate(ids):
            Image.fromarray(np.full((20, 20, 3), 40 * i, np.uint8)).save(root / "images" / image_id)
        (meta / "image_ids.txt").write_text("\n".join(ids) + "\n")
        (meta / "class_labels.txt").write_text(labels or "\n".join(f"{x},{i % 2}" for i, x in enumerate(ids)) + "\n")
    return root


def test_eval_uses_val_only_where_there_is_no_test_split(run_dir: Path, tmp_path: Path) -> None:
    # the checkpoint has 10 classes, these folders 2: a class-count error proves which split was opened
    no_test = _wsol(tmp_path / "a", {"train": "", "val": ""})
    with pytest.raises(UserError, match=r"\(val\) has 2"):
        run_eval(EvalSettings(ckpt=run_dir / "best.pt", data=str(no_test), device="cpu"), tmp_path / "e1")
    broken_test = _wsol(tmp_path / "b", {"train": "", "val": "", "test": "not,a,label\n"})
    with pytest.raises(UserError, match="class labels"):  # the test split's own error, not a silent val
        run_eval(EvalSettings(ckpt=run_dir / "best.pt", data=str(broken_test), device="cpu"), tmp_path / "e2")


def test_eval_stores_the_threshold_only_for_its_own_val_split_and_gt_maps(run_dir: Path, tmp_path: Path) -> None:
    ckpt = tmp_path / "copy.pt"
    ckpt.write_bytes((run_dir / "best.pt").read_bytes())
    torch.save({**load_checkpoint(ckpt), "best_threshold": 0.123}, ckpt)

    def evaluate_and_read(**kw: object) -> float:
        _, meta, _ = run_eval(EvalSettings(ckpt=ckpt, device="cpu", threshold_step=0.01, **kw), tmp_path / "e")
        return float(load_checkpoint(ckpt)["best_threshold"]), meta["stored_threshold"]

    assert evaluate_and_read(split="val", target="pred") == (0.123, False)
    assert evaluate_and_read(split="test") == (0.123, False)
    threshold, stored = evaluate_and_read(split="val")
    assert stored and threshold != 0.123


def test_resuming_a_run_without_amp_into_amp_starts_a_fresh_scaler() -> None:
    scaler = torch.amp.GradScaler("cpu", enabled=True, init_scale=1024.0)
    restore_scaler(scaler, {})  # a non-AMP run saved an empty state: GradScaler.load_state_dict({}) raises
    assert scaler.get_scale() == 1024.0
    restore_scaler(scaler, {"scale": 8.0, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 10,
                            "_growth_tracker": 3})
    assert scaler.get_scale() == 8.0
    off = torch.amp.GradScaler("cpu", enabled=False)
    restore_scaler(off, {"scale": 8.0})  # an AMP run resumed without AMP: nothing to restore


# 11. best.pt on localization when validation has boxes, best_top1.pt beside it


def test_best_checkpoints_are_chosen_on_localization_and_on_top1(run_dir: Path) -> None:
    history = pd.read_csv(run_dir / "metrics.csv")
    best, best_top1 = load_checkpoint(run_dir / "best.pt"), load_checkpoint(run_dir / "best_top1.pt")
    assert best["selected_on"] == "val_max_box_acc_v2" and best_top1["selected_on"] == "val_top1"
    assert best["metrics"]["val_max_box_acc_v2"] == history["val_max_box_acc_v2"].max()
    assert best_top1["metrics"]["val_top1"] == history["val_top1"].max()
    cfg = json.loads((run_dir / "config.json").read_text())
    assert cfg["best_checkpoints"] == {"best.pt": "val_max_box_acc_v2", "best_top1.pt": "val_top1"}


def test_without_validation_boxes_best_is_chosen_on_top1(tmp_path: Path) -> None:
    _folder(tmp_path / "data", "train", ["a", "b"])
    _folder(tmp_path / "data", "val", ["a", "b"])
    result = train(TrainConfig(method="cam", data=str(tmp_path / "data"), out=tmp_path / "run",
                               backbone="cifar_resnet20", pretrained=False, img_size=32, epochs=1, batch_size=8,
                               device="cpu", workers=0))
    assert result.selected_on == "val_top1" and not (tmp_path / "run" / "best_top1.pt").exists()
    assert load_checkpoint(result.best)["selected_on"] == "val_top1"


# 12. a phone photo with EXIF orientation is localized upright


def test_localize_applies_exif_orientation_to_user_photos(run_dir: Path, tmp_path: Path) -> None:
    photo = tmp_path / "phone.jpg"
    stored = Image.fromarray(np.random.default_rng(0).integers(0, 255, (30, 80, 3), dtype=np.uint8))  # 80 x 30 stored
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display (a portrait phone shot)
    stored.save(photo, exif=exif)
    out = tmp_path / "loc"
    r = runner.invoke(app, ["localize", str(photo), "--ckpt", str(run_dir / "best.pt"), "--threshold", "0.2",
                            "--device", "cpu", "--out", str(out)], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    row = pd.read_csv(out / "predictions.csv").iloc[0]
    assert row["x1"] <= 29 and row["y1"] <= 79  # boxes in the upright 30 x 80 frame
    overlay = Image.open(out / row["overlay"])
    assert overlay.height > overlay.width  # drawn upright (portrait), not lying on its side


# 1. the quickstart's budget: compare evaluates the last epoch (wsolevaluation's default), CPU runs channels-last


def test_compare_evaluates_the_last_checkpoint_unless_asked(run_dir: Path) -> None:
    result = TrainResult(out=run_dir, last=run_dir / "last.pt", best=run_dir / "best.pt", metrics={},
                         history=pd.DataFrame(), selected_on="val_max_box_acc_v2",
                         best_by={"val_max_box_acc_v2": run_dir / "best.pt", "val_top1": run_dir / "best_top1.pt"})
    assert CompareSettings().checkpoint == "last"
    assert compare_run.trained_checkpoint(result, "last") == run_dir / "last.pt"
    assert compare_run.trained_checkpoint(result, "best") == run_dir / "best.pt"
    assert compare_run.trained_checkpoint(result, "best_top1") == run_dir / "best_top1.pt"
    with pytest.raises(UserError, match="--checkpoint must be one of last, best, best_top1"):
        CompareSettings(checkpoint="first")


def test_compare_reports_which_checkpoint_it_evaluated(monkeypatch: pytest.MonkeyPatch, run_dir: Path,
                                                       tmp_path: Path) -> None:
    def fake_train(cfg: TrainConfig, reporter: object = None) -> TrainResult:
        return TrainResult(out=run_dir, last=run_dir / "last.pt", best=run_dir / "best.pt", metrics={},
                           history=pd.DataFrame(), best_by={"val_top1": run_dir / "best_top1.pt"})

    monkeypatch.setattr(compare_run, "train", fake_train)
    result = run_compare(CompareSettings(methods=("cam",), out=tmp_path / "c", device="cpu", grid_images=0,
                                         threshold_step=0.05))
    saved = json.loads(result.files["json"].read_text())
    assert saved["checkpoints"] == {"cam": str(run_dir / "last.pt")} and saved["checkpoint_rule"] == "last"
    assert "evaluated at their last epoch" in result.files["report"].read_text()


def test_channels_last_is_the_cpu_default_and_can_be_turned_off() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert wants_channels_last(None, cpu) and not wants_channels_last(None, cuda)
    assert not wants_channels_last(False, cpu) and wants_channels_last(True, cuda)


def test_training_on_cpu_runs_channels_last_by_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from saolctl.engine import train as train_module

    seen: list[bool] = []

    def fake_evaluate(model: torch.nn.Module, loader: object, **kwargs: object) -> None:
        weight = next(p for p in model.parameters() if p.dim() == 4)
        seen.append(bool(kwargs["channels_last"]) and weight.is_contiguous(memory_format=torch.channels_last))
        raise Stop

    monkeypatch.setattr(train_module, "evaluate", fake_evaluate)
    for asked, expected in ((None, True), (False, False)):
        with pytest.raises(Stop):
            train(TrainConfig(method="cam", out=tmp_path / str(asked), epochs=1, batch_size=32, device="cpu",
                              digits=TINY, channels_last=asked))
        assert seen[-1] is expected


def _digits_config(folder: Path) -> Path:
    """Write a config file that shrinks the embedded digits to TINY."""
    path = folder / "tiny.toml"
    path.write_text("[digits]\n" + "".join(f"{k} = {getattr(TINY, k)}\n" for k in ("train_size", "val_size", "test_size")))
    return path


def test_no_channels_last_flag_reaches_the_run(tmp_path: Path) -> None:
    res = runner.invoke(app, ["train", "--method", "cam", "--epochs", "1", "--batch-size", "32", "--device", "cpu",
                              "--no-channels-last", "--out", str(tmp_path / "run"), "--config",
                              str(_digits_config(tmp_path))])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "run" / "config.json").read_text())["train"]["channels_last"] is False


# issue 13, part 4: the schedule is torch's SequentialLR(LinearLR, CosineAnnealingLR), with the same values


def _reference_lr_factor(step: int, total: int, warmup: int) -> float:
    """The schedule saolctl had before SequentialLR: linear warm-up to 1, then cosine to 0."""
    import math

    if step < warmup:
        return (step + 1) / max(warmup, 1)
    return 0.5 * (1.0 + math.cos(math.pi * min((step - warmup) / max(total - warmup, 1), 1.0)))


@pytest.mark.parametrize("total,warmup", [(250, 12), (40, 5), (30, 1), (30, 0)])
def test_schedule_equals_linear_warmup_then_cosine(total: int, warmup: int) -> None:
    from saolctl.engine.optim import make_scheduler

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    scheduler = make_scheduler(opt, total, warmup)
    for step in range(total):
        assert opt.param_groups[0]["lr"] == pytest.approx(0.1 * _reference_lr_factor(step, total, warmup), abs=1e-12)
        opt.step()
        scheduler.step()


def test_resuming_a_schedule_saved_before_sequential_lr_replays_its_steps() -> None:
    from saolctl.engine.optim import make_scheduler, restore_scheduler

    def lambda_state(steps: int) -> dict:
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
        old = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: _reference_lr_factor(t, 100, 10))
        for _ in range(steps):
            opt.step()
            old.step()
        return old.state_dict()

    for saved in (lambda_state(37), make_scheduler(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1),
                                                   100, 10).state_dict()):
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
        scheduler = make_scheduler(opt, 100, 10)
        restore_scheduler(scheduler, saved)
        step = int(saved["last_epoch"])
        assert opt.param_groups[0]["lr"] == pytest.approx(0.1 * _reference_lr_factor(step, 100, 10), abs=1e-12)


def test_compare_scores_identically_in_one_or_two_processes(run_dir: Path, tmp_path: Path) -> None:
    tables = []
    for n in (1, 2):
        result = run_compare(CompareSettings(methods=("cam",), ckpts={"cam": run_dir / "last.pt"}, out=tmp_path / str(n),
                                             device="cpu", grid_images=0, threshold_step=0.01, scoring_processes=n))
        tables.append(result.table)
    pd.testing.assert_frame_equal(tables[0], tables[1])
    assert tables[0]["max_box_acc_v2"].iloc[0] > 0
    assert compare_run.scoring_processes(None) >= 1 and compare_run.scoring_processes(3) == 3


def test_datasets_and_localize_read_the_same_image_extensions(tmp_path: Path) -> None:
    from saolctl.data.images import IMAGE_EXTENSIONS, is_image_file
    from saolctl.engine.localize_run import expand_inputs

    for ext in IMAGE_EXTENSIONS:
        Image.new("RGB", (8, 8)).save(tmp_path / f"a{ext.replace('.', '_')}{ext}")
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / ".hidden.png").write_bytes(b"")
    found = expand_inputs((tmp_path,))
    assert sorted(p.suffix for p in found) == sorted(IMAGE_EXTENSIONS)
    assert all(is_image_file(p) for p in found) and ".gif" in IMAGE_EXTENSIONS
