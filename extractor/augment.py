"""Augmented views of an image for the feature cache (``tlx extract DATA --views K``).

View ``v`` (1..K; view 0 is the center crop) draws every random choice from a generator seeded by
sha256(recipe id, the image's content hash, v), never from a global RNG, a worker or a batch: an
interrupted, incremental or distributed run makes the same pixels, and ``--views 8`` after
``--views 4`` only adds views 5 to 8. No torch at module level: the CLI checks a recipe first.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass

from ..errors import TlxError

RECIPE_VERSION = 1  # bump when a recipe's pixels change: a new id, so old view vectors are not reused
DEFAULT_RECIPE = "crop"
DEFAULT_CROP_SCALE = 0.7  # measured on ants/bees: milder crops than 0.5 kept accuracy (benchmarks/views.py)
MAX_VIEWS = 64  # view indices are stored as int16; more than this is a mistake, not a wish


class ViewError(TlxError):
    """A bad --views / --view-recipe request."""


@dataclass(frozen=True)
class ViewRecipe:
    """``crop:S``: RandomResizedCrop (area scale in (S, 1), aspect in ``ratio``) then a flip half the
    time; ``flip``: the center crop mirrored (one view: it has no randomness)."""

    kind: str  # "crop" or "flip"
    min_scale: float = 1.0  # crop: the smallest share of the image's area a view keeps
    ratio: tuple[float, float] = (3 / 4, 4 / 3)

    @property
    def name(self) -> str:
        return f"crop:{self.min_scale:g}" if self.kind == "crop" else self.kind

    @property
    def max_views(self) -> int:
        return 1 if self.kind == "flip" else MAX_VIEWS

    def to_dict(self) -> dict:
        """As recorded in the cache, with the id that keys its view vectors."""
        d = {"kind": self.kind, "version": RECIPE_VERSION}
        if self.kind == "crop":
            d.update(min_scale=self.min_scale, ratio=list(self.ratio), flip=0.5)
        return {"name": self.name, **d, "id": hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]}

    @property
    def id(self) -> str:
        return self.to_dict()["id"]


def parse_recipe(text: str | None) -> ViewRecipe:
    """``crop``, ``crop:0.7`` or ``flip`` -> a recipe; anything else fails with one line."""
    text = (text or DEFAULT_RECIPE).strip()
    kind, _, arg = text.partition(":")
    if kind == "flip" and not arg:
        return ViewRecipe("flip")
    if kind == "crop":
        try:
            scale = float(arg) if arg else DEFAULT_CROP_SCALE
        except ValueError:
            scale = -1.0
        if not 0.05 <= scale <= 1.0:
            raise ViewError(f"--view-recipe {text!r}: the crop scale must be a number in [0.05, 1], e.g. crop:0.5")
        return ViewRecipe("crop", scale)
    raise ViewError(f"--view-recipe {text!r} is not a recipe: use crop, crop:S (S in [0.05, 1], e.g. crop:0.7) or flip")


def check_count(count: int, recipe: ViewRecipe) -> None:
    if count < 0:
        raise ViewError(f"--views must be 0 (no views) or more, not {count}")
    if count > recipe.max_views:
        hint = "" if recipe.kind != "flip" else ": flip has one view (the mirror image); use --views 1 or crop"
        raise ViewError(f"--views {count} is more than the {recipe.name} recipe makes ({recipe.max_views}){hint}")


def view_seed(recipe_id: str, sha256: str, view: int) -> int:
    """The seed of one view: a function of the recipe, the image's bytes and the view index only."""
    return int.from_bytes(hashlib.sha256(f"{recipe_id}:{sha256}:{view}".encode()).digest()[:8], "big")


def crop_box(width: int, height: int, seed: int, min_scale: float, ratio: tuple[float, float]):
    """RandomResizedCrop's box (left, top, right, bottom) drawn from ``seed``: torchvision's
    algorithm (ten tries, then the center crop clamped to the ratio), with numpy's generator."""
    import numpy as np

    rng = np.random.default_rng(seed)
    area = width * height
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(10):
        target = area * rng.uniform(min_scale, 1.0)
        aspect = math.exp(rng.uniform(log_lo, log_hi))
        w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            top, left = int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1))
            break
    else:  # the whole image, cut to the nearest ratio allowed
        w, h = min(width, round(height * ratio[1])), min(height, round(width / ratio[0]))
        top, left = (height - h) // 2, (width - w) // 2
    return (left, top, left + w, top + h), bool(rng.random() < 0.5)


class ViewMaker:
    """Decoded PIL image -> uint8 tensors (m, 3, S, S) of the views asked for, at the backbone's
    input size. Built in the parent and pickled to the DataLoader workers."""

    def __init__(self, recipe: ViewRecipe, resize_crop):
        self.recipe, self.recipe_id = recipe, recipe.id
        self.resize_crop = resize_crop  # the backbone's own ResizeCrop (size, interpolation)

    def __call__(self, img, sha256: str, views: list[int], center=None):
        """``center``: the center crop tensor when the caller has it already (flip reuses it)."""
        import numpy as np
        import torch
        from PIL import Image

        size = self.resize_crop.crop
        out = []
        for v in views:
            if self.recipe.kind == "flip":
                out.append((center if center is not None else self.resize_crop(img)).flip(-1))
                continue
            seed = view_seed(self.recipe_id, sha256, v)
            box, flip = crop_box(img.width, img.height, seed, self.recipe.min_scale, self.recipe.ratio)
            view = img.resize((size, size), self.resize_crop.resample, box=box)
            if flip:
                view = view.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            out.append(torch.from_numpy(np.asarray(view, dtype=np.uint8).copy()).permute(2, 0, 1))
        return torch.stack(out) if out else torch.empty(0, 3, size, size, dtype=torch.uint8)
