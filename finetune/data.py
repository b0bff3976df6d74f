"""Images for fine-tuning: the dataset, the same train/val split as stage two, the transforms
and the loaders.

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

from tlx.extractor.config import Preprocessing
from tlx.extractor.dataset import DatasetIndex
from tlx.extractor.decode import load_image
from tlx.extractor.engine import ImageFiles, collate_skipping_failures, lower_priority
from tlx.extractor.preprocess import ResizeCrop

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
    info: dict = field(default_factory=dict)
    excluded: list[str] = field(default_factory=list)  # failed in the cache: not part of the split


def split_dataset(index: DatasetIndex, val_fraction: float, seed: int, exclude: set[str] = frozenset()) -> SplitData:
    """Split exactly as stage two does: ``tlx.heads.split.split_indices`` on the rows a cache
    of this dataset holds (sorted by path, minus the images extraction could not read)."""
    from tlx.heads.split import split_indices

    items = [it for it in index.items if it.relpath not in exclude]
    excluded = [it.relpath for it in index.items if it.relpath in exclude]
    class_of = {c: k for k, c in enumerate(index.classes)}
    labels = np.array([class_of[it.label] for it in items], dtype=np.int64)
    paths = [it.relpath for it in items]
    train_idx, val_idx, info = split_indices(
        paths, labels, [it.split for it in items], val_fraction=val_fraction, seed=seed
    )
    train_idx, val_idx = np.asarray(train_idx, dtype=np.int64), np.asarray(val_idx, dtype=np.int64)
    absolute = [str(index.abspath(it)) for it in items]
    return SplitData(
        [absolute[i] for i in train_idx],
        labels[train_idx],
        [absolute[i] for i in val_idx],
        labels[val_idx],
        list(index.classes),
        dict(info) if isinstance(info, dict) else {"split": info},
        excluded,
    )


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
    sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=seed, drop_last=False)
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
        generator=torch.Generator(),  # reseeded each epoch: worker augmentation seeds depend on (seed, epoch, rank) only
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
    from tlx.extractor.store import read_index

    try:
        idx = read_index(Path(cache_path))
    except Exception:
        return set()
    if str(idx.attrs.get("dataset_root", "")) != str(dataset_root):
        return set()
    return set(idx.failed)
