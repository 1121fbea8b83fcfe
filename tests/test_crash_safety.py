"""Crash safety: a real training process killed with SIGKILL resumes to the same weights; a failed or killed
save keeps the previous checkpoint; a NaN loss stops the run in one line and keeps the last good checkpoint."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from saolctl.cli.app import app
from saolctl.data import DigitsConfig
from saolctl.engine import train as train_module
from saolctl.engine.checkpoint import atomic_save, load_checkpoint, stale_temps
from saolctl.engine.train import TrainConfig, train
from saolctl.models import LossTerms

REPO = Path(__file__).resolve().parents[1]
# 256 training images at 32 px: about a second per epoch with one thread, so the kill lands inside epoch 2
TOML = """\
batch_size = 16
img_size = 32

[digits]
image_size = 32
train_size = 256
val_size = 16
test_size = 16
"""


def _train_cmd(cfg: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "saolctl", "train", "--data", "digits", "--config", str(cfg), "--epochs", "3",
            "--device", "cpu", "--out", str(out), "--seed", "0", *extra]


def _env() -> dict[str, str]:
    # one thread per process: the two runs share the CPU without oversubscription, and use the same kernels
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "COLUMNS": "500"}


def _assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = load_checkpoint(a)["model"], load_checkpoint(b)["model"]
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


@pytest.mark.slow
def test_sigkill_during_epoch_2_then_resume_gives_the_same_weights(tmp_path: Path) -> None:
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(TOML)
    straight_out, killed_out = tmp_path / "straight", tmp_path / "killed"
    straight = subprocess.Popen(_train_cmd(cfg, straight_out), env=_env(), stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
    victim = subprocess.Popen(_train_cmd(cfg, killed_out), env=_env(), stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        # last.pt, best.pt, then best_top1.pt end epoch 1: all three there means epoch 1 is saved
        while not all((killed_out / n).exists() for n in ("last.pt", "best.pt", "best_top1.pt")):
            assert victim.poll() is None, victim.stderr.read().decode() if victim.stderr else "exited"
            assert time.monotonic() < deadline, "epoch 1 never finished"
            time.sleep(0.02)
        victim.send_signal(signal.SIGKILL)
        assert victim.wait(timeout=30) == -signal.SIGKILL
    finally:
        if victim.poll() is None:
            victim.kill()
    # what the kill left: a loadable last.pt of epoch 1, one metrics row, and no temporary files
    first = load_checkpoint(killed_out / "last.pt")
    assert first["epoch"] == 0, "the kill landed after epoch 2 was saved; the test wants it inside epoch 2"
    assert len(pd.read_csv(killed_out / "metrics.csv")) == 1
    assert stale_temps(killed_out) == []
    assert sorted(p.name for p in killed_out.iterdir()) == ["best.pt", "best_top1.pt", "config.json", "last.pt", "metrics.csv"]

    resumed = subprocess.run(_train_cmd(cfg, killed_out, "--resume"), env=_env(), capture_output=True, text=True,
                             timeout=120)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed from" in resumed.stdout and "at epoch 2" in resumed.stdout
    assert straight.wait(timeout=120) == 0, straight.stderr.read().decode()[-2000:] if straight.stderr else ""

    assert load_checkpoint(killed_out / "last.pt")["epoch"] == 2
    _assert_same_weights(straight_out / "last.pt", killed_out / "last.pt")
    a, b = pd.read_csv(straight_out / "metrics.csv"), pd.read_csv(killed_out / "metrics.csv")
    assert list(a["epoch"]) == list(b["epoch"]) == [1, 2, 3]
    cols = [c for c in a.columns if c.startswith(("loss_", "val_")) or c == "lr"]
    pd.testing.assert_frame_equal(a[cols], b[cols])  # the same losses and validation metrics, epoch by epoch
    assert stale_temps(killed_out) == []


def test_a_save_that_fails_midway_keeps_the_previous_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "last.pt"
    good = {"format": "saolctl", "format_version": 1, "model": {"w": torch.arange(4.0)}, "config": {}, "epoch": 0}
    atomic_save(good, path)
    before = path.read_bytes()
    real_save = torch.save

    def save_half_then_fail(obj, f, *args, **kwargs):  # a full disk: some bytes written, then an error
        real_save({"partial": torch.zeros(1000)}, f)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", save_half_then_fail)
    with pytest.raises(OSError, match="No space left"):
        atomic_save({**good, "epoch": 1, "model": {"w": torch.zeros(4)}}, path)
    monkeypatch.undo()
    assert path.read_bytes() == before  # the previous good checkpoint, byte for byte
    assert load_checkpoint(path)["epoch"] == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # no half-written temporary file


def test_a_failed_save_during_training_keeps_epoch_1(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    digits = DigitsConfig(image_size=32, train_size=32, val_size=16, test_size=16)
    cfg = TrainConfig(method="cam", out=tmp_path / "run", epochs=2, batch_size=16, img_size=32, digits=digits,
                      device="cpu", threshold_step=0.1)
    real_save, calls = torch.save, {"n": 0}

    def fail_on_epoch_2(obj, f, *args, **kwargs):
        calls["n"] += 1
        if isinstance(obj, dict) and obj.get("epoch") == 1:
            f.write(b"half a checkpoint")
            raise OSError(28, "No space left on device")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", fail_on_epoch_2)
    with pytest.raises(OSError, match="No space left"):
        train(cfg)
    monkeypatch.undo()
    out = tmp_path / "run"
    assert calls["n"] == 4  # last.pt, best.pt and best_top1.pt of epoch 1, then the failed last.pt of epoch 2
    assert load_checkpoint(out / "last.pt")["epoch"] == 0 and load_checkpoint(out / "best.pt")["epoch"] == 0
    assert stale_temps(out) == []
    assert sorted(p.name for p in out.iterdir()) == ["best.pt", "best_top1.pt", "config.json", "last.pt", "metrics.csv"]


KILL_DURING_SAVE = textwrap.dedent("""
    import os, signal, sys
    import torch
    from saolctl.engine.checkpoint import atomic_save
    path = sys.argv[1]
    atomic_save({"format": "saolctl", "model": {"w": torch.ones(3)}, "config": {}, "epoch": 0}, path)
    real_save = torch.save
    def save_then_die(obj, f, *args, **kwargs):
        real_save({"partial": torch.zeros(100)}, f)
        f.flush()
        os.kill(os.getpid(), signal.SIGKILL)  # the power goes out in the middle of the save
    torch.save = save_then_die
    atomic_save({"format": "saolctl", "model": {"w": torch.zeros(3)}, "config": {}, "epoch": 1}, path)
