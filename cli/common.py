"""What every command shares: options, one-line errors with exit codes, ``--json`` output, progress.
Only typer is imported here (rich when a bar or table is shown); commands import torch & co. inside."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Collection
from typing import Annotated, Any, Literal

import typer

from ..common.progress import Reporter
from ..errors import STORAGE_ERRNOS, StorageError, TlxError, storage_advice

JsonOpt = Annotated[
    bool, typer.Option("--json", help="Print one machine-readable JSON object as the last line of stdout.")
]
QuietOpt = Annotated[
    bool, typer.Option("--quiet", "-q", help="No progress bar or chatter; errors and the result only.")
]
WorkersOpt = Annotated[
    int | None, typer.Option(min=0, help="DataLoader decoding processes [default: number of CPUs, at most 4].")
]
BatchSizeOpt = Annotated[int, typer.Option(min=1, help="Images per forward pass.")]


# Choices shared by several commands (typer lists a Literal's values in --help and checks them).
Pool = Literal["avg", "max", "avgmax"]
Device = Literal["auto", "cpu", "cuda"]
Engine = Literal["auto", "eager", "compile", "onnxruntime", "openvino"]
EngineOpt = Annotated[
    Engine,
    typer.Option(
        help="What runs the frozen forward pass: eager PyTorch, torch.compile, or ONNX Runtime / OpenVINO "
        "(pip install 'tlx[fast]'); auto picks the fastest installed one that gives the same features as eager "
        "(checked on the first batch). Compiled artefacts are cached in $TLX_ENGINE_CACHE_DIR "
        "[default: ~/.cache/tlx/engines]."
    ),
]


def fail(message: str, code: int = 2) -> None:
    """Print one clear line on stderr and exit (2 = bad input, 1 = the job itself failed)."""
    typer.echo(f"tlx: error: {message}", err=True)
    raise typer.Exit(code)


def handle_errors(fn):
    """:class:`TlxError`, and a disk error (full, read-only, denied, I/O) no writer turned into a
    :class:`StorageError`, become one line on stderr and their exit code, with no traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except TlxError as exc:
            fail(str(exc), getattr(exc, "exit_code", 2))
        except OSError as exc:
            if exc.errno not in STORAGE_ERRNOS:
                raise
            fail(f"{exc.filename or 'a file'}: {exc.strerror}; {storage_advice(exc.errno)}", StorageError.exit_code)
        except KeyboardInterrupt:
            typer.echo("tlx: interrupted", err=True)
            raise typer.Exit(130) from None

    return wrapper


def emit_json(obj) -> None:
    typer.echo(json.dumps(obj, default=str))


def report(summary: str, result: dict | list, json_out: bool, quiet: bool = False) -> None:
    """A command's outcome: the human summary on stdout, or with ``--json`` on stderr while
    stdout's last line is the JSON object."""
    if json_out:
        info(summary, quiet)
        emit_json(result)
    else:
        typer.echo(summary)


def info(message: str, quiet: bool = False) -> None:
    """Chatter goes to stderr so stdout stays clean for ``--json`` and pipes."""
    if not quiet:
        typer.echo(message, err=True)


def list_skipped(failed: list[dict], n_failed: int, quiet: bool, note: str = "") -> None:
    """The first 20 images that could not be read, on stderr, then how many more."""
    for failure in failed[:20]:
        info(f"skipped {failure['path']}: {failure['reason']}", quiet)
    if n_failed > 20:
        info(f"... and {n_failed - 20} more{note}", quiet)


class RichReporter(Reporter):
    """Progress bar with images/s and ETA on stderr; silent when quiet or not a terminal."""

    def __init__(self, quiet: bool = False):
        self.quiet = quiet
        self._progress: Any = None  # a rich Progress, imported when a bar is first shown

    def start(self, total: int, description: str) -> None:
        if self.quiet or total == 0 or not sys.stderr.isatty():
            return
        from rich import progress as bar
        from rich.console import Console

        self._progress = bar.Progress(
            bar.TextColumn("{task.description}"),
            bar.BarColumn(),
            bar.MofNCompleteColumn(),
            bar.TaskProgressColumn(),
            bar.TextColumn("{task.fields[rate]}"),
            bar.TimeRemainingColumn(),
            console=Console(stderr=True),
        )
        self._progress.start()
        self._task = self._progress.add_task(description, total=total, rate="")

    def advance(self, n: int) -> None:
        if self._progress is None:
            return
        self._progress.advance(self._task, n)
        speed = self._progress.tasks[0].speed
        if speed:
            self._progress.update(self._task, rate=f"{speed:.1f} img/s")

    def stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def message(self, text: str) -> None:
        info(text, self.quiet)


def fmt(value, spec: str) -> str:
    """``value`` formatted, or "-" where it is missing (None, or not a number)."""
    return format(value, spec) if isinstance(value, (int, float)) and not isinstance(value, bool) else "-"


def print_table(
    header: list[str], rows: list[list[str]], title: str = "", right: Collection[str] = frozenset()
) -> None:
    """A rich table on a terminal; piped or redirected, plain columns that are never wrapped
    or cut, so paths stay whole and copyable."""
    if sys.stdout.isatty():
        from rich.console import Console
        from rich.table import Table

        table = Table(title=title or None)
        for name in header:
            table.add_column(name, justify="right" if name in right else "left", overflow="fold")
        for row in rows:
            table.add_row(*row)
        Console().print(table)
        return
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows, strict=True)]
    for row in [header, *rows]:
        cells = zip(header, map(str, row), widths, strict=True)
        typer.echo("  ".join(c.rjust(w) if name in right else c.ljust(w) for name, c, w in cells).rstrip())
