"""The command line's frame: the Typer app, the `command` decorator that turns a UserError (or
a full disk) into one line on stderr and exit 2, warnings on one line, shared option parsers.
"""

from __future__ import annotations

import functools
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from metabn_bench import fsio
from metabn_bench.errors import UserError

F = TypeVar("F", bound=Callable[..., Any])

app = typer.Typer(
    name="metabn-bench", no_args_is_help=True, add_completion=False,
    pretty_exceptions_enable=False,
    help="Robustness of image classifiers to common corruptions, built around Meta BatchNorm.",
)

def command(name: str | None = None, target: typer.Typer | None = None) -> Callable[[F], F]:
    """app.command (or target.command) that turns a UserError into one line on stderr, exit 2."""

    def deco(fn: F) -> F:
        @functools.wraps(fn)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except UserError as exc:
                typer.echo(f"error: {_one_line(str(exc))}", err=True)
                raise typer.Exit(2) from None
            except OSError as exc:  # a full disk anywhere (not only in fsio) is one line too
                full = fsio.disk_full(exc, exc.filename or "the output")
                if full is None:
                    raise
                typer.echo(f"error: {full}", err=True)
                raise typer.Exit(2) from None
            except KeyboardInterrupt:  # Typer would exit 130 without a word
                typer.echo("interrupted; run the same command again to resume", err=True)
                raise typer.Exit(130) from None

        (target or app).command(name)(guarded)
        return fn

    return deco


def _one_line(text: str) -> str:
    """A message on one line (a library's multi-line text folded)."""
    return " ".join(part.strip() for part in text.splitlines() if part.strip())


def _format_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                    line: str | None = None) -> str:
    """Warnings as one line `warning: ...` (not Python's two lines with a source path)."""
    return f"warning: {_one_line(str(message))}\n"


warnings.formatwarning = _format_warning  # type: ignore[assignment]

DeviceOpt = Annotated[str, typer.Option(help="auto | cpu | cuda")]
STDERR_IS_TTY = sys.stderr.isatty()  # progress bars by default only on a terminal
ProgressOpt = Annotated[bool, typer.Option("--progress/--no-progress",
                                           help="Show progress bars (default: when stderr is a terminal).")]


def csv_list(text: str | None) -> tuple[str, ...]:
    return tuple(t.strip() for t in text.split(",") if t.strip()) if text else ()


def int_list(text: str | None, what: str) -> tuple[int, ...]:
    try:
        return tuple(int(t) for t in csv_list(text))
    except ValueError:
        raise UserError(f"{what} must be comma-separated integers, got '{text}'") from None


def check_out_dir(path: Path | None, option: str = "--out") -> None:
    """A one-line error when an output directory option names an existing file."""
    if path is not None and path.exists() and not path.is_dir():
        raise UserError(f"{option} '{path}' is a file; valid: a directory (new or existing)")
