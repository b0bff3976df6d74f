"""tlx: cached-feature, two-stage transfer learning for image classification.

Stage one (``tlx.extractor``) runs a frozen pretrained base once and caches pooled
features in HDF5; stage two (``tlx.heads``) fits classifiers on them in seconds;
``tlx.finetune`` is the separate end-to-end path that unfreezes the top of the base.

Importing ``tlx`` is cheap: torch, torchvision and timm are imported where they are used.
"""

__version__ = "0.1.0"

from tlx.extractor.features import Features, load_features  # noqa: E402  (h5py + numpy only)

__all__ = ["Features", "load_features", "__version__"]
