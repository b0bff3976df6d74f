"""Fused feature spaces: caches of the same images, matched by content hash and concatenated side
by side; an image some cache lacks is reported, and each column is standardized on the training
rows so that no block dominates a distance or kernel head by scale alone."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ...cache.features import Features, load_features, resolve_cache
from ...errors import DatasetError, TlxError

FUSION_FILE = "fusion.safetensors"  # the per-column mean and scale of the fused space
SHOWN = 5  # missing images named in a message


@dataclass
class Fusion:
    """What a fused run records: one block per cache, and the images some cache lacks."""

    blocks: list[dict]  # {cache, feature_space, width, weights_path}, in column order
    missing: list[dict] = field(default_factory=list)  # {cache, n, paths (the first few)}
    mean: np.ndarray | None = None  # set once the training rows are known
    scale: np.ndarray | None = None

    def record(self) -> dict:
        return {"blocks": self.blocks, "missing": self.missing, "standardization": FUSION_FILE}

    def standardize(self, X: np.ndarray, train: np.ndarray) -> None:
        """Each column to zero mean and unit variance over the training rows, in place."""
        rows = X[train]
        self.mean = rows.mean(axis=0, dtype=np.float64).astype(np.float32)
        std = rows.std(axis=0, dtype=np.float64).astype(np.float32)
        self.scale = np.where(std > 0, std, np.float32(1.0)).astype(np.float32)
        X -= self.mean
        X /= self.scale

    def save(self, run_dir: Path) -> None:
        from safetensors.numpy import save_file

        assert self.mean is not None and self.scale is not None
        save_file({"mean": self.mean, "scale": self.scale}, str(Path(run_dir) / FUSION_FILE))


def load_standardization(run_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    from safetensors.numpy import load_file

    path = Path(run_dir) / FUSION_FILE
    if not path.is_file():
        raise TlxError(f"{path} is missing: the fused run is incomplete; fit it again")
    arrays = load_file(str(path))
    return arrays["mean"], arrays["scale"]


def _read(meta: Features, rows: np.ndarray) -> np.ndarray:
    """``meta.X[rows]`` in the order given (a CacheRows reads sorted unique rows)."""
    unique = np.unique(rows)
    block = meta.X[unique] if isinstance(meta.X, np.ndarray) else meta.X.subset(unique).to_array()
    return block[np.searchsorted(unique, rows)]


def _missing(metas: list[Features], row_of: list[dict[str, int]], log) -> list[dict]:
    """Per cache, the images (by content) that another cache holds and this one does not."""
    path_of: dict[str, str] = {}
    for meta in metas:
        for h, p in zip(meta.sha256, meta.paths, strict=True):
            path_of.setdefault(h, p)
    report = []
    for meta, rows in zip(metas, row_of, strict=True):
        lacking = sorted(path_of[h] for h in path_of.keys() - rows.keys())
        if lacking:
            shown = ", ".join(lacking[:SHOWN]) + (f" and {len(lacking) - SHOWN} more" if len(lacking) > SHOWN else "")
            log(
                f"warning: {len(lacking)} image(s) are not in {meta.path.name} ({shown}); they are left out of the "
                f"fused fit: run `tlx extract` with that cache's backbone again to include them"
            )
            report.append({"cache": str(meta.path), "n": len(lacking), "paths": lacking[:100]})
    return report


def load_fused(features: list, log=lambda _msg: None) -> tuple[Features, Fusion]:
    """The rows every cache holds, their features side by side (first cache's order, paths,
    labels and split), and what to record about the fusion."""
    paths = [resolve_cache(f) for f in features]
    if len({p.resolve() for p in paths}) < len(paths):
        raise TlxError("--features names the same cache twice: fuse caches of different feature spaces")
    metas = [load_features(p, lazy=True) for p in paths]
    spaces = [m.space.key for m in metas]
    if len(set(spaces)) < len(spaces):
        raise TlxError("two of the --features caches hold the same feature space: fuse different ones")
    row_of = [{h: i for i, h in reversed(list(enumerate(m.sha256)))} for m in metas]  # the first row of a content
    ref = metas[0]
    keep = np.array([i for i, h in enumerate(ref.sha256) if all(h in r for r in row_of[1:])], dtype=np.int64)
    missing = _missing(metas, row_of, log)
    if not len(keep):
        raise DatasetError(
            f"the --features caches have no image in common (by content): they were made from different data; "
            f"extract the same DATA with each backbone ({', '.join(p.name for p in paths)})"
        )
    blocks, columns = [], []
    ref_labels = [ref.classes[c] for c in ref.y[keep]]
    for meta, rows_by_hash in zip(metas, row_of, strict=True):
        rows = np.array([rows_by_hash[ref.sha256[i]] for i in keep], dtype=np.int64)
        labels = [meta.classes[c] for c in meta.y[rows]]
        wrong = [i for i, (a, b) in enumerate(zip(ref_labels, labels, strict=True)) if a != b]
        if wrong:
            raise DatasetError(
                f"{ref.paths[keep[wrong[0]]]} is class {ref_labels[wrong[0]]!r} in {ref.path.name} but "
                f"{labels[wrong[0]]!r} in {meta.path.name}: fuse caches of the same labelled data"
            )
        columns.append(_read(meta, rows))
        blocks.append(
            {
                "cache": str(Path(meta.path).resolve()),
                "feature_space": meta.space.to_dict(),
                "width": int(meta.space.feature_dim),
                "weights_path": meta.attrs.get("weights_path", ""),
            }
        )
    X = np.concatenate(columns, axis=1)
    fused = replace(ref.subset(keep), X=X)  # ref is lazy: the subset reads no feature
    log(f"features: {' + '.join(p.name for p in paths)}, fused: {len(keep)} images x {X.shape[1]}")
    return fused, Fusion(blocks, missing)
