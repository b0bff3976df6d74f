"""Registry of backbones, in the manner of timm's model registry.

Fixed names (``efficientnet_lite0``) are registered by decorating a builder; whole families
(``torchvision:<model>``, ``timm:<model>``) by decorating a builder that takes the model name.
Adding a backbone is one decorated function in ``backbones.py``; nothing else to edit. This
module holds the dicts and decorators only: ``tlx.extractor`` imports ``backbones`` to fill them
(as timm's ``_registry`` is filled by its model modules), so the two never import each other.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..errors import TlxError

# name -> builder(weights, pretrained) ; prefix -> builder(arch, weights, pretrained)
_BACKBONES: dict[str, Callable] = {}
_FAMILIES: dict[str, Callable] = {}
_DESCRIPTIONS: dict[str, str] = {}
_WEIGHTS_STATUS: dict[str, Callable[[], str]] = {}  # name -> "installed ..." / "not installed: ..."

DEFAULT_BACKBONE = "efficientnet_lite0"


class UnknownBackboneError(TlxError):
    pass


def register_backbone(name: str, description: str = "", weights_status: Callable[[], str] | None = None):
    """``weights_status`` says, without building anything, whether the pretrained weights are
    there (``tlx info --backbones``)."""

    def decorate(fn: Callable) -> Callable:
        if name in _BACKBONES:
            raise ValueError(f"backbone {name!r} is registered twice")
        _BACKBONES[name] = fn
        _DESCRIPTIONS[name] = description or (fn.__doc__ or "").strip().splitlines()[0]
        if weights_status is not None:
            _WEIGHTS_STATUS[name] = weights_status
        return fn

    return decorate


def register_family(prefix: str, description: str = "", weights_status: Callable[[], str] | None = None):
    def decorate(fn: Callable) -> Callable:
        _FAMILIES[prefix] = fn
        _DESCRIPTIONS[f"{prefix}:<model>"] = description or (fn.__doc__ or "").strip().splitlines()[0]
        if weights_status is not None:
            _WEIGHTS_STATUS[f"{prefix}:<model>"] = weights_status
        return fn

    return decorate


def list_backbones() -> dict[str, str]:
    """Registered names and family patterns, each with a one-line description."""
    return dict(_DESCRIPTIONS)


def weights_status() -> dict[str, str]:
    """Name -> where its weights stand (installed, to download, random), for every registered entry."""
    status = {name: "" for name in _DESCRIPTIONS}
    for name, check in _WEIGHTS_STATUS.items():
        status[name] = check()
    return status


@dataclass(frozen=True)
class BackboneRef:
    name: str
    builder: Callable
    arch: str | None  # the model name inside a family, None for fixed names

    def build(self, weights=None, pretrained: bool = True):
        """Build the network; ``pretrained=False`` gives a random init (tests, arch-only loads)."""
        if self.arch is None:
            return self.builder(weights=weights, pretrained=pretrained)
        return self.builder(self.arch, weights=weights, pretrained=pretrained)


def get_backbone(name: str) -> BackboneRef:
    if name in _BACKBONES:
        return BackboneRef(name, _BACKBONES[name], None)
    prefix, sep, arch = name.partition(":")
    if sep and prefix in _FAMILIES and arch:
        return BackboneRef(name, _FAMILIES[prefix], arch)
    known = ", ".join(sorted(_BACKBONES)) + ", " + ", ".join(f"{p}:<model>" for p in sorted(_FAMILIES))
    raise UnknownBackboneError(f"unknown backbone {name!r}: expected one of {known} (see `tlx info --backbones`)")
