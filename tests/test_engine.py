"""The training loop, checkpoints and evaluation engine on a tiny embedded dataset."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from saolctl.data import DigitsConfig, make_loader, open_dataset
from saolctl.engine.checkpoint import CheckpointError, load_checkpoint, model_from_checkpoint
from saolctl.engine.evaluate import evaluate, summarize
from saolctl.engine.train import SilentReporter, TrainConfig, train

TINY = DigitsConfig(train_size=96, val_size=48, test_size=48)


def tiny_config(method: str, out: Path, epochs: int = 1, **kw) -> TrainConfig:
    return TrainConfig(method=method, out=out, epochs=epochs, batch_size=32, digits=TINY, device="cpu",
                       threshold_step=0.05, **kw)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("runs")
    return {m: train(tiny_config(m, root / m)).out for m in ("cam", "abn", "saol")}


@pytest.mark.parametrize("method,terms", [("cam", ["cls"]), ("abn", ["att", "per"]),
                                          ("saol", ["cls", "gap", "ss1", "ss2", "entropy", "att_ss"])])
def test_run_folder_holds_config_metrics_and_checkpoints(runs: dict[str, Path], method: str, terms: list[str]) -> None:
    out = runs[method]
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model"]["method"] == method and cfg["recipe"]["backbone"] == "cifar_resnet20"
    # the digits recipe's SAOL options from the SAOL study (docs/saol-localization.md), for SAOL only
    options = cfg["model"]["options"]  # each method stores its own options (SAOL's only in SAOL's config)
    if method == "saol":
        assert options["cutmix_prob"] == 0.25
        assert options["att_ss_weight"] == 1.0 and options["ss2_weight"] == 0.0 and options["saol_mid"] == 64
    else:  # vanilla CAM and ABN: no CutMix
        assert "att_ss_weight" not in options and "cutmix_prob" not in options
    metrics = pd.read_csv(out / "metrics.csv")
    assert len(metrics) == 1
    for t in terms + ["total"]:
        assert f"loss_{t}" in metrics and np.isfinite(metrics[f"loss_{t}"]).all()
    assert 0.0 <= metrics["val_top1"].iloc[0] <= 100.0
    assert 0.0 <= metrics["val_max_box_acc_v2"].iloc[0] <= 100.0
    ckpt = load_checkpoint(out / "last.pt")
    for key in ("format", "format_version", "model", "config", "metrics", "best_threshold", "versions",
                "optimizer", "scheduler", "scaler", "rng", "epoch"):
        assert key in ckpt, key
    assert ckpt["config"]["class_names"] == [str(d) for d in range(10)]
    assert ckpt["config"]["img_size"] == 48  # the digits recipe
    assert ckpt["versions"]["torch"] == torch.__version__
    best = load_checkpoint(out / "best.pt")
    assert "optimizer" not in best


def test_checkpoint_rebuilds_the_same_model(runs: dict[str, Path]) -> None:
    ckpt = load_checkpoint(runs["saol"] / "best.pt")
    model = model_from_checkpoint(ckpt)
    for k, v in model.state_dict().items():
        assert torch.equal(v, ckpt["model"][k]), k


def test_evaluation_counters_merge_to_the_whole(runs: dict[str, Path]) -> None:
    model = model_from_checkpoint(load_checkpoint(runs["cam"] / "best.pt"))
    ds = open_dataset("digits", "val", train=False, img_size=64, digits=TINY)
    batches = list(make_loader(ds, 16, shuffle=False, workers=0, seed=0))
    kw = dict(num_classes=10, device=torch.device("cpu"), with_boxes=True, with_masks=ds.has_masks,
              threshold_step=0.05)
    whole = evaluate(model, batches, **kw)["cam"]
    a = evaluate(model, batches[:1], **kw)["cam"]
    b = evaluate(model, batches[1:], **kw)["cam"]
    a.merge(b)
    ra, rw = summarize(a, ds.class_names), summarize(whole, ds.class_names)
    assert ra.metrics == rw.metrics
    assert rw.metrics["num_images"] == 48 and rw.metrics["num_localized"] == 48
    np.testing.assert_array_equal(ra.curves.to_numpy(), rw.curves.to_numpy())


def test_every_saol_map_kind_from_one_pass(runs: dict[str, Path]) -> None:
    model = model_from_checkpoint(load_checkpoint(runs["saol"] / "best.pt"))
    ds = open_dataset("digits", "test", train=False, img_size=64, digits=TINY)
    kinds = ["contrib", "attention", "spatial", "gapcam"]
    counters = evaluate(model, make_loader(ds, 48, shuffle=False, workers=0, seed=0), num_classes=10,
                        device=torch.device("cpu"), with_boxes=True, with_masks=False, map_kinds=kinds,
                        threshold_step=0.05)
    assert list(counters) == kinds
    tops = {k: summarize(c, ds.class_names).metrics["top1"] for k, c in counters.items()}
    assert len(set(tops.values())) == 1  # one prediction, several maps


class _CrashAfterFirstEpoch(SilentReporter):
    def epoch_end(self, epoch: int, row: dict) -> None:
        raise KeyboardInterrupt  # the process dies right after last.pt of epoch 1 was written


def test_resume_continues_to_the_same_weights(tmp_path: Path) -> None:
    straight = train(tiny_config("saol", tmp_path / "a", epochs=2))
    with pytest.raises(KeyboardInterrupt):
        train(tiny_config("saol", tmp_path / "b", epochs=2), _CrashAfterFirstEpoch())
    first = load_checkpoint(tmp_path / "b" / "last.pt")
    resumed = train(tiny_config("saol", tmp_path / "b", epochs=2, resume=True))
    assert first["epoch"] == 0
    a = load_checkpoint(straight.last)["model"]
    b = load_checkpoint(resumed.last)["model"]
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert len(pd.read_csv(tmp_path / "b" / "metrics.csv")) == 2


def test_bad_checkpoints_are_refused_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.pt")
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        load_checkpoint(tmp_path / "empty.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a torch file at all")
    with pytest.raises(CheckpointError, match="truncated or not a torch file"):
        load_checkpoint(tmp_path / "junk.pt")
    torch.save({"weights": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a saolctl checkpoint"):
        load_checkpoint(tmp_path / "other.pt")


class _Boom:
    def __reduce__(self):  # loading this pickle would run code
        return (Path("/tmp/saolctl_pwned").write_text, ("ran",))


def test_a_pickle_that_runs_code_is_refused_and_never_runs(tmp_path: Path) -> None:
    marker = Path("/tmp/saolctl_pwned")
    marker.unlink(missing_ok=True)
    torch.save({"format": "saolctl", "model": {}, "config": {}, "evil": _Boom()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(tmp_path / "evil.pt")
    assert not marker.exists()


def test_bad_training_options_fail_before_any_work(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="--epochs"):
        train(tiny_config("cam", tmp_path / "x", epochs=0))
    with pytest.raises(ValueError, match="valid: cam, cutmix, has, acol, spg, adl, abn, saol"):
        train(tiny_config("gradcam", tmp_path / "y"))
