"""Stage one: frozen pretrained backbones, finding and decoding the images, and the extraction run
(the cache it fills is ``tlx.cache``)."""

# Importing the builders registers them (``registry`` holds only the dicts); cheap: no torch.
from . import backbones as backbones
