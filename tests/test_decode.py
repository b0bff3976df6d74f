"""Decoding odd and broken image files, and the resize + crop every backbone relies on."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import bomb_png, broken_files, write_image
from PIL import Image

from tlx.cache.space import Preprocessing
from tlx.extractor.decode import ImageDecodeError, load_image
from tlx.extractor.preprocess import ResizeCrop, preprocess_image

TINY = Preprocessing(32, 0.875, "bilinear", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


def rgb_array(path) -> np.ndarray:
    img = load_image(path)
    assert img.mode == "RGB"
    return np.asarray(img)


# --------------------------------------------------------------------------- formats


@pytest.mark.parametrize(
    "fmt,ext", [("JPEG", "jpg"), ("PNG", "png"), ("WEBP", "webp"), ("TIFF", "tif"), ("BMP", "bmp"), ("GIF", "gif")]
)
def test_formats_decode_to_rgb(tmp_path, fmt, ext):
    path = write_image(tmp_path / f"x.{ext}", seed=1, size=(40, 30), fmt=fmt)
    arr = rgb_array(path)
    assert arr.shape == (30, 40, 3) and arr.dtype == np.uint8
    assert arr.std() > 5  # not a blank picture
    out = ResizeCrop(TINY).load(path)
    assert out.shape == (3, 32, 32) and out.dtype == torch.uint8


def test_animated_gif_gives_its_first_frame(tmp_path):
    frames = [Image.new("RGB", (20, 20), c) for c in ((255, 0, 0), (0, 0, 255), (0, 255, 0))]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50, loop=0)
    with Image.open(path) as img:
        assert getattr(img, "n_frames", 1) == 3
    r, g, b = rgb_array(path).reshape(-1, 3).mean(0)
    assert r > 200 and g < 50 and b < 50


def test_exif_orientation_is_applied(tmp_path):
    img = Image.new("RGB", (40, 20), (0, 0, 0))
    img.paste((255, 255, 255), (0, 0, 20, 20))  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 CW to display
    path = tmp_path / "rotated.jpg"
    img.save(path, exif=exif.tobytes(), quality=95)
    arr = rgb_array(path)
    assert arr.shape[:2] == (40, 20)  # stored 40x20, shown 20x40
    assert arr[:15].mean() > 200 and arr[25:].mean() < 50  # the white half is now on top


def test_grayscale(tmp_path):
    path = tmp_path / "gray.png"
    Image.fromarray(np.tile(np.arange(0, 250, 10, dtype=np.uint8), (8, 1)), mode="L").save(path)
    arr = rgb_array(path)
    assert (arr[..., 0] == arr[..., 1]).all() and (arr[..., 1] == arr[..., 2]).all()
    assert arr.min() == 0 and arr.max() == 240


def test_16_bit_png_keeps_its_range(tmp_path):
    path = tmp_path / "deep.png"
    ramp = np.tile(np.linspace(0, 65535, 64).astype(np.uint16), (16, 1))
    Image.fromarray(ramp).save(path)
    with Image.open(path) as img:
        assert img.mode.startswith("I")  # really 16-bit on disk
    arr = rgb_array(path)[..., 0].astype(int)
    assert arr.min() <= 2 and arr.max() >= 253  # full range, not clipped to white
    assert abs(arr[0, 32] - 65535 * 32 / 63 / 257) <= 2  # and linear


def test_cmyk_jpeg(tmp_path):
    path = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(path)  # pure red in CMYK
    with Image.open(path) as img:
        assert img.mode == "CMYK"
    r, g, b = rgb_array(path).reshape(-1, 3).mean(0)
    assert r > 200 and g < 60 and b < 60


def test_palette_with_transparency_goes_on_white(tmp_path):
    img = Image.new("P", (10, 10), 0)
    img.putpalette([0, 0, 0, 255, 0, 0] + [0] * (254 * 3))
    img.paste(1, (0, 0, 5, 10))  # left half palette entry 1 (red), right half entry 0
    path = tmp_path / "pal.png"
    img.save(path, transparency=0)  # entry 0 (black) is transparent
    arr = rgb_array(path)
    assert (arr[:, :5] == [255, 0, 0]).all()
    assert (arr[:, 5:] == [255, 255, 255]).all()  # transparent -> white, not black


@pytest.mark.parametrize("mode,fill", [("RGBA", (0, 0, 255, 0)), ("LA", (0, 0))])
def test_alpha_goes_on_white(tmp_path, mode, fill):
    img = Image.new(mode, (10, 10), fill)
    opaque = (255, 0, 0, 255) if mode == "RGBA" else (40, 255)
    img.paste(opaque, (0, 0, 5, 10))
    path = tmp_path / f"alpha_{mode}.png"
    img.save(path)
    arr = rgb_array(path)
    assert (arr[:, 5:] == 255).all()  # fully transparent -> white
    assert (arr[:, :5] == ([255, 0, 0] if mode == "RGBA" else [40, 40, 40])).all()


def test_bilevel(tmp_path):
    img = Image.new("1", (16, 8), 0)
    img.paste(1, (0, 0, 8, 8))
    path = tmp_path / "bw.png"
    img.save(path)
    arr = rgb_array(path)
    assert (arr[:, :8] == 255).all() and (arr[:, 8:] == 0).all()


# --------------------------------------------------------------------------- broken files


def test_broken_files_raise_one_line_reasons(tmp_path):
    for name, words in broken_files(tmp_path / "bad").items():
        with pytest.raises(ImageDecodeError) as err:
            load_image(tmp_path / "bad" / name)
        reason = str(err.value)
        assert words in reason, f"{name}: {reason}"
        assert "\n" not in reason


@pytest.mark.parametrize("side", [10000, 30000], ids=["past-the-limit", "past-twice-the-limit"])
def test_bomb_fails_fast_without_allocating(tmp_path, side, monkeypatch):
    from PIL import ImageFile

    assert side * side > Image.MAX_IMAGE_PIXELS  # 10000^2 is where Pillow only warns
    path = bomb_png(tmp_path / "bomb.png", side, side)
    decoded = []  # the pixel buffer is allocated in load(): it must never be reached
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: decoded.append(self.size))
    with pytest.raises(ImageDecodeError, match="decompression bomb"):
        load_image(path)
    assert decoded == []


def test_importing_tlx_leaves_warning_filters_alone():
    import subprocess
    import sys

    code = (
        "import warnings, tlx.extractor.decode, PIL.Image as I; "
        "print(any(f[2] is I.DecompressionBombWarning for f in warnings.filters))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


# --------------------------------------------------------------------------- resize + crop


def torchvision_eval(img: Image.Image, pre: Preprocessing) -> np.ndarray:
    """The reference: torchvision's Resize(shorter side) + CenterCrop on the PIL image."""
    from torchvision import transforms as T

    mode = T.InterpolationMode(pre.interpolation)
    tf = T.Compose([T.Resize(pre.resize_size, interpolation=mode), T.CenterCrop(pre.input_size)])
    return np.asarray(tf(img))


