"""Exit codes and one-line errors: bad input (2) apart from bugs (1) and out of memory / disk full (3)."""

from __future__ import annotations

import ast
import errno
from pathlib import Path

import pytest
import torch
import typer
from typer.testing import CliRunner

from saolctl.cli.app import app
from saolctl.cli.errors import user_errors
from saolctl.data.errors import DataError
from saolctl.engine.checkpoint import CheckpointError
from saolctl.engine.train import NonFiniteLoss
from saolctl.errors import UserError
from saolctl.models import PretrainedUnavailable

PACKAGE = Path(__file__).resolve().parents[1] / "saolctl"
OOM = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)  # torch.OutOfMemoryError: torch >= 2.5


def run_raising(exc: BaseException, capsys: pytest.CaptureFixture[str], debug: bool = False) -> tuple[int, list[str]]:
    """Raise ``exc`` inside ``user_errors`` and return (exit code, the non-empty lines on stderr)."""
    with pytest.raises(typer.Exit) as info:
        with user_errors(debug):
            raise exc
    captured = capsys.readouterr()
    assert captured.out == ""
    return info.value.exit_code, [line for line in captured.err.splitlines() if line.strip()]


@pytest.mark.parametrize("exc", [RuntimeError("boom\nsecond line"), KeyError("num_classes"), TypeError("bad arg"),
                                 AttributeError("'NoneType' object has no attribute 'x'"), OSError(errno.EIO, "I/O")])
def test_an_unexpected_exception_is_an_internal_error_exit_1(exc: BaseException,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    code, lines = run_raising(exc, capsys)
    assert code == 1
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"internal error: {type(exc).__name__}: "), lines[0]
    assert "bug in saolctl" in lines[0] and "--debug" in lines[0]
    assert "second line" not in lines[0]


def test_a_user_error_is_one_line_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, lines = run_raising(UserError("--epochs must be at least 1, got 0"), capsys)
    assert code == 2 and lines == ["error: --epochs must be at least 1, got 0"]


@pytest.mark.parametrize("cls", [DataError, CheckpointError, PretrainedUnavailable, NonFiniteLoss])
def test_the_package_errors_are_user_errors(cls: type[Exception], capsys: pytest.CaptureFixture[str]) -> None:
    assert issubclass(cls, UserError) and issubclass(cls, ValueError)  # library callers catching ValueError
    code, lines = run_raising(cls("something the user can fix"), capsys)
    assert code == 2 and lines == ["error: something the user can fix"]


@pytest.mark.parametrize("exc", [
    OOM("CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 79.1 GiB"),
    RuntimeError("CUDA out of memory. Tried to allocate 20.00 MiB (GPU 0; 7.79 GiB total capacity)"),  # older torch
])
def test_accelerator_out_of_memory_exits_3_with_advice(exc: BaseException, capsys: pytest.CaptureFixture[str]) -> None:
    code, lines = run_raising(exc, capsys)
    assert code == 3 and len(lines) == 1, lines
    assert lines[0].startswith("error: out of memory on GPU 0"), lines[0]
    assert "--batch-size" in lines[0] and "--amp" in lines[0]


def test_host_out_of_memory_exits_3(capsys: pytest.CaptureFixture[str]) -> None:
    code, lines = run_raising(MemoryError(), capsys)
    assert code == 3 and len(lines) == 1 and "out of memory on the CPU" in lines[0] and "--batch-size" in lines[0]


def test_out_of_memory_behind_another_exception_exits_3(capsys: pytest.CaptureFixture[str]) -> None:
    try:
        raise OOM("CUDA out of memory. Tried to allocate 1 GiB")
    except OOM as oom:
        wrapped = RuntimeError("DataLoader worker failed")
        wrapped.__cause__ = oom
    code, lines = run_raising(wrapped, capsys)
    assert code == 3 and "out of memory" in lines[0]


def test_a_full_disk_exits_3(capsys: pytest.CaptureFixture[str]) -> None:
    code, lines = run_raising(OSError(errno.ENOSPC, "No space left on device", "runs/x/last.pt"), capsys)
    assert code == 3 and len(lines) == 1
    assert lines[0].startswith("error: no space left on device writing runs/x/last.pt"), lines[0]


@pytest.mark.parametrize("exc", [RuntimeError("boom"), UserError("bad"), KeyError("k"),
                                 OOM("CUDA out of memory"), OSError(errno.ENOSPC, "full")])
def test_debug_re_raises_the_original_exception(exc: BaseException) -> None:
    with pytest.raises(type(exc)) as info:
        with user_errors(True):
            raise exc
    assert info.value is exc


def test_interrupt_exits_130_and_typer_exit_passes_through(capsys: pytest.CaptureFixture[str]) -> None:
    code, lines = run_raising(KeyboardInterrupt(), capsys)
    assert code == 130 and lines == ["interrupted"]
    with pytest.raises(typer.Exit) as info:
        with user_errors(False):
            raise typer.Exit(0)
    assert info.value.exit_code == 0


def test_a_bug_in_a_command_exits_1_not_2(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise KeyError("meta")

    monkeypatch.setattr("saolctl.cli.eval.run_eval", broken)
    r = CliRunner().invoke(app, ["eval", "--ckpt", str(tmp_path / "best.pt"), "--out", str(tmp_path / "o")],
                           env={"COLUMNS": "200"})
    assert r.exit_code == 1, r.output
    lines = [line for line in r.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("internal error: KeyError: 'meta'"), r.output
    assert "Traceback" not in r.output


def test_bad_input_is_raised_as_user_error_not_as_a_builtin_type() -> None:
    """No ``raise FileNotFoundError/PermissionError/RuntimeError/KeyError(...)`` is left in the package: what the
    user can fix is a UserError (exit 2), and these types from anywhere else are bugs (exit 1)."""
    builtin = {"FileNotFoundError", "PermissionError", "NotADirectoryError", "IsADirectoryError", "RuntimeError",
               "KeyError", "OSError"}
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call) and isinstance(node.exc.func, ast.Name):
                if node.exc.func.id in builtin:
                    found.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.exc.func.id}")
    assert found == []


def test_an_error_from_a_dataloader_worker_shows_the_original_message(capsys: pytest.CaptureFixture[str]) -> None:
    # what torch re-raises in the main process: the worker's traceback inside the message
    exc = DataError("Caught DataError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n"
                    '  File "x.py", line 1, in <module>\n'
                    "saolctl.data.errors.DataError: cannot read image /d/img[1].png: broken data stream")
    code, lines = run_raising(exc, capsys)
    assert code == 2 and lines == ["error: cannot read image /d/img[1].png: broken data stream"]


def test_digits_into_a_path_inside_a_file_is_bad_input(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    r = CliRunner().invoke(app, ["digits", "--out", str(tmp_path / "afile" / "x"), "--train-size", "2",
                                 "--val-size", "2", "--test-size", "2"], env={"COLUMNS": "200"})
    assert r.exit_code == 2, r.output
    lines = [line for line in r.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: output path") and "inside a file" in lines[0], r.output
