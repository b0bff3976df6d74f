"""The rows a head trains and validates on, read once for every head of a ``fit-head`` call: in
memory, or on disk (a ``CacheRows``) above ``max_memory`` for the heads that stream; with
``--views N`` the training images' views follow their center rows (``train_group`` maps a row to
its image, so a fold keeps an image with its views)."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...cache.features import Features, load_features, resolve_cache
from ...cache.rows import CacheRows
from ...errors import DatasetError, TlxError
from .fusion import Fusion, load_fused
from .split import split_indices

UNITS = {"": 1, "b": 1, "k": 1 << 10, "kb": 1 << 10, "m": 1 << 20, "mb": 1 << 20, "g": 1 << 30, "gb": 1 << 30}


def parse_memory(text: str | int | None) -> int | None:
    """``"2GB"``, ``"512MB"``, ``"1.5g"`` or a number of bytes -> bytes; None stays None."""
    if text is None or isinstance(text, int):
        return text
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(text))
    unit = match.group(2).lower() if match else ""
    if not match or unit not in UNITS or float(match.group(1)) <= 0:
        raise TlxError(f"--max-memory {text!r}: expected a size such as 2GB, 512MB or 1.5G")
    return int(float(match.group(1)) * UNITS[unit])


def default_max_memory() -> int:
    """Half of the memory available now (``MemAvailable``), or 4 GiB where that is unknown."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024 // 2
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2
    except (ValueError, OSError, AttributeError):
        return 4 << 30


@dataclass
class TrainingData:
    meta: Features  # the cache's labels, paths, split and feature space; X stays on disk
    train: np.ndarray  # row numbers in the cache
    val: np.ndarray
    test: np.ndarray  # the data's own test rows (a test/ folder): scored beside val, never chosen on
    split_info: dict
    Xtr: np.ndarray | CacheRows  # CacheRows when streamed, as are Xva and Xte
    ytr: np.ndarray
    Xva: np.ndarray | CacheRows
    yva: np.ndarray
    Xte: np.ndarray | CacheRows
    yte: np.ndarray
    fusion: Fusion | None  # several caches side by side (``tlx.heads.training.fusion``)
    duplicates: dict  # train_val, cross_class (tlx.cache.duplicates)
    # With views: the image (position in ``train``) of each row of Xtr; the first len(train) rows
    # are the center rows, in order. None: no views, one row per image.
    train_group: np.ndarray | None = None
    views: dict | None = None  # per_image, recipe, n_rows: what metrics.json records

    @property
    def streamed(self) -> bool:
        return isinstance(self.Xtr, CacheRows)


def load_training_data(
    features,
    val_fraction: float,
    seed: int,
    max_memory: int | None = None,
    log=lambda _msg: None,
    views: int | None = 0,
    exclude=None,
) -> TrainingData:
    """``features``: a cache, a folder (its newest cache), None (the default folder), or a list of
    caches (two or more are fused). ``views``: train on views 1..N of the training images too
    (None: all the cache has). ``exclude``: files of images to leave out (:func:`drop_excluded`)."""
    fusion, wanted = None, 0
    if isinstance(features, (list, tuple)) and len(features) > 1:
        if views:
            raise TlxError("--views works with one cache, not fused ones: drop --views or fit on one --features")
        meta, fusion = load_fused(list(features), log)
    else:
        if isinstance(features, (list, tuple)):
            features = features[0] if features else None
        path = resolve_cache(features)
        if features is None or Path(features).is_dir():
            log(f"features: {path} (the most recent cache in {path.parent})")
        meta = load_features(path, lazy=True)
        wanted = meta.n_views if views is None else views
    train, val, test, split_info = _split(meta, val_fraction, seed, exclude, log)
    limit = default_max_memory() if max_memory is None else max_memory
    if fusion is not None:
        Xtr, Xva, Xte = _fused_matrices(meta, fusion, (train, val, test), limit)
    else:
        Xtr, Xva, Xte = _matrices(meta, (train, val, test), limit, wanted, log)
    from ...cache.duplicates import count_duplicates

    y = meta.y
    duplicates = count_duplicates(meta.sha256, y, train, np.concatenate([val, test]))
    data = TrainingData(
        meta, train, val, test, split_info, Xtr, y[train], Xva, y[val], Xte, y[test], fusion, duplicates
    )
    if wanted:
        _add_views(data, wanted)
    return data


def _matrices(meta: Features, sides: tuple, limit: int, wanted: int, log) -> tuple:
    """The rows of train, val and test in memory, or all on disk (CacheRows) above ``limit``: the
    heads that stream read them one block at a time."""
    assert isinstance(meta.X, CacheRows)
    rows, val_rows, test_rows = (meta.X.subset(side) for side in sides)
    held_bytes = val_rows.nbytes + test_rows.nbytes
    if rows.nbytes * (1 + wanted) + held_bytes <= limit:
        return rows.to_array(), val_rows.to_array(), test_rows.to_array()
    log(
        f"the {len(sides[0])} training and {len(sides[1]) + len(sides[2])} held-out rows take "
        f"{(rows.nbytes + held_bytes) / 2**30:.2f} GiB, more than --max-memory "
        f"{limit / 2**30:.2f} GiB: streaming them from {meta.path} block by block"
    )
    return rows, val_rows, test_rows


def _fused_matrices(meta: Features, fusion: Fusion, sides: tuple, limit: int) -> tuple:
    """The fused rows, standardized with the training rows only (val stays unseen)."""
    X = meta.X
    assert isinstance(X, np.ndarray)
    if X.nbytes > limit:
        raise TlxError(
            f"the fused features take {X.nbytes / 2**30:.2f} GiB, more than --max-memory "
            f"{limit / 2**30:.2f} GiB, and fused caches are not streamed: raise --max-memory or fit on one cache"
        )
    fusion.standardize(X, sides[0])
    return tuple(X[side] for side in sides)


