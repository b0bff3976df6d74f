"""What every command shares: one-line errors with exit codes, ``--json`` output, progress.

Only typer and rich are imported here; commands import torch & co. inside their bodies.
"""

from __future__ import annotations

import functools
import json
import sys
from enum import Enum
from typing import Annotated, Any

import typer

from ..common.progress import Reporter
from ..errors import STORAGE_ERRNOS, StorageError, TlxError, storage_advice

JsonOpt = Annotated[
    bool, typer.Option("--json", help="Print one machine-readable JSON object as the last line of stdout.")
]
QuietOpt = Annotated[
    bool, typer.Option("--quiet", "-q", help="No progress bar or chatter; errors and the result only.")
]


# Choices shared by several commands (str Enums, so typer lists them in --help).
class Pool(str, Enum):
    avg = "avg"
    max = "max"
    avgmax = "avgmax"


class Engine(str, Enum):
    auto = "auto"
    eager = "eager"
    compile = "compile"
    onnxruntime = "onnxruntime"
    openvino = "openvino"


EngineOpt = Annotated[
    Engine,
    typer.Option(
        help="What runs the frozen forward pass: eager PyTorch, torch.compile, or ONNX Runtime / OpenVINO "
        "(pip install 'tlx[fast]'); auto picks the fastest installed one that gives the same features as eager "
        "(checked on the first batch). Compiled artefacts are cached in $TLX_ENGINE_CACHE_DIR "
        "[default: ~/.cache/tlx/engines]."
    ),
]


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


def fail(message: str, code: int = 2) -> None:
    """Print one clear line on stderr and exit (2 = bad input, 1 = the job itself failed)."""
    typer.echo(f"tlx: error: {message}", err=True)
    raise typer.Exit(code)


def handle_errors(fn):
    """Turn :class:`TlxError` into one line on stderr and its exit code, with no traceback; a
    disk error (full, read-only, denied, I/O) that no writer turned into a :class:`StorageError`
    gets the same treatment, with exit code 1."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except TlxError as exc:
            fail(str(exc), getattr(exc, "exit_code", 2))
        except OSError as exc:
            # a disk error on a path no central writer covers: still one line, never a traceback
            if exc.errno not in STORAGE_ERRNOS:
                raise
            fail(f"{exc.filename or 'a file'}: {exc.strerror}; {storage_advice(exc.errno)}", StorageError.exit_code)
        except KeyboardInterrupt:
            typer.echo("tlx: interrupted", err=True)
            raise typer.Exit(130) from None

    return wrapper


def emit_json(obj) -> None:
    sys.stdout.write(json.dumps(obj, default=str) + "\n")
    sys.stdout.flush()


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


class RichReporter(Reporter):
    """Progress bar with images/s and ETA on stderr; silent when quiet or not a terminal."""

    def __init__(self, quiet: bool = False, unit: str = "img"):
        self.enabled = not quiet and sys.stderr.isatty()
        self.quiet = quiet
        self.unit = unit
        self._progress: Any = None  # a rich Progress, imported when a bar is first shown
        self._task: Any = None

    def start(self, total: int, description: str) -> None:
        if not self.enabled or total == 0:
            return
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TaskProgressColumn,
            TextColumn,
            TimeRemainingColumn,
        )

        rate = TextColumn("{task.fields[rate]}")
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TaskProgressColumn(),
            rate,
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=False,
        )
        self._progress.start()
        self._task = self._progress.add_task(description, total=total, rate="")

    def advance(self, n: int) -> None:
        if self._progress is None:
            return
        self._progress.advance(self._task, n)
        task = self._progress.tasks[0]
        if task.speed:
            self._progress.update(self._task, rate=f"{task.speed:.1f} {self.unit}/s")

    def stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def message(self, text: str) -> None:
        info(text, self.quiet)
