"""Stage one: frozen pretrained backbones, image decoding and the HDF5 feature cache."""
