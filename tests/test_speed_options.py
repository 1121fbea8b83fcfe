"""Speed options on CPU: --amp (bfloat16 autocast), --channels-last and --compile each run a training step.

torch.compile with the default inductor backend takes minutes to compile the SAOL model on 2 CPU cores
(about 145 s measured), too slow for CI. So the training loop's compile path is run with the
``aot_eager`` backend (Dynamo's graph capture and AOTAutograd of the real model, no code generation),
and inductor's C++ code generation is checked on a tiny MLP's forward and backward (a fresh cache).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from saolctl.cli.app import app
from saolctl.data import DigitsConfig
from saolctl.engine.eval_run import EvalSettings, run_eval
from saolctl.engine.device import autocast_factory, compile_model, precision_name, resolve_amp
from saolctl.engine.train import TrainConfig, train
from saolctl.errors import UserError

ONE_STEP = DigitsConfig(image_size=32, train_size=16, val_size=16, test_size=16)


def one_step(out: Path, method: str = "saol", **options: Any) -> TrainConfig:
    """A run of exactly one training step (16 images, batch 16) and a 16-image validation."""
    return TrainConfig(method=method, out=out, epochs=1, batch_size=16, img_size=32, digits=ONE_STEP,
                       device="cpu", threshold_step=0.05, **options)


@pytest.mark.parametrize("method,option", [("saol", "amp"), ("saol", "channels_last"), ("abn", "channels_last")])
def test_option_trains_one_step(tmp_path: Path, option: str, method: str) -> None:
    result = train(one_step(tmp_path, method, **{option: True}))
    assert len(result.history) == 1 and torch.isfinite(torch.tensor(result.metrics["loss_total"]))
    assert json.loads((tmp_path / "config.json").read_text())["train"][option] is True
    assert torch.load(result.last, weights_only=True)["config"]["train"][option] is True


def test_cpu_amp_is_bfloat16_without_a_scaler() -> None:
    with autocast_factory(torch.device("cpu"), True)():
        y = nn.Linear(4, 4)(torch.randn(2, 4))
    assert y.dtype == torch.bfloat16
    assert torch.amp.GradScaler("cuda", enabled=False).scale(torch.tensor(2.0)) == 2.0  # the CPU path: identity


@pytest.mark.slow
def test_compile_trains_one_step(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The --compile path of the loop (graph capture of the real SAOL model and its dataclass output)."""
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="aot_eager"))
    result = train(one_step(tmp_path / "run", "saol", compile=True, channels_last=True))
    assert len(result.history) == 1
    # the checkpoint holds the plain module's keys, not torch.compile's "_orig_mod." ones
    assert not any(k.startswith("_orig_mod") for k in torch.load(result.last, weights_only=True)["model"])
    # and `eval --channels-last --amp` runs on it
    report, _, _ = run_eval(EvalSettings(ckpt=result.last, split="test", device="cpu", channels_last=True, amp=True),
                            tmp_path / "eval")
    assert report.metrics["num_images"] == 16


@pytest.mark.slow
def test_inductor_compiles_a_tiny_model_on_cpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))  # a fresh cache: really compile
    torch.manual_seed(0)
    tiny = nn.Sequential(nn.Linear(8, 4), nn.ReLU(), nn.Linear(4, 2))
    x = torch.randn(2, 8)
    expected = tiny(x)
    compiled = compile_model(tiny, torch.device("cpu"))
    got = compiled(x)
    got.sum().backward()  # the generated forward and backward kernels both run
    torch.testing.assert_close(got, expected)
    assert tiny[0].weight.grad is not None


@pytest.mark.slow
def test_compile_failure_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(gm: torch.fx.GraphModule, example_inputs: list[torch.Tensor]) -> Any:
        raise RuntimeError("simulated compiler crash")

    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend=broken))
    torch._dynamo.reset()
    result = CliRunner().invoke(app, ["train", "--method", "cam", "--device", "cpu", "--epochs", "1",
                                      "--batch-size", "16", "--img-size", "32", "--compile", "--out", str(tmp_path)])
    torch._dynamo.reset()
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert any(ln.startswith("error: --compile failed at epoch 1, step 1") for ln in lines), result.output
    assert "Traceback" not in result.output


def test_compile_without_a_cpp_compiler_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("saolctl.engine.device.shutil.which", lambda name: None)
    with pytest.raises(UserError, match="needs a C\\+\\+ compiler"):
        compile_model(nn.Linear(2, 2), torch.device("cpu"))


@pytest.mark.slow
def test_cli_flags_reach_the_run_config(tmp_path: Path) -> None:
    cfg = tmp_path / "tiny.toml"
    cfg.write_text("[digits]\nimage_size = 32\ntrain_size = 16\nval_size = 16\ntest_size = 16\n")
    result = CliRunner().invoke(app, ["train", "--config", str(cfg), "--method", "cam", "--device", "cpu",
                                      "--epochs", "1", "--batch-size", "16", "--img-size", "32", "--amp",
                                      "--channels-last", "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "run" / "config.json").read_text())["train"]
    assert saved["amp"] and saved["channels_last"] and not saved["compile"]


def test_training_precision_defaults_to_bfloat16_only_on_a_cpu_with_amx() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_amp(None, cpu, has_amx=lambda: True) is True
    assert resolve_amp(None, cpu, has_amx=lambda: False) is False
    assert resolve_amp(None, cuda, has_amx=lambda: True) is False  # float16 on CUDA stays opt-in
    assert resolve_amp(False, cpu, has_amx=lambda: True) is False  # --no-amp wins
    assert resolve_amp(True, cpu, has_amx=lambda: False) is True
    assert precision_name(cpu, True) == "bfloat16 autocast" and precision_name(cuda, True) == "float16 autocast"
    assert precision_name(cuda, False) == "float32"


def test_a_run_records_the_precision_it_trained_in(tmp_path: Path) -> None:
    result = train(one_step(tmp_path / "r", method="cam", amp=False))
    saved = json.loads((result.out / "config.json").read_text())
    assert saved["precision"] == "float32" and saved["train"]["amp"] is False


def test_no_amp_flag_reaches_the_run(tmp_path: Path) -> None:
    cfg = tmp_path / "tiny.toml"
    cfg.write_text("[digits]\nimage_size = 32\ntrain_size = 16\nval_size = 16\ntest_size = 16\n")
    result = CliRunner().invoke(app, ["train", "--config", str(cfg), "--method", "cam", "--device", "cpu",
                                      "--epochs", "1", "--batch-size", "16", "--img-size", "32", "--no-amp",
                                      "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["train"]["amp"] is False and saved["precision"] == "float32"


@pytest.mark.parametrize("asked,validates_in_autocast", [(None, False), (True, True)])
def test_validation_runs_in_float32_unless_amp_is_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         asked: bool | None, validates_in_autocast: bool) -> None:
    import saolctl.engine.train as train_module

    monkeypatch.setattr(train_module, "resolve_amp", lambda amp, device: True if amp is None else amp)  # AMX
    seen: list[bool] = []
    real_validate = train_module.validate

    def spy(*args: Any, autocast: Any, **kwargs: Any) -> Any:
        with autocast():
            seen.append(torch.is_autocast_enabled("cpu"))
        return real_validate(*args, autocast=autocast, **kwargs)

    monkeypatch.setattr(train_module, "validate", spy)
    result = train(one_step(tmp_path, "cam", amp=asked))
    assert json.loads((result.out / "config.json").read_text())["precision"] == "bfloat16 autocast"
    assert seen == [validates_in_autocast]
