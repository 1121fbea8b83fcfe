"""One-line errors for the CLI, and the exit codes.

- 0: success.
- 1: internal error, a bug in saolctl (any exception that is not one of those below).
- 2: bad input (a :class:`~saolctl.errors.UserError`; the parser's usage errors use 2 as well).
- 3: out of memory (accelerator or host) or no space left on the disk.
- 130: interrupted (Ctrl-C).

Every failure prints one line; ``saolctl --debug <command>`` re-raises instead, with the traceback.
"""

from __future__ import annotations

import errno
import re
import sys
from contextlib import contextmanager
from typing import Iterator

import typer
from rich.console import Console
from rich.text import Text

from saolctl.errors import UserError

EXIT_INTERNAL = 1
EXIT_USER = 2
EXIT_RESOURCES = 3
EXIT_INTERRUPTED = 130

# messages of allocation failures that older torch raised as plain RuntimeError
_OOM_PREFIXES = ("CUDA out of memory", "MPS backend out of memory", "HIP out of memory", "XPU out of memory")
_CPU_OOM = ("DefaultCPUAllocator: can't allocate memory", "DefaultCPUAllocator: not enough memory")
_DISK_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
# the parser's own exits and usage errors pass through (typer vendors click in newer releases)
_PASS_THROUGH = (typer.Exit, typer.Abort, *(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException"))


_WORKER = re.compile(r"^Caught (\w+) in DataLoader worker process \d+\.?$")


def first_line(exc: BaseException) -> str:
    """Return the first non-empty line of an exception's message, or its type's name.

    An exception re-raised by a DataLoader worker carries the worker's traceback: its own message is the
    traceback's last line (``pkg.DataError: cannot read image ...``).
    """
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    worker = _WORKER.match(lines[0])
    if worker and len(lines) > 1:
        original = re.match(rf"^(?:[\w.]+\.)?{re.escape(worker.group(1))}: (.+)$", lines[-1])
        if original:
            return original.group(1)
    return lines[0]


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """Yield the exception and the ones it was raised from or during (a few levels)."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen and len(seen) < 8:
        seen.add(id(cur))
        yield cur
        cur = cur.__cause__ or cur.__context__


def _is_oom(exc: BaseException) -> bool:
    oom_types: tuple[type[BaseException], ...] = (MemoryError,)
    torch = sys.modules.get("torch")
    for owner, name in ((torch, "OutOfMemoryError"), (getattr(torch, "cuda", None), "OutOfMemoryError")):
        t = getattr(owner, name, None)
        if isinstance(t, type) and issubclass(t, BaseException):
            oom_types += (t,)
    if isinstance(exc, oom_types):
        return True
    if isinstance(exc, OSError) and exc.errno == errno.ENOMEM:
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and (text.startswith(_OOM_PREFIXES) or any(s in text for s in _CPU_OOM))


def out_of_memory(exc: BaseException) -> BaseException | None:
    """Return the out-of-memory error in an exception's chain, or None."""
    return next((e for e in _chain(exc) if _is_oom(e)), None)


def disk_full(exc: BaseException) -> OSError | None:
    """Return the 'no space left on device' error in an exception's chain, or None."""
    return next((e for e in _chain(exc) if isinstance(e, OSError) and e.errno in _DISK_FULL), None)


def oom_device(exc: BaseException) -> str:
    """Return where memory ran out, as far as the exception says."""
    text = str(exc)
    gpu = re.search(r"GPU (\d+)", text)
    if gpu:
        return f"GPU {gpu.group(1)} (cuda:{gpu.group(1)})"
    for prefix, where in (("CUDA", "the GPU"), ("HIP", "the GPU"), ("MPS", "the MPS device"), ("XPU", "the XPU")):
        if text.startswith(prefix):
            return where
    return "the CPU (host memory)"


def oom_message(exc: BaseException) -> str:
    """Return the one-line message for an out-of-memory error, with what to do."""
    return (f"out of memory on {oom_device(exc)}: try a smaller --batch-size, or --amp "
            "(and on the CPU fewer --workers)")


def disk_full_message(exc: OSError) -> str:
    """Return the one-line message for a full disk, with what to do."""
    where = f" writing {exc.filename}" if getattr(exc, "filename", None) else ""
    return f"no space left on device{where}: free some disk space or choose another --out"


def internal_message(exc: BaseException) -> str:
    """Return the one-line message for an unexpected exception (a bug)."""
    return (f"{type(exc).__name__}: {first_line(exc)} "
            "(this is a bug in saolctl; rerun with --debug for the traceback)")


def print_error(msg: str, label: str = "error:") -> None:
    """Print ``<label> <msg>`` to stderr as one line; the message is shown exactly (no rich markup)."""
    Console(stderr=True, soft_wrap=True, highlight=False).print(Text.assemble((label, "bold red"), " ", msg))


@contextmanager
def user_errors(debug: bool) -> Iterator[None]:
    """Turn an exception into one line on stderr and an exit code (see the module doc); ``debug`` re-raises."""
    try:
        yield
    except _PASS_THROUGH:
        raise
    except KeyboardInterrupt:
        Console(stderr=True).print(Text("interrupted", style="yellow"))
        raise typer.Exit(EXIT_INTERRUPTED)
    except UserError as exc:
        if debug:
            raise
        print_error(first_line(exc))
        raise typer.Exit(EXIT_USER)
    except Exception as exc:
        if debug:
            raise
        oom, full = out_of_memory(exc), disk_full(exc)
        if oom is not None:
            print_error(oom_message(oom))
            raise typer.Exit(EXIT_RESOURCES)
        if full is not None:
            print_error(disk_full_message(full))
            raise typer.Exit(EXIT_RESOURCES)
        print_error(internal_message(exc), label="internal error:")
        raise typer.Exit(EXIT_INTERNAL)


def is_debug(ctx: typer.Context) -> bool:
    """Return whether --debug was given to the top-level command."""
    root = ctx.find_root()
    return bool(root.obj and root.obj.get("debug"))
