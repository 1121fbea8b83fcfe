"""The bad-input corpus (see tests/BAD_INPUTS.md): every case is one CLI call that must fail with exit code 2,
exactly one ``error:`` line matching a pattern, no traceback, and nothing written to its output folder.
Images of other modes (grayscale, CMYK, RGBA, 16-bit) must load and train; broken ones are skipped and counted,
or fail in one line with --strict-images. The corpus is generated here with PIL, nothing binary is committed."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from saolctl.cli.app import app
from saolctl.data import DigitsConfig
from saolctl.engine.checkpoint import load_checkpoint, stale_temps
from saolctl.engine.train import TrainConfig, train

runner = CliRunner()
CLASSES = ("ant", "bee", "cat")
MODES = ("rgb", "gray", "cmyk", "rgba", "gray16")
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def _image(path: Path, mode: str, k: int) -> None:
    """Write a 40 x 30 image of a mode PIL can store, with a bright square so classes differ a little."""
    rgb = np.full((30, 40, 3), 30 + 40 * k, np.uint8)
    rgb[5:20, 8 + 4 * k:24 + 4 * k] = (220, 200 - 50 * k, 40)
    img = Image.fromarray(rgb)
    if mode == "gray":
        img.convert("L").save(path.with_suffix(".png"))
    elif mode == "cmyk":
        img.convert("CMYK").save(path.with_suffix(".jpg"))
    elif mode == "rgba":
        img.convert("RGBA").save(path.with_suffix(".png"))
    elif mode == "gray16":
        Image.fromarray(np.asarray(img.convert("L")).astype(np.uint16) * 257).save(path.with_suffix(".png"))
    else:
        img.save(path.with_suffix(".png"))


def _folder(root: Path) -> Path:
    """An ImageFolder dataset: train/val/test, three classes, one image per mode in each."""
    for split in ("train", "val", "test"):
        for k, cls in enumerate(CLASSES):
            d = root / split / cls
            d.mkdir(parents=True)
            for mode in MODES:
                _image(d / f"{split}_{cls}_{mode}", mode, k)
    return root


def invoke(*args: str):
    return runner.invoke(app, list(args), env={"COLUMNS": "250"})


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("corpus")
    c: dict[str, Path] = {"root": root, "missing": root / "does-not-exist"}
    # a 10-class digits checkpoint and a 3-class folder checkpoint, both tiny CAM ResNet-20s
    digits = DigitsConfig(image_size=32, train_size=20, val_size=10, test_size=10)
    c["ckpt"] = train(TrainConfig(method="cam", out=root / "digits-run", epochs=1, batch_size=10, img_size=32,
                                  digits=digits, device="cpu", threshold_step=0.1)).best
    c["images"] = _folder(root / "images")
    c["ckpt3"] = train(TrainConfig(method="cam", data=str(c["images"]), out=root / "folder-run", epochs=1,
                                   batch_size=5, img_size=32, backbone="cifar_resnet20", pretrained=False,
                                   device="cpu", threshold_step=0.1)).best
    raw = c["ckpt"].read_bytes()
    (root / "empty.pt").write_bytes(b"")
    (root / "half.pt").write_bytes(raw[: len(raw) // 2])
    c["empty_ckpt"], c["half_ckpt"] = root / "empty.pt", root / "half.pt"
    ckpt = load_checkpoint(c["ckpt"])
    for name, key, value in (("classes3", "num_classes", 3), ("resnet32", "backbone", "cifar_resnet32")):
        bad = {**ckpt, "config": {**ckpt["config"], "model": {**ckpt["config"]["model"], key: value}}}
        torch.save(bad, root / f"{name}.pt")
        c[f"ckpt_{name}"] = root / f"{name}.pt"
    unreadable = root / "unreadable.pt"
    shutil.copy(c["ckpt"], unreadable)
    unreadable.chmod(0)
    c["unreadable_ckpt"] = unreadable
    # broken images: the same folder plus a corrupt and an empty file in every split
    c["broken"] = root / "broken"
    shutil.copytree(c["images"], c["broken"])
    for split in ("train", "val", "test"):
        (c["broken"] / split / "ant" / "zz_corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg" * 3)
        (c["broken"] / split / "bee" / "zz_empty.png").write_bytes(b"")
    (root / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (root / "empty.png").write_bytes(b"")
    # malformed VOC XML for one val image
    c["bad_xml"] = root / "bad-boxes"
    c["bad_xml"].mkdir()
    (c["bad_xml"] / "val_ant_rgb.xml").write_text("<annotation><object><bndbox><xmin>1</xmin>")
    # config files and a regular file to put an output folder in
    for name, text in (("tiny.toml", "batch_size = 10\nimg_size = 32\n[digits]\nimage_size = 32\ntrain_size = 20\n"
                                     "val_size = 10\ntest_size = 10\n"),
                       ("bad_type.toml", 'epochs = "three"\n'),
                       ("bad_digits.toml", "[digits]\ntrain_sise = 10\n"),
                       ("unknown_key.toml", "epochz = 3\n"),
                       ("not_toml.toml", "epochs = = 3\n")):
        (root / name).write_text(text)
        c[name.split(".")[0]] = root / name
    (root / "a-file").write_text("not a folder")
    c["afile"] = root / "a-file"
    c["readonly"] = root / "readonly"
    c["readonly"].mkdir()
    c["readonly"].chmod(0o555)
    return c


# (id, argv with {placeholders}; {out} is a fresh folder that must not be created, regex of the error line)
CASES = [
    # missing paths
    ("train-missing-data", "train --data {missing} --out {out}", r"^error: data path not found: .*does-not-exist$"),
    ("eval-missing-ckpt", "eval --ckpt {missing}/best.pt --out {out}", r"checkpoint not found: .*does-not-exist/best\.pt"),
    ("localize-missing-ckpt", "localize --ckpt {missing}/best.pt --out {out}", r"checkpoint not found"),
    ("compare-missing-ckpt", "compare --methods cam --ckpt cam={missing}/best.pt --out {out}", r"checkpoint not found"),
    ("eval-missing-data", "eval --ckpt {ckpt} --data {missing} --out {out}", r"data path not found: .*does-not-exist"),
    ("train-missing-config", "train --config {missing}.toml --out {out}", r"config file not found"),
    ("train-missing-init", "train --config {tiny} --init {missing}.pt --out {out}", r"--init file not found"),
    ("localize-missing-image", "localize {missing}.png --ckpt {ckpt} --threshold 0.5 --out {out}", r"image not found: .*does-not-exist\.png"),
    ("train-resume-without-last", "train --config {tiny} --resume --out {out}", r"checkpoint not found: .*last\.pt"),
    ("eval-ckpt-is-a-folder", "eval --ckpt {root} --out {out}", r"checkpoint path is a folder"),
    # unreadable paths (chmod does not stop root)
    ("eval-unreadable-ckpt", "eval --ckpt {unreadable_ckpt} --out {out}", r"cannot read checkpoint .*: permission denied"),
    ("train-unwritable-out", "train --config {tiny} --out {readonly}/run", r"output folder is not writable: .*readonly"),
    # empty and truncated checkpoints
    ("eval-empty-ckpt", "eval --ckpt {empty_ckpt} --out {out}", r"checkpoint is empty \(0 bytes\)"),
    ("localize-empty-ckpt", "localize --ckpt {empty_ckpt} --out {out}", r"checkpoint is empty \(0 bytes\)"),
    ("compare-empty-ckpt", "compare --methods cam --ckpt cam={empty_ckpt} --out {out}", r"checkpoint is empty"),
    ("eval-truncated-ckpt", "eval --ckpt {half_ckpt} --out {out}", r"half\.pt is truncated or not a torch file"),
    ("localize-truncated-ckpt", "localize --ckpt {half_ckpt} --out {out}", r"truncated or not a torch file"),
    ("compare-truncated-ckpt", "compare --methods cam --ckpt cam={half_ckpt} --out {out}", r"truncated or not a torch file"),
    # checkpoints of another method / backbone / number of classes
    ("eval-10-classes-on-3-class-data", "eval --ckpt {ckpt} --data {images} --out {out}",
     r"the checkpoint has 10 classes but .*images \(test\) has 3$"),
    ("eval-3-classes-on-digits", "eval --ckpt {ckpt3} --data digits --out {out}", r"has 3 classes but digits \(test\) has 10"),
    ("compare-ckpt-of-another-method", "compare --methods saol --ckpt saol={ckpt} --out {out}", r"--ckpt saol=.* holds a cam model"),
    ("compare-10-classes-on-3-class-data", "compare --methods cam --ckpt cam={ckpt} --data {images} --out {out}",
     r"the checkpoint has 10 classes but .* has 3"),
    ("eval-weights-of-another-class-count", "eval --ckpt {ckpt_classes3} --out {out}",
     r"weights do not fit the cam/cifar_resnet20 model with 3 classes"),
    ("eval-weights-of-another-backbone", "eval --ckpt {ckpt_resnet32} --out {out}", r"weights do not fit a cam/cifar_resnet32 model"),
    # unknown names: the message lists the valid ones
    ("train-unknown-backbone", "train --backbone resnet9000 --out {out}", r"unknown backbone 'resnet9000'; valid: resnet18, .*cifar_resnet20"),
    ("train-unknown-method", "train --method gradcam --out {out}", r"unknown method 'gradcam'; valid: cam, cutmix, has, acol, spg, adl, abn, saol$"),
    ("compare-unknown-method", "compare --methods cam,gradcam --out {out}", r"unknown method\(s\) gradcam; valid: cam, cutmix, has, acol, spg, adl, abn, saol"),
    ("compare-unknown-backbone", "compare --backbone resnet9000 --out {out}", r"unknown backbone 'resnet9000'; valid: "),
    ("eval-unknown-map", "eval --ckpt {ckpt} --map contrib --out {out}", r"map kind 'contrib' does not exist for cam; valid: cam"),
    ("train-unknown-device", "train --device tpu --out {out}", r"--device must be auto, cpu or cuda, got 'tpu'"),
    # bad option values
    ("train-negative-epochs", "train --epochs -1 --out {out}", r"--epochs must be at least 1, got -1$"),
    ("train-batch-size-0", "train --batch-size 0 --out {out}", r"--batch-size must be at least 1, got 0$"),
    ("train-lr-0", "train --lr 0 --out {out}", r"--lr must be positive, got 0\.0$"),
    ("train-negative-workers", "train --workers -1 --out {out}", r"--workers must be at least 0, got -1$"),
    ("eval-batch-size-0", "eval --ckpt {ckpt} --batch-size 0 --out {out}", r"--batch-size must be at least 1, got 0$"),
    ("eval-thresholds-step-0", "eval --ckpt {ckpt} --thresholds-step 0 --out {out}", r"--thresholds-step must be in \(0, 1\), got 0\.0$"),
    ("eval-thresholds-step-1", "eval --ckpt {ckpt} --thresholds-step 1 --out {out}", r"--thresholds-step must be in \(0, 1\), got 1\.0$"),
    ("localize-threshold-1", "localize --ckpt {ckpt} --threshold 1 --out {out}", r"--threshold must be in \[0, 1\), got 1\.0$"),
    ("localize-threshold-negative", "localize --ckpt {ckpt} --threshold -0.2 --out {out}", r"--threshold must be in \[0, 1\), got -0\.2$"),
    ("localize-num-0", "localize --ckpt {ckpt} --num 0 --out {out}", r"--num must be at least 1, got 0$"),
    ("compare-thresholds-step-1.5", "compare --methods cam --ckpt cam={ckpt} --thresholds-step 1.5 --out {out}",
     r"--thresholds-step must be in \(0, 1\), got 1\.5$"),
    ("compare-epochs-0", "compare --epochs 0 --out {out}", r"--epochs must be at least 1, got 0$"),
    ("eval-unknown-target", "eval --ckpt {ckpt} --target best --out {out}", r"--target must be gt or pred, got 'best'$"),
    ("train-unknown-O-option", "train -O bogus=1 --out {out}", r"unknown model option 'bogus'; valid: .*cutmix_prob, .*last_stride"),
    ("train-O-without-value", "train -O att_entropy --out {out}", r"--option expects KEY=VALUE, got 'att_entropy'$"),
    ("train-O-bad-number", "train -O att_entropy=abc --out {out}", r"model option att_entropy must be a finite number, got 'abc'$"),
    ("train-O-bad-bool", "train -O small_stem=3 --out {out}", r"model option small_stem must be true or false, got 3$"),
    ("train-O-bad-list", "train -O saol_taps=-1 --out {out}", r"model option saol_taps must be a list of integers, got -1$"),
    ("compare-O-bad-number", "compare -O cutmix_prob=high --out {out}", r"model option cutmix_prob must be a finite number"),
    ("train-config-bad-type", "train --config {bad_type} --out {out}", r"--epochs must be an integer, got 'three'$"),
    ("train-config-unknown-digits-key", "train --config {bad_digits} --out {out}", r"unknown digits key\(s\) train_sise; valid: image_size, train_size"),
    ("train-config-unknown-key", "train --config {unknown_key} --out {out}", r"unknown key\(s\) in .*unknown_key\.toml: epochz; valid: .*amp, backbone"),
    ("train-config-not-toml", "train --config {not_toml} --out {out}", r"config file .*not_toml\.toml is not valid TOML"),
    # images and boxes
    ("eval-strict-corrupt-or-empty-image", "eval --ckpt {ckpt3} --data {broken} --strict-images --out {out}",
     r"cannot read image .*broken/test/(ant/zz_corrupt\.jpg|bee/zz_empty\.png): "),
    ("localize-corrupt-image", "localize {root}/corrupt.png --ckpt {ckpt} --threshold 0.5 --out {out}",
     r"cannot read image .*corrupt\.png: (OSError: |SyntaxError: |not an image file)"),  # a PNG signature, then junk
    ("localize-empty-image", "localize {root}/empty.png --ckpt {ckpt} --threshold 0.5 --out {out}",
     r"cannot read image .*empty\.png: EOFError: empty file \(0 bytes\)$"),
    ("eval-malformed-voc-xml", "eval --ckpt {ckpt3} --data {images} --split val --boxes {bad_xml} --out {out}",
     r"malformed VOC XML .*val_ant_rgb\.xml"),
    ("train-malformed-voc-xml", "train --data {images} --boxes {bad_xml} --backbone cifar_resnet20 --no-pretrained --out {out}",
     r"malformed VOC XML .*val_ant_rgb\.xml"),
    # an output folder that cannot be made (inside a regular file: fails even for root)
    ("train-out-inside-a-file", "train --config {tiny} --out {afile}/run", r"output path .*a-file/run is inside a file"),
    ("eval-out-inside-a-file", "eval --ckpt {ckpt} --out {afile}/run", r"output path .*a-file/run is inside a file"),
    ("localize-out-inside-a-file", "localize --ckpt {ckpt} --threshold 0.5 --out {afile}/run", r"inside a file"),
    ("compare-out-inside-a-file", "compare --methods cam --ckpt cam={ckpt} --out {afile}/run", r"inside a file"),
]
NEEDS_NON_ROOT = {"eval-unreadable-ckpt", "train-unwritable-out"}


def _argv(template: str, corpus: dict[str, Path], out: Path) -> list[str]:
    names = {k: str(v) for k, v in corpus.items()} | {"out": str(out)}
    return [part.format(**names) for part in template.split()]


def _snapshot(root: Path) -> dict[str, int]:
    """Every file under root with its size (to show nothing was added, changed in size or half-written)."""
    return {str(p.relative_to(root)): p.stat().st_size for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("case_id,template,pattern", CASES, ids=[c[0] for c in CASES])
def test_bad_input_fails_in_one_line(case_id: str, template: str, pattern: str, corpus: dict[str, Path],
                                     tmp_path: Path) -> None:
    if case_id in NEEDS_NON_ROOT and IS_ROOT:
        pytest.skip("runs as root: file permissions do not stop root from reading or writing")
    out = tmp_path / "out"
    before = _snapshot(corpus["root"])
    r = invoke(*_argv(template, corpus, out))
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output and r.exception is None or isinstance(r.exception, SystemExit)
    errors = [line for line in r.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, r.output
    assert errors[0] == r.output.strip().splitlines()[-1]  # the error is the last thing printed
    assert re.search(pattern, errors[0]), errors[0]
    assert not out.exists(), sorted(p.name for p in out.iterdir())  # validation before anything is written
    assert _snapshot(corpus["root"]) == before  # no temp files, nothing half-written next to the inputs


def test_a_bad_value_type_on_the_command_line_is_a_usage_error() -> None:
    r = invoke("train", "--epochs", "three")
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert "Invalid value for '--epochs'" in r.output


@pytest.mark.parametrize("extra,pattern", [
    (["--method", "saol"], r"cannot resume: .*last\.pt holds a cam/cifar_resnet20 model with 10 classes, but this "
                           r"run builds saol/cifar_resnet20 with 10$"),
    (["--method", "cam", "--data", "IMAGES", "--backbone", "cifar_resnet20", "--no-pretrained"], r"holds a cam/cifar_resnet20 model with 10 "
                                                                              r"classes, but this run builds cam/cifar_resnet20 with 3$"),
], ids=["another-method", "another-number-of-classes"])
def test_resume_of_another_model_fails_and_leaves_the_run_untouched(extra: list[str], pattern: str,
                                                                    corpus: dict[str, Path], tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(corpus["ckpt"].parent, run)
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    extra = [str(corpus["images"]) if e == "IMAGES" else e for e in extra]
    r = invoke("train", "--config", str(corpus["tiny"]), "--resume", "--out", str(run), *extra)
    assert r.exit_code == 2 and "Traceback" not in r.output, r.output
    errors = [line for line in r.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and re.search(pattern, errors[0]), r.output
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before  # config.json not rewritten


def test_resume_from_a_truncated_last_pt_fails_and_leaves_the_run_untouched(corpus: dict[str, Path],
                                                                             tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(corpus["ckpt"].parent, run)
    (run / "last.pt").write_bytes(corpus["half_ckpt"].read_bytes())
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    r = invoke("train", "--config", str(corpus["tiny"]), "--resume", "--out", str(run))
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert r.output.strip().splitlines()[-1].startswith("error: checkpoint ") and "truncated" in r.output
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before


def test_grayscale_cmyk_rgba_and_16_bit_images_train_and_evaluate(corpus: dict[str, Path], tmp_path: Path) -> None:
    r = invoke("train", "--data", str(corpus["images"]), "--backbone", "cifar_resnet20", "--no-pretrained",
               "--img-size", "32", "--epochs", "1", "--batch-size", "5", "--device", "cpu", "--out", str(tmp_path / "run"))
    assert r.exit_code == 0, r.output
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    assert cfg["class_names"] == list(CLASSES)
    r = invoke("eval", "--ckpt", str(tmp_path / "run" / "best.pt"), "--thresholds-step", "0.1", "--device", "cpu",
               "--out", str(tmp_path / "eval"))
    assert r.exit_code == 0, r.output
    metrics = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert metrics["num_images"] == len(CLASSES) * len(MODES) and metrics["num_skipped_unreadable"] == 0
    for mode in ("cmyk", "gray16", "rgba"):  # a single file of each mode localizes too, at its own size
        path = next((corpus["images"] / "test" / "bee").glob(f"test_bee_{mode}.*"))
        r = invoke("localize", str(path), "--ckpt", str(tmp_path / "run" / "best.pt"), "--threshold", "0.5",
                   "--device", "cpu", "--out", str(tmp_path / f"loc-{mode}"))
        assert r.exit_code == 0, r.output
        row = json.loads((tmp_path / f"loc-{mode}" / "predictions.json").read_text())[0]
        assert 0 <= row["x0"] <= row["x1"] <= 39 and 0 <= row["y0"] <= row["y1"] <= 29


def test_corrupt_and_empty_images_are_skipped_and_counted(corpus: dict[str, Path], tmp_path: Path) -> None:
    r = invoke("train", "--data", str(corpus["broken"]), "--backbone", "cifar_resnet20", "--no-pretrained",
               "--img-size", "32", "--epochs", "1", "--batch-size", "4", "--device", "cpu", "--out", str(tmp_path / "run"))
    assert r.exit_code == 0, r.output
    r = invoke("eval", "--ckpt", str(corpus["ckpt3"]), "--data", str(corpus["broken"]), "--thresholds-step", "0.1",
               "--device", "cpu", "--out", str(tmp_path / "eval"))
    assert r.exit_code == 0, r.output
    metrics = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert metrics["num_images"] == len(CLASSES) * len(MODES) and metrics["num_skipped_unreadable"] == 2


def test_strict_images_stop_training_in_one_line(corpus: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "run"
    r = invoke("train", "--data", str(corpus["broken"]), "--backbone", "cifar_resnet20", "--no-pretrained",
               "--img-size", "32", "--epochs", "1", "--batch-size", "4", "--device", "cpu", "--strict-images",
               "--out", str(out))
    assert r.exit_code == 2 and "Traceback" not in r.output, r.output
    last = r.output.strip().splitlines()[-1]
    assert re.search(r"^error: cannot read image .*broken/train/(ant/zz_corrupt\.jpg|bee/zz_empty\.png): ", last), last
    # the run stopped in its first epoch: no checkpoint, no metrics, no temp file (config.json is complete)
    assert sorted(p.name for p in out.iterdir()) == ["config.json"] and stale_temps(out) == []
    json.loads((out / "config.json").read_text())
