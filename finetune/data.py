"""Images for fine-tuning: the dataset, the train/val split (stage two's, or with --init-head
and --resume exactly the earlier run's), the transforms and the loaders.

Workers decode and crop to uint8 tensors (as in stage one); normalization runs on the device.
Training augmentation is a random resized crop plus a horizontal flip; evaluation uses the
backbone's own preprocessing. Unreadable images are skipped, not fatal.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler

from ..cache.space import Preprocessing
from ..errors import DatasetError, TlxError
from ..extractor.decode import load_image
from ..extractor.discovery import DatasetIndex
from ..extractor.engine import ImageFiles, collate_skipping_failures, lower_priority
from ..extractor.preprocess import ResizeCrop

# Milder than torchvision's default (0.08, 1): a few epochs on a small dataset.
CROP_SCALE = (0.25, 1.0)


class TrainTransform:
    """Path -> augmented uint8 tensor (3, S, S): RandomResizedCrop(S) + horizontal flip."""

    def __init__(self, pre: Preprocessing):
        from torchvision import transforms

        self.min_size = 2 * pre.resize_size
        self.transform = transforms.Compose(
            [
                transforms.RandomResizedCrop(
                    pre.input_size, scale=CROP_SCALE, interpolation=transforms.InterpolationMode(pre.interpolation)
                ),
                transforms.RandomHorizontalFlip(),
                transforms.PILToTensor(),
            ]
        )

    def load(self, path) -> torch.Tensor:
        return self.transform(load_image(path, min_size=self.min_size))


@dataclass
class SplitData:
    """Absolute paths and integer labels of the training and validation images."""

    train_paths: list[str]
    train_labels: np.ndarray
    val_paths: list[str]
    val_labels: np.ndarray
    classes: list[str]
    info: dict = field(default_factory=dict)  # how the split was made, with its members' val_sha256
    excluded: list[str] = field(default_factory=list)  # unreadable: part of neither side


@dataclass
class _Rows:
    """The readable images of a dataset with what the split keys on."""

    items: list
    labels: np.ndarray
    hashes: list[str]
    excluded: list[str]

    @property
    def tags(self) -> list[str]:
        return [it.split for it in self.items]


def _readable_rows(index: DatasetIndex, exclude: frozenset[str] | set[str]) -> _Rows:
    """Every image minus those extraction could not read and those that cannot be read now, with content hashes."""
    hashes, unreadable = hash_items(index)
    keep = [k for k, it in enumerate(index.items) if it.relpath not in exclude and it.relpath not in unreadable]
    class_of = {c: k for k, c in enumerate(index.classes)}
    items = [index.items[k] for k in keep]
    labels = np.array([class_of[it.label] for it in items], dtype=np.int64)
    excluded = [it.relpath for it in index.items if it.relpath in exclude or it.relpath in unreadable]
    return _Rows(items, labels, [str(hashes[k]) for k in keep], excluded)  # unreadable files have no hash


def hash_items(index: DatasetIndex) -> tuple[list[str | None], dict[str, str]]:
    """Content hash of every image (what the split keys on); unreadable files become failures."""
    from ..common.hashing import sha256_file

    hashes: list[str | None] = []
    failed: dict[str, str] = {}
    for item in index.items:
        try:
            hashes.append(sha256_file(index.abspath(item)))
        except FileNotFoundError:
            hashes.append(None)
            failed[item.relpath] = "file not found (a dangling link, or deleted while running)"
        except OSError as exc:
            hashes.append(None)
            failed[item.relpath] = f"cannot read: {exc.strerror or exc}"
    return hashes, failed


def _split_data(index: DatasetIndex, rows: _Rows, train_idx, val_idx, info: dict) -> SplitData:
    train_idx, val_idx = np.asarray(train_idx, dtype=np.int64), np.asarray(val_idx, dtype=np.int64)
    absolute = [str(index.abspath(it)) for it in rows.items]
    info = {**info, "val_sha256": sorted(rows.hashes[i] for i in val_idx)}
    return SplitData(
        [absolute[i] for i in train_idx],
        rows.labels[train_idx],
        [absolute[i] for i in val_idx],
        rows.labels[val_idx],
        list(index.classes),
        info,
        rows.excluded,
    )


def split_dataset(
    index: DatasetIndex, val_fraction: float, seed: int, exclude: frozenset[str] | set[str] = frozenset()
) -> SplitData:
    """Split exactly as stage two does: ``tlx.heads.training.split.split_indices`` on the content hashes
    of the images a cache of this dataset holds (the readable ones)."""
    from ..heads.training.split import split_indices

    rows = _readable_rows(index, exclude)
    paths = [it.relpath for it in rows.items]
    train_idx, val_idx, info = split_indices(
        paths, rows.labels, rows.tags, val_fraction, seed, hashes=rows.hashes, classes=list(index.classes)
    )
    return _split_data(index, rows, train_idx, val_idx, info)


def split_by_members(
    index: DatasetIndex,
    val_sha256: list[str],
    info: dict,
    whose: str,
    fix: str,
    exclude: frozenset[str] | set[str] = frozenset(),
    cache_path: Path | None = None,
) -> SplitData:
    """Validate on exactly the images whose content is in ``val_sha256`` (an earlier split's
    val side); train on every other usable image, so nothing trained on before can score.

    "test" rows are never used, and when the earlier split was the data's own, neither are
    "val" rows it did not have. Refuses, naming how many and which (by its path in
    ``cache_path`` when the cache still lists it), when any is missing."""
    rows = _readable_rows(index, exclude)
    wanted = set(val_sha256)
    missing = sorted(wanted - set(rows.hashes))
    if missing:
        first = _path_in_cache(cache_path, missing[0]) or f"the one with sha256 {missing[0][:16]}..."
        raise DatasetError(
            f"{len(missing)} of the {len(wanted)} validation images of {whose} are no longer in {index.root} "
            f"(removed, unreadable or changed; first: {first}): fine-tuning validates on exactly those images "
            f"so that none of its training images can score; {fix}"
        )
    unused = {"test", "val"} if info.get("source") == "data" else {"test"}
    val_idx = [i for i, h in enumerate(rows.hashes) if h in wanted]
    pairs = enumerate(zip(rows.hashes, rows.tags, strict=True))
    train_idx = [i for i, (h, tag) in pairs if h not in wanted and tag not in unused]
    return _split_data(index, rows, train_idx, val_idx, info)


def _path_in_cache(cache_path: Path | None, content_hash: str) -> str | None:
    from ..cache.index import read_index

    try:
        cached = read_index(Path(cache_path)) if cache_path is not None else None
    except TlxError:
        return None
    if cached is None or content_hash not in cached.hashes:
        return None
    return cached.paths[cached.hashes.index(content_hash)]


def train_loader(
    paths,
    pre: Preprocessing,
    batch_size: int,
    workers: int,
    augment: bool,
    seed: int,
    rank: int,
    world: int,
    pin_memory: bool,
) -> tuple[DataLoader, DistributedSampler]:
    """Shuffled by a DistributedSampler in every case (``num_replicas=1`` alone), so one process
    and N processes see the same global order; call ``sampler.set_epoch(epoch)`` each epoch."""
    dataset = ImageFiles(paths, TrainTransform(pre) if augment else ResizeCrop(pre))
    sampler: DistributedSampler = DistributedSampler(
        dataset, num_replicas=world, rank=rank, shuffle=True, seed=seed, drop_last=False
    )
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        collate_fn=collate_skipping_failures,
        pin_memory=pin_memory,
        prefetch_factor=4 if workers else None,
        persistent_workers=False,
        worker_init_fn=None if pin_memory else lower_priority,  # on CPU, decoding yields to the training step
        # Reseeded each epoch: the workers' augmentation seeds depend on (seed, epoch, rank) only.
        generator=torch.Generator(),
    )
    return loader, sampler


def eval_loader(paths, pre: Preprocessing, batch_size: int, workers: int, pin_memory: bool) -> DataLoader:
    """In order, no sampler: each process passes its own shard ``paths[rank::world]``."""
    return DataLoader(
        ImageFiles(paths, ResizeCrop(pre)),
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        collate_fn=collate_skipping_failures,
        pin_memory=pin_memory,
        prefetch_factor=4 if workers else None,
        worker_init_fn=None if pin_memory else lower_priority,
    )


def cache_failures(dataset_root: Path, cache_path: Path | None) -> set[str]:
    """Relative paths that stage one recorded as unreadable in ``cache_path`` (if it is a cache of this dataset)."""
    if cache_path is None:
        return set()
    from ..cache.index import read_index

    try:
        idx = read_index(Path(cache_path))
    except Exception:
        return set()
    if str(idx.attrs.get("dataset_root", "")) != str(dataset_root):
        return set()
    return set(idx.failed)
