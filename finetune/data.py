"""Images for fine-tuning: the train/val split (stage two's, or exactly an earlier run's), the
augmentation and the loaders. Workers decode and crop to uint8 tensors; normalization runs on
the device. Unreadable images are skipped, not fatal."""

from __future__ import annotations

from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from ..cache.space import Preprocessing
from ..errors import DatasetError
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
        interpolation = transforms.InterpolationMode(pre.interpolation)
        self.transform = transforms.Compose(
            [
                transforms.RandomResizedCrop(pre.input_size, scale=CROP_SCALE, interpolation=interpolation),
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
    info: dict  # how the split was made, with its members' val_sha256


@dataclass
class _Rows:
    """The readable images of a dataset with what the split keys on: their content hashes."""

    index: DatasetIndex
    items: list
    hashes: list[str]

    def labels(self) -> np.ndarray:
        class_of = {c: k for k, c in enumerate(self.index.classes)}
        return np.array([class_of[it.label] for it in self.items], dtype=np.int64)

    def split(self, train_idx, val_idx, info: dict) -> SplitData:
        absolute, labels = [str(self.index.abspath(it)) for it in self.items], self.labels()
        info = {**info, "val_sha256": sorted(self.hashes[i] for i in val_idx)}
        train = [absolute[i] for i in train_idx]
        val = [absolute[i] for i in val_idx]
        classes = list(self.index.classes)
        return SplitData(train, labels[train_idx], val, labels[val_idx], classes, info)


def _readable_rows(index: DatasetIndex, exclude: set[str]) -> _Rows:
    """Every image minus those extraction could not read and those that cannot be read now."""
    from ..common.hashing import sha256_file

    rows = _Rows(index, [], [])
    for item in (it for it in index.items if it.relpath not in exclude):
        with suppress(OSError):  # a dangling link, a file deleted while running, no permission
            rows.hashes.append(sha256_file(index.abspath(item)))
            rows.items.append(item)
    return rows


def split_dataset(index: DatasetIndex, val_fraction: float, seed: int, exclude: set[str]) -> SplitData:
    """Split exactly as stage two does (``split_indices`` on the content hashes of the readable images)."""
    from ..heads.training.split import split_indices

    rows = _readable_rows(index, exclude)
    paths, tags = [it.relpath for it in rows.items], [it.split for it in rows.items]
    classes = list(index.classes)
    train_idx, val_idx, info = split_indices(
        paths, rows.labels(), tags, val_fraction, seed, hashes=rows.hashes, classes=classes
    )
    return rows.split(train_idx, val_idx, info)


def split_by_members(
    index: DatasetIndex, earlier: dict, whose: str, fix: str, exclude: set[str], cache_path: Path | None
) -> SplitData:
    """Validate on exactly the images of an earlier split's ``val_sha256``; train on every other
    usable image, so nothing trained on before can score. "test" rows are never used, nor "val"
    rows when the earlier split was the data's own. Refuses when any is missing, naming the first
    by its path in ``cache_path`` where the cache still lists it."""
    rows = _readable_rows(index, exclude)
    wanted = set(earlier["val_sha256"])
    missing = sorted(wanted - set(rows.hashes))
    if missing:
        first = _path_in_cache(cache_path, missing[0]) or f"the one with sha256 {missing[0][:16]}..."
        raise DatasetError(
            f"{len(missing)} of the {len(wanted)} validation images of {whose} are no longer in {index.root} "
            f"(removed, unreadable or changed; first: {first}): fine-tuning validates on exactly those images "
            f"so that none of its training images can score; {fix}"
        )
    unused = {"test", "val"} if earlier.get("source") == "data" else {"test"}
    val_idx = [i for i, h in enumerate(rows.hashes) if h in wanted]
    train_idx = [i for i, it in enumerate(rows.items) if rows.hashes[i] not in wanted and it.split not in unused]
    return rows.split(train_idx, val_idx, earlier)


def _cache_index(cache_path: Path | None):
    """The index of ``cache_path``; None where there is none or it cannot be read."""
    from ..cache.index import read_index

    try:
        return read_index(Path(cache_path)) if cache_path is not None else None
    except Exception:
        return None


def _path_in_cache(cache_path: Path | None, content_hash: str) -> str | None:
    cached = _cache_index(cache_path)
    return dict(zip(cached.hashes, cached.paths, strict=True)).get(content_hash) if cached is not None else None


def _loader(dataset: Dataset, batch_size: int, workers: int, pin_memory: bool, **order) -> DataLoader:
    return DataLoader(
        dataset,
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=collate_skipping_failures,
        pin_memory=pin_memory,
        prefetch_factor=4 if workers else None,
        worker_init_fn=None if pin_memory else lower_priority,  # on CPU, decoding yields to the training step
        **order,
    )


def train_loader(
    paths, pre: Preprocessing, batch_size: int, workers: int, augment: bool, seed: int, rank: int, world: int, pin: bool
) -> tuple[DataLoader, DistributedSampler]:
    """Shuffled by a DistributedSampler in every case (``num_replicas=1`` alone), so one process
    and N processes see the same global order; call ``sampler.set_epoch(epoch)`` each epoch."""
    dataset = ImageFiles(paths, TrainTransform(pre) if augment else ResizeCrop(pre))
    sampler: DistributedSampler = DistributedSampler(dataset, num_replicas=world, rank=rank, seed=seed)
    # Reseeded each epoch: the workers' augmentation seeds depend on (seed, epoch, rank) only.
    return _loader(dataset, batch_size, workers, pin, sampler=sampler, generator=torch.Generator()), sampler


def eval_loader(paths, pre: Preprocessing, batch_size: int, workers: int, pin_memory: bool) -> DataLoader:
    """In order, no sampler: each process passes its own shard ``paths[rank::world]``."""
    return _loader(ImageFiles(paths, ResizeCrop(pre)), batch_size, workers, pin_memory, shuffle=False)


def cache_failures(dataset_root: Path, cache_path: Path | None) -> set[str]:
    """Relative paths that stage one recorded as unreadable in ``cache_path`` (if it is a cache of this dataset)."""
    idx = _cache_index(cache_path)
    if idx is None or str(idx.attrs.get("dataset_root", "")) != str(dataset_root):
        return set()
    return set(idx.failed)
