"""Running a frozen backbone over image files: DataLoader workers decode and resize while
the main process runs the forward pass under ``torch.inference_mode``."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..cache.space import pool_label
from ..common.device import check_device
from .decode import ImageDecodeError
from .discovery import not_regular
from .pooling import FeatureExtractor, stage_taps
from .preprocess import Normalize, ResizeCrop

PRECISIONS = ("fp32", "fp16", "bf16")


def resolve_device(device: str | None) -> torch.device:
    check_device(device)
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def default_workers() -> int:
    return min(4, os.cpu_count() or 1)


class ImageFiles(Dataset):
    """Index -> (index, uint8 image tensor or None, failure reason or '')."""

    def __init__(self, paths: Sequence[str], resize_crop: ResizeCrop | Any):
        # resize_crop: anything with load(path) -> uint8 tensor (fine-tuning passes its augmenting one)
        self.paths = list(paths)
        self.resize_crop = resize_crop

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        why = not_regular(self.paths[i])
        if why:  # a FIFO would block the worker forever
            return i, None, why
        try:
            return i, self.resize_crop.load(self.paths[i]), ""
        except ImageDecodeError as exc:
            return i, None, str(exc)
        except Exception as exc:  # a decoder bug must not stop the other images
            return i, None, f"cannot decode: {type(exc).__name__}: {exc}"


def lower_priority(_worker_id: int) -> None:
    """Decode at a lower CPU priority than the forward pass: it synchronizes its threads many
    times per batch, so one preempted by a decoder stalls all the others; niced workers run in
    the gaps instead, and the prefetch queue absorbs their delay."""
    with suppress(OSError):
        os.nice(19)


def collate_skipping_failures(batch):
    indices = [i for i, x, _ in batch if x is not None]
    images = torch.stack([x for _, x, _ in batch if x is not None]) if indices else torch.empty(0, dtype=torch.uint8)
    failures = [(i, reason) for i, x, reason in batch if x is None]
    return indices, images, failures


@dataclass
class Batch:
    indices: list[int]  # positions in the input list
    features: np.ndarray  # float32 (len(indices), D)
    failures: list[tuple[int, str]]
    meta: dict = field(default_factory=dict)  # position -> what a custom dataset adds (extract: hash, stat)
    views: list[tuple[int, int]] = field(default_factory=list)  # (position, view index) of each view row
    view_features: np.ndarray | None = None  # float32 (len(views), D)


class FeatureRunner:
    """A frozen feature extractor placed on a device, ready to run over file lists."""

    def __init__(
        self,
        backbone,
        pooling: str,
        device: str | None = "auto",
        precision: str = "fp32",
        stages: int = 0,
        engine: str = "eager",
        artefact_dir=None,
        note: Callable[[str], None] | None = None,
    ):
        from .engines import Artefacts, EngineSpec, ForwardPass

        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}")
        self.device = resolve_device(device)
        self.pre = backbone.cfg.preprocessing
        taps = stage_taps(backbone, stages)  # multi-stage pooling: the same forward pass, hooked
        self.model = FeatureExtractor(backbone.body, pooling, taps).eval().requires_grad_(False)
        self.normalize = Normalize(self.pre).to(self.device)
        # torch's stubs leave out Module.to's memory_format keyword, which it accepts
        self.model.to(self.device, memory_format=torch.channels_last)  # type: ignore[call-overload]
        cfg = backbone.cfg
        # The stages tap the same network: a compiled graph with taps is another artefact.
        label = pool_label(pooling, stages)
        spec = EngineSpec(cfg.name, cfg.weights_sha256, label, self.pre.input_size, self.device.type, precision)
        self.forward = ForwardPass(self.model, spec, engine, Artefacts(artefact_dir), note or (lambda _msg: None))

    @torch.inference_mode()
    def forward_uint8(self, images: torch.Tensor) -> np.ndarray:
        """Features of a uint8 batch (N, 3, S, S) already resized and cropped."""
        x = images.to(self.device, non_blocking=True)
        x = self.normalize(x).contiguous(memory_format=torch.channels_last)
        return self.forward(x).float().cpu().numpy()

    def run(
        self,
        paths: Sequence[str],
        batch_size: int = 32,
        workers: int | None = None,
        on_batch: Callable[[int], None] | None = None,
        files: Dataset | None = None,
        collate: Callable = collate_skipping_failures,
    ) -> Iterator[Batch]:
        """Batches of features of ``paths`` in order. ``files``/``collate`` replace the plain
        dataset (extract passes one that hashes the bytes it decodes; its collate adds a 4th
        field, returned as ``Batch.meta``)."""
        workers = default_workers() if workers is None else workers
        self.forward.plan(len(paths))
        loader = DataLoader(
            files if files is not None else ImageFiles(paths, ResizeCrop(self.pre)),
            batch_size=batch_size,
            num_workers=workers,
            collate_fn=collate,
            pin_memory=self.device.type == "cuda",
            prefetch_factor=4 if workers else None,
            worker_init_fn=lower_priority if self.device.type == "cpu" else None,
        )
        for indices, images, failures, *extra in loader:
            # A 5th field carries augmented views (extract --views): they share the forward pass
            # with the center crops, in slices of at most batch_size (the shape engines planned).
            keys, view_images = extra[1] if len(extra) > 1 else ([], None)
            feats, view_feats = np.empty((0, 0), np.float32), None
            if keys:
                both = torch.cat([images.reshape(-1, *view_images.shape[1:]), view_images])
                chunks = [self.forward_uint8(both[s : s + batch_size]) for s in range(0, len(both), batch_size)]
                feats, view_feats = np.split(np.concatenate(chunks), [len(indices)])
            elif indices:
                feats = self.forward_uint8(images)
            if on_batch:
                on_batch(len(indices) + len(failures))
            yield Batch(indices, feats, failures, extra[0] if extra else {}, keys, view_feats)
