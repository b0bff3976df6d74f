"""tlx: cached-feature, two-stage transfer learning for image classification. Importing ``tlx``
is cheap: torch, torchvision and timm are imported where they are used."""

__all__ = ["Features", "__version__", "audit", "fit_head", "load_features"]

# Resolved on first use, so that ``import tlx.common`` loads no stage (and no import at the top: pytest
# may import this file alone, as a module without a package, when the checkout's name is no identifier).
_LAZY = {
    "__version__": ".version",
    "Features": ".cache.features",
    "load_features": ".cache.features",
    "fit_head": ".heads.training.fit",  # clf: a head name, or a scikit-learn classifier or pipeline object
    "audit": ".quality.run",
}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'tlx' has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(_LAZY[name], __name__), name)
