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
