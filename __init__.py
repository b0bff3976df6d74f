"""tlx: cached-feature, two-stage transfer learning for image classification.

Stage one (``tlx.extractor``) runs a frozen pretrained base once and caches pooled
features in HDF5; stage two (``tlx.heads``) fits classifiers on them in seconds;
``tlx.finetune`` is the separate end-to-end path that unfreezes the top of the base.

Importing ``tlx`` is cheap: torch, torchvision and timm are imported where they are used.
"""

__all__ = ["Features", "__version__", "audit", "fit_head", "load_features"]


def __getattr__(name: str):
    # Resolved on first use, so that ``import tlx.common`` (or ``tlx --version``) loads no stage.
    # (No import at the top either: the test runner may import this file alone, as a module without
    # a package, when the checkout's folder name is not a Python identifier.)
    if name == "__version__":
        from .version import __version__

        return __version__
    if name in ("Features", "load_features"):
        from .cache import features

        return getattr(features, name)
    if name == "fit_head":  # clf: a head name, or a scikit-learn classifier or pipeline object
        from .heads.training.fit import fit_head

        return fit_head
    if name == "audit":
        from .quality.run import audit

        return audit
    raise AttributeError(f"module 'tlx' has no attribute {name!r}")
