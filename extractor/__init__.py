"""Stage one: frozen pretrained backbones, image decoding and the HDF5 feature cache."""

# Importing the builders registers them (``registry`` holds only the dicts); cheap: no torch.
from . import backbones as backbones
