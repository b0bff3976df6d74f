"""Registry of backbones, in the manner of timm's model registry: fixed names
(``efficientnet_lite0``) and whole families (``timm:<model>``) are registered by decorating a
builder in ``backbones.py``. This module holds only the table, so the two never import each other."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..errors import TlxError

DEFAULT_BACKBONE = "efficientnet_lite0"
FAMILY = ":<model>"  # a family is registered as "<prefix>:<model>"


class UnknownBackboneError(TlxError):
    pass


@dataclass(frozen=True)
class Entry:
    builder: Callable  # builder(weights, pretrained); a family's: builder(arch, weights, pretrained)
    description: str
    weights_status: Callable[[], str]  # "installed ..." / "not installed: ...", said without building


_BACKBONES: dict[str, Entry] = {}


def register_backbone(name: str, description: str, weights_status: Callable[[], str]):
    def decorate(fn: Callable) -> Callable:
        if name in _BACKBONES:
            raise ValueError(f"backbone {name!r} is registered twice")
        _BACKBONES[name] = Entry(fn, description, weights_status)
        return fn

    return decorate


def register_family(prefix: str, description: str, weights_status: Callable[[], str]):
    return register_backbone(prefix + FAMILY, description, weights_status)


def list_backbones() -> dict[str, str]:
    """Registered names and family patterns, each with a one-line description."""
    return {name: entry.description for name, entry in _BACKBONES.items()}


def weights_status() -> dict[str, str]:
    """Name -> where its weights stand (installed, to download, random), for every registered entry."""
    return {name: entry.weights_status() for name, entry in _BACKBONES.items()}


@dataclass(frozen=True)
class BackboneRef:
    name: str
    builder: Callable
    arch: str | None  # the model name inside a family, None for fixed names

    def build(self, weights=None, pretrained: bool = True):
        """Build the network; ``pretrained=False`` gives a random init (arch-only loads)."""
        args = () if self.arch is None else (self.arch,)
        return self.builder(*args, weights=weights, pretrained=pretrained)


def get_backbone(name: str) -> BackboneRef:
    prefix, sep, arch = name.partition(":")
    if not sep and name in _BACKBONES:
        return BackboneRef(name, _BACKBONES[name].builder, None)
    if sep and arch and prefix + FAMILY in _BACKBONES:
        return BackboneRef(name, _BACKBONES[prefix + FAMILY].builder, arch)
    known = ", ".join(sorted(_BACKBONES, key=lambda n: (n.endswith(FAMILY), n)))  # fixed names, then families
    raise UnknownBackboneError(f"unknown backbone {name!r}: expected one of {known} (see `tlx info --backbones`)")