""")


@pytest.mark.slow
def test_a_kill_during_save_keeps_the_previous_checkpoint_and_the_next_run_cleans_up(tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    proc = subprocess.run([sys.executable, "-c", KILL_DURING_SAVE, str(out / "last.pt")], env=_env(),
                          capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    ckpt = load_checkpoint(out / "last.pt")
    assert ckpt["epoch"] == 0 and torch.equal(ckpt["model"]["w"], torch.ones(3))
    leftovers = stale_temps(out)
    assert len(leftovers) == 1 and leftovers[0].name.startswith(".last.pt.")  # hidden, never read as a checkpoint
    # the next training run in that folder removes it before doing anything else (here: fails on bad data)
    with pytest.raises(ValueError, match="data path not found"):
        train(TrainConfig(method="cam", data=str(tmp_path / "no-data"), out=out, epochs=1, device="cpu"))
    assert stale_temps(out) == [] and (out / "last.pt").exists()


def test_nan_loss_stops_in_one_line_naming_the_step_and_keeps_the_last_good_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = train_module.create_objective

    def poisoned(model_cfg):
        objective, calls = real(model_cfg), {"n": 0}

        def run(*args, **kwargs) -> LossTerms:
            calls["n"] += 1
            terms = objective(*args, **kwargs)
            if calls["n"] == 3:  # 2 steps per epoch: the first step of epoch 2
                return LossTerms(terms.total * float("nan"), terms.terms)
            return terms

        return run

    monkeypatch.setattr(train_module, "create_objective", poisoned)
    cfg = tmp_path / "tiny.toml"
    cfg.write_text("batch_size = 16\nimg_size = 32\n[digits]\nimage_size = 32\ntrain_size = 32\nval_size = 16\n"
                   "test_size = 16\n")
    out = tmp_path / "run"
    r = CliRunner().invoke(app, ["train", "--method", "cam", "--config", str(cfg), "--epochs", "3",
                                 "--device", "cpu", "--out", str(out)], env={"COLUMNS": "200"})
    assert r.exit_code == 2, r.output
    errors = [line for line in r.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in r.output
    assert errors[0] == f"error: loss became nan at epoch 2, step 1; the last good checkpoint is {out / 'last.pt'}"
    assert load_checkpoint(out / "last.pt")["epoch"] == 0  # epoch 1, untouched by the failed epoch
    assert len(pd.read_csv(out / "metrics.csv")) == 1
    assert stale_temps(out) == []
