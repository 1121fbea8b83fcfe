"""The console script's global options and the backbone listing."""

from __future__ import annotations

from typer.testing import CliRunner

from saolctl import __version__
from saolctl.cli.app import app
from saolctl.models import list_backbones

runner = CliRunner()


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.strip() == f"saolctl {__version__}"


def test_backbones_lists_every_registered_backbone() -> None:
    result = runner.invoke(app, ["backbones"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for name in list_backbones():
        assert name in result.stdout


def test_digits_writes_a_dataset_that_loads_back(tmp_path) -> None:
    from saolctl.data import open_dataset

    out = tmp_path / "digits"
    result = runner.invoke(app, ["digits", "--out", str(out), "--train-size", "20", "--val-size", "10",
                                 "--test-size", "10"])
    assert result.exit_code == 0, result.output
    ds = open_dataset(out, "test", train=False, img_size=64)
    assert len(ds) == 10 and ds.has_boxes and ds.has_masks
    assert len(list((out / "images" / "train").iterdir())) == 20
    bad = runner.invoke(app, ["digits", "--out", str(out), "--train-size", "0"])
    assert bad.exit_code == 2 and "error:" in bad.output
