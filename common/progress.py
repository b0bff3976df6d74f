"""Progress callbacks: the CLI passes a rich progress bar, the Python API gets this silent default."""

from __future__ import annotations


class Reporter:
    """Silent progress callbacks; subclasses override what they show."""

    def start(self, total: int, description: str) -> None: ...

    def advance(self, n: int) -> None: ...

    def stop(self) -> None: ...

    def message(self, text: str) -> None: ...