LITE0 = Preprocessing(224, 0.875, "bicubic", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


@pytest.mark.parametrize(
    "pre",
    [LITE0, TINY, Preprocessing(160, 0.95, "bicubic", (0.5,) * 3, (0.5,) * 3)],
    ids=["224-bicubic", "32-bilinear", "160-bicubic-0.95"],
)
@pytest.mark.parametrize(
    "size", [(333, 500), (500, 333), (343, 496), (199, 272), (256, 300), (300, 256), (256, 256), (20, 30), (1024, 700)]
)
def test_resize_crop_equals_torchvision(pre, size):
    rng = np.random.default_rng(size[0] * 7 + size[1])
    img = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))  # noise: the hardest case
    ours = ResizeCrop(pre)(img).permute(1, 2, 0).numpy()
    assert ours.shape == (pre.input_size, pre.input_size, 3)
    np.testing.assert_array_equal(ours, torchvision_eval(img, pre))


def test_resize_crop_equals_torchvision_on_real_photos(hymenoptera):
    names = [
        "val/ants/161076144_124db762d6.jpg",
        "train/ants/Ant_1.jpg",
        "val/ants/562589509_7e55469b97.jpg",
        "train/bees/2470492904_837e97800d.jpg",
    ]
    paths = [hymenoptera / n for n in names if (hymenoptera / n).is_file()] or sorted(
        (hymenoptera / "val" / "ants").iterdir()
    )[:4]
    for path in paths:
        img = load_image(path)
        ours = ResizeCrop(LITE0)(img).permute(1, 2, 0).numpy()
        np.testing.assert_array_equal(ours, torchvision_eval(img, LITE0), err_msg=str(path))


def test_preprocess_image_normalizes_with_the_backbones_mean_and_std(tmp_path):
    path = tmp_path / "flat.png"
    Image.new("RGB", (50, 40), (255, 0, 128)).save(path)
    pre = Preprocessing(32, 0.875, "bilinear", (0.5, 0.25, 0.5), (0.5, 0.25, 0.25))
    x = preprocess_image(path, pre)
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32
    expected = [(1.0 - 0.5) / 0.5, (0.0 - 0.25) / 0.25, (128 / 255 - 0.5) / 0.25]
    assert torch.allclose(x.mean((1, 2)), torch.tensor(expected), atol=1e-5)
