"""One-line errors for the CLI: expected failures print a single line and exit non-zero."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Iterator

import typer
from rich.console import Console

# Exceptions a user can cause with bad input: shown as one line, exit code 2.
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError, PermissionError, OSError, RuntimeError, KeyError)


@contextmanager
def user_errors(debug: bool) -> Iterator[None]:
    """Turn expected exceptions into one red line and exit code 2 (full traceback with --debug)."""
    try:
        yield
    except typer.Exit:
        raise
    except KeyboardInterrupt:
        Console(stderr=True).print("[yellow]interrupted[/yellow]")
        raise typer.Exit(130)
    except USER_ERRORS as exc:
        if debug:
            raise
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        Console(stderr=True, soft_wrap=True).print(f"[bold red]error:[/bold red] {msg}", highlight=False)
        raise typer.Exit(2)


def is_debug(ctx: typer.Context) -> bool:
    """Return whether --debug was given to the top-level command."""
    root = ctx.find_root()
    return bool(root.obj and root.obj.get("debug"))


def eprint(msg: str) -> None:
    """Print a message to stderr."""
    print(msg, file=sys.stderr)
