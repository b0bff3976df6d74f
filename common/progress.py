"""Progress callbacks shared by every long command.

The library reports through a ``Reporter``; the CLI passes one backed by a rich progress bar,
the Python API gets this silent default. Subclasses override what they show.
"""

from __future__ import annotations


class Reporter:
    """Silent progress callbacks: ``start`` a task of ``total`` steps, ``advance`` it, ``stop`` it,
    and print an occasional ``message``."""

    def start(self, total: int, description: str) -> None:
        """Begin a task of ``total`` steps."""

    def advance(self, n: int) -> None:
        """Mark ``n`` more steps done."""

    def stop(self) -> None:
        """End the current task."""

    def message(self, text: str) -> None:
        """Say one line to the user."""
