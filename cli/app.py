"""The ``tlx`` entry point. Each command group lives in its own module and registers itself."""

from __future__ import annotations

from typing import Annotated

import typer

from . import audit, cache, demo, extract, finetune, heads, info, predict

app = typer.Typer(
    name="tlx",
    help=(
        "Cached-feature, two-stage transfer learning: "
        "extract features once, fit heads in seconds, fine-tune when it pays."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

for module in (extract, heads, finetune, predict, info, cache, demo, audit):
    module.register(app)


def _print_version(value: bool) -> None:
    if value:
        from ..version import __version__

        typer.echo(f"tlx {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[
        bool, typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """The options of ``tlx`` itself (the help text is the app's)."""


main = app  # the console script `tlx` (pyproject.toml) and `python -m tlx`
