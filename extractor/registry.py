"""Registry of backbones, in the manner of timm's model registry: fixed names
(``efficientnet_lite0``) and whole families (``timm:<model>``) are registered by decorating a
builder in ``backbones.py``. This module holds only the dicts and decorators, so the two never
import each other."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..errors import TlxError

# name -> builder(weights, pretrained) ; prefix -> builder(arch, weights, pretrained)
_BACKBONES: dict[str, Callable] = {}
_FAMILIES: dict[str, Callable] = {}
_DESCRIPTIONS: dict[str, str] = {}
# name -> "installed ..." / "not installed: ...", said without building anything (`tlx info --backbones`)
_WEIGHTS_STATUS: dict[str, Callable[[], str]] = {}

DEFAULT_BACKBONE = "efficientnet_lite0"


class UnknownBackboneError(TlxError):
    pass


def register_backbone(name: str, description: str, weights_status: Callable[[], str]):
    def decorate(fn: Callable) -> Callable:
        if name in _BACKBONES:
            raise ValueError(f"backbone {name!r} is registered twice")
        _BACKBONES[name] = fn
        _DESCRIPTIONS[name], _WEIGHTS_STATUS[name] = description, weights_status
        return fn

    return decorate


def register_family(prefix: str, description: str, weights_status: Callable[[], str]):
    def decorate(fn: Callable) -> Callable:
        _FAMILIES[prefix] = fn
        _DESCRIPTIONS[f"{prefix}:<model>"], _WEIGHTS_STATUS[f"{prefix}:<model>"] = description, weights_status
        return fn

    return decorate


def list_backbones() -> dict[str, str]:
    """Registered names and family patterns, each with a one-line description."""
    return dict(_DESCRIPTIONS)


def weights_status() -> dict[str, str]:
    """Name -> where its weights stand (installed, to download, random), for every registered entry."""
    return {name: check() for name, check in _WEIGHTS_STATUS.items()}


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
    if name in _BACKBONES:
        return BackboneRef(name, _BACKBONES[name], None)
    prefix, sep, arch = name.partition(":")
    if sep and prefix in _FAMILIES and arch:
        return BackboneRef(name, _FAMILIES[prefix], arch)
    known = ", ".join(sorted(_BACKBONES)) + ", " + ", ".join(f"{p}:<model>" for p in sorted(_FAMILIES))
    raise UnknownBackboneError(f"unknown backbone {name!r}: expected one of {known} (see `tlx info --backbones`)")
