"""A backbone's evaluation preprocessing, split in two: resize + center crop to uint8 in the
DataLoader workers, normalization as the first step on the device (4x less to move)."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from ..cache.space import Preprocessing
from .decode import load_image


class ResizeCrop:
    """PIL image -> uint8 tensor (3, S, S): shorter side to ``resize_size``, then center crop, as
    torchvision's ``Resize(int)`` + ``CenterCrop`` (timm's and torchvision's evaluation transforms)."""

    def __init__(self, pre: Preprocessing, flip: bool = False):
        self.resize_size = pre.resize_size
        self.crop = pre.input_size
        self.resample = Image.Resampling[pre.interpolation.upper()]  # bicubic, bilinear, nearest, lanczos
        self.flip = flip  # mirror the crop left-right (test-time augmentation)

    def __call__(self, img: Image.Image) -> torch.Tensor:
        w, h = img.size
        short, long = (w, h) if w <= h else (h, w)
        new_short, new_long = self.resize_size, int(self.resize_size * long / short)
        new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
        top, left = round((new_h - self.crop) / 2.0), round((new_w - self.crop) / 2.0)
        # Pillow's two separable passes (horizontal first, uint8 in between) done here, so the
        # vertical one skips the columns the crop drops: the same pixels as resize + crop.
        # ``resize(box=...)`` is not equal (pass order, float32 box corners: up to 13/255 off).
        if new_w != w:
            img = img.resize((new_w, h), self.resample)
        img = img.crop((left, 0, left + self.crop, h))
        if new_h != h:
            img = img.resize((self.crop, new_h), self.resample)
        img = img.crop((0, top, self.crop, top + self.crop))
        if self.flip:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1)

    def load(self, path) -> torch.Tensor:
        # JPEG may shrink huge photos to twice the target: the antialiased resize still decides the pixels.
        return self(load_image(path, min_size=2 * self.resize_size))


class Normalize(torch.nn.Module):
    """uint8 (N, 3, H, W) -> float, scaled to [0, 1] and normalized with the backbone's mean/std."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, pre: Preprocessing):
        super().__init__()
        self.register_buffer("mean", torch.tensor(pre.mean).view(1, 3, 1, 1) * 255.0, persistent=False)
        self.register_buffer("std", torch.tensor(pre.std).view(1, 3, 1, 1) * 255.0, persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return (images.float() - self.mean) / self.std


def preprocess_image(path, pre: Preprocessing) -> torch.Tensor:
    """One image file -> normalized float tensor (3, S, S), as the extractor computes it."""
    return Normalize(pre)(ResizeCrop(pre).load(path)[None])[0]