def _split(meta: Features, val_fraction: float, seed: int, exclude, log):
    """``(train, val, test, split_info)``, without the excluded images, checked to be usable; the
    data's own train/test split is used as it is when there is no val."""
    tags = np.asarray(list(meta.split), dtype=object)
    test = np.flatnonzero(tags == "test")
    split_info: dict = {"source": "data"}
    if "train" in tags and "val" not in tags and len(test):
        train, val = np.flatnonzero(tags == "train"), np.zeros(0, dtype=np.int64)
    else:
        train, val, split_info = split_indices(
            meta.paths, meta.y, meta.split, val_fraction, seed, hashes=meta.sha256, classes=meta.classes
        )
    kept = drop_excluded(meta, {"train": train, "val": val, "test": test}, split_info, exclude, log)
    train, val, test = kept["train"], kept["val"], kept["test"]
    # The val members themselves, so that `finetune --init-head` validates on exactly these images.
    split_info["val_sha256"] = sorted(meta.sha256[i] for i in val)
    check_training_set(meta, train, val, test)
    return train, val, test, split_info


def _add_views(data: TrainingData, n: int) -> None:
    """Append views 1..n of the training images (and only those) to the training rows."""
    from ...cache.features import load_views

    meta = data.meta
    if data.streamed:
        raise TlxError(
            f"--views {n}: the training rows are streamed from disk (over --max-memory), and views are not: "
            "raise --max-memory, or pass --views 0"
        )
    if not meta.n_views:
        raise TlxError(f"--views {n}: {meta.path} has no augmented views; run `tlx extract DATA --views {n}` first")
    got = load_views(meta.snapshot or meta.path, data.train, n)  # training rows only, of the version loaded
    assert isinstance(got.X, np.ndarray) and isinstance(data.Xtr, np.ndarray)
    data.Xtr = np.concatenate([data.Xtr, got.X])
    data.ytr = np.concatenate([data.ytr, data.ytr[got.image]])
    data.train_group = np.concatenate([np.arange(len(data.train)), got.image])
    data.views = {"per_image": n, "recipe": got.recipe.get("name", ""), "n_rows": len(got)}


def drop_excluded(meta: Features, sides: dict[str, np.ndarray], split_info: dict, exclude, log) -> dict:
    """``sides`` (side -> rows) without the images the ``exclude`` files list, recorded in
    ``split_info["excluded"]``. A file is ``tlx audit``'s audit.json, a JSON list of paths, or one
    path per line; paths are relative to the data set's root, or absolute under it. The split is
    drawn first, so the other images keep their side."""
    if not exclude:
        return sides
    listed = _read_exclusions(exclude)
    root = Path(meta.dataset_root)
    under_root = {p: Path(p).is_absolute() and Path(p).is_relative_to(root) for p in listed}
    wanted = {Path(p).relative_to(root).as_posix() if inside else p for p, inside in under_root.items()}
    hit = np.array([p in wanted for p in meta.paths], dtype=bool)
    if listed and not hit.any():
        raise TlxError(
            f"none of the {len(listed)} images in --exclude {', '.join(map(str, exclude))} are in {meta.path}: "
            f"was it written for another data set? (paths are relative to {root})"
        )
    unknown = len(wanted - {meta.paths[i] for i in np.flatnonzero(hit)})
    if unknown:
        log(f"note: {unknown} of the {len(wanted)} --exclude images are not in {meta.path} (moved or not extracted)")
    kept = {side: rows[~hit[rows]] for side, rows in sides.items()}
    dropped = {f"n_{side}": int(len(sides[side]) - len(kept[side])) for side in sides}
    split_info["excluded"] = {
        "files": [str(Path(f).resolve()) for f in exclude],
        **dropped,
        "paths": sorted(meta.paths[i] for i in np.flatnonzero(hit)),
    }
    log("excluded " + ", ".join(f"{n} {side[2:]}" for side, n in dropped.items()) + " images")
    return kept


def _read_exclusions(files) -> list[str]:
    listed: list[str] = []
    for file in files:
        file = Path(file)
        try:
            text = file.read_text()
        except OSError as exc:
            raise TlxError(
                f"--exclude {file}: cannot read it ({exc.strerror or exc}): pass audit.json or a list of paths"
            ) from None
        if file.suffix.lower() != ".json":
            listed += [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
            continue
        try:
            data = json.loads(text)
        except ValueError:
            raise TlxError(f"--exclude {file} is not valid JSON: pass the audit.json that `tlx audit` wrote") from None
        paths = data.get("exclude") if isinstance(data, dict) else data
        if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
            raise TlxError(
                f'--exclude {file}: expected audit.json from `tlx audit` (an "exclude" list) or a JSON list of paths'
            )
        listed += paths
    return listed


def check_training_set(meta: Features, train: np.ndarray, val: np.ndarray, test=()) -> None:
    where = f"in {meta.path}"
    present = np.unique(meta.y[train])
    if len(present) < 2:
        found = f"only class {meta.classes[present[0]]!r}" if len(present) else "no images"
        raise DatasetError(
            f"the training split {where} has {found}: a head needs at least 2 classes with training images"
        )
    missing = [meta.classes[c] for c in range(len(meta.classes)) if c not in set(present.tolist())]
    if missing:
        raise DatasetError(
            f"class {missing[0]!r} has no training images {where}: add some to its train folder or remove the class"
        )
    if len(val) == 0 and len(test) == 0:
        raise DatasetError(
            f"the validation split {where} is empty: add images to val/ (or test/), or use data without a split"
        )
