"""Decoding any common image file into an 8-bit RGB picture, or a one-line reason why not."""

from __future__ import annotations

import warnings

import numpy as np
from PIL import Image, ImageOps


class ImageDecodeError(Exception):
    """The file is not a decodable image; the message is the reason recorded in the cache."""


def _high_bit_depth_to_l(img: Image.Image) -> Image.Image:
    """16-bit, 32-bit integer and float grayscale to 8-bit, preserving the full range."""
    arr = np.asarray(img)
    if img.mode == "F":
        arr = arr * 255.0 if arr.size and float(np.nanmax(arr)) <= 1.0 else arr
    elif img.mode.startswith("I;16") or (arr.size and arr.max() > 255):
        arr = arr / 257.0  # 65535 -> 255
    return Image.fromarray(np.clip(np.nan_to_num(arr), 0, 255).astype(np.uint8), mode="L")


def to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode to RGB; transparent pixels are composited onto white."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I", "F") or img.mode.startswith("I;16"):
        img = _high_bit_depth_to_l(img)
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")  # L, 1, P, CMYK, YCbCr, LAB, HSV...


def load_image(path, min_size: int | None = None) -> Image.Image:
    """Open ``path`` as an upright RGB image (EXIF orientation applied, first frame of animations).
    ``min_size``: JPEG may downscale in the DCT domain while both sides stay that large (much
    cheaper on big photos)."""
    try:
        # Pillow warns between MAX_IMAGE_PIXELS and twice that, and raises beyond; tlx skips any
        # image past the limit as a bomb. Set here, not at import, to leave the process's filters alone.
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                if min_size and img.format == "JPEG":
                    img.draft("RGB", (min_size, min_size))
                img.seek(0)
                img.load()
                upright = ImageOps.exif_transpose(img)
                return to_rgb(upright if upright is not None else img)
    except FileNotFoundError:
        raise ImageDecodeError("file not found (a dangling link, or deleted while running)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageDecodeError(f"decompression bomb: {exc}") from None
    except Image.UnidentifiedImageError:
        raise ImageDecodeError("not an image Pillow can identify (empty, corrupt or another file type)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageDecodeError(f"cannot decode: {exc}") from None
