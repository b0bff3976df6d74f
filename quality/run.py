"""``tlx.audit``: what is wrong with a data set, found from its feature cache alone (no image
is read again): exact and near duplicates, likely label errors, outliers, images that failed
to decode, and the class balance per split. ``AuditReport.write`` saves ``audit.json`` and
``audit.png``."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..cache.features import Features, load_features
from .duplicates import NEAR_THRESHOLD, exact_duplicates, hash_groups, near_duplicates
from .label_issues import MAX_FOLDS, label_issues, neighbor_vote, out_of_fold_proba
from .neighbors import (
    SEARCH_DIMS,
    candidate_pairs,
    clustered_neighbors,
    is_large,
    neighbor_pass,
    normalize_rows,
    principal_basis,
    project,
    rescore,
    row_mean,
    unit,
)
from .outliers import failed_images, find_outliers

NEIGHBORS = 10
LABEL_DIMS = 256  # the label model's features on large data: the top principal directions
LARGE_FOLDS = 5  # and its folds there: each fold's head sees 80% of many images


@dataclass
class AuditReport:
    cache: str
    dataset_root: str
    classes: list[str]
    n_images: int
    counts: dict  # split -> class -> images
    exact_duplicates: list[dict]
    near_duplicates: list[dict]
    label_issues: list[dict]  # {path, given, suggested, score, ...}, most likely first
    outliers: list[dict]
    failed: list[dict]
    exclude: list[str]  # what `fit-head --exclude audit.json` leaves out (see ``exclusions``)
    settings: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"tool": "tlx audit", **asdict(self)}

    def write(self, out: str | Path) -> dict:
        """``out/audit.json`` and ``out/audit.png``; returns their paths."""
        import json

        from .gallery import plot_audit

        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "audit.json").write_text(json.dumps(self.to_dict(), indent=1) + "\n")
        shown = plot_audit(self, out / "audit.png")
        return {"json": str(out / "audit.json"), "png": str(out / "audit.png"), "missing_images": shown["missing"]}


def audit(
    features: Features | str | Path | None = None,
    near_threshold: float = NEAR_THRESHOLD,
    neighbors: int = NEIGHBORS,
    views: bool = True,
    seed: int = 0,
    log: Callable[[str], None] | None = None,
) -> AuditReport:
    """Audit a feature cache (a file, a folder = its newest cache, None = the default folder, or
    loaded ``Features``). ``views``: score each held-out image on its stored augmented views too."""
    log = log or (lambda _msg: None)
    feats = features if isinstance(features, Features) else load_features(features)
    t0 = time.perf_counter()
    X = feats.X
    group = hash_groups(feats.sha256)
    large = is_large(*X.shape)
    found, projected = _neighbours(X, group, large, neighbors, near_threshold, seed)
    log(f"neighbours of {len(feats)} images in {time.perf_counter() - t0:.1f} s")
    n_classes = len(feats.classes)
    # Copies share one group, so a fold never holds an image in both its halves.
    image_group = np.where(group >= 0, group, len(group) + np.arange(len(group)))
    # On large data the label model fits the top principal directions, without views (time and memory).
    use_views = views and feats.n_views > 0 and not large
    lin, folds = out_of_fold_proba(
        projected if large else X,
        feats.y,
        n_classes,
        image_group,
        feats.views() if use_views else None,
        seed,
        max_folds=LARGE_FOLDS if large else MAX_FOLDS,
    )
    knn = neighbor_vote(found.index, found.similarity, feats.y, n_classes)
    issues = label_issues(feats.y, lin, knn, folds)
    log(f"label issues from {folds}-fold linear heads and a {neighbors}-neighbour vote ({issues.method})")
    report = AuditReport(
        cache=str(feats.path),
        dataset_root=feats.dataset_root,
        classes=list(feats.classes),
        n_images=len(feats),
        counts=class_counts(feats),
        exact_duplicates=exact_duplicates(group, feats),
        near_duplicates=near_duplicates(found.pairs, found.pair_similarity, feats),
        label_issues=issue_records(issues, feats),
        outliers=find_outliers(found.similarity, feats),
        failed=failed_images(feats),
        exclude=[],
        settings={
            "near_threshold": near_threshold,
            "neighbors": neighbors,
            "folds": folds,
            "views": feats.n_views if use_views else 0,
            "label_method": issues.method,
            "search_dims": SEARCH_DIMS if large else int(X.shape[1]),
            "label_dims": LABEL_DIMS if large else int(X.shape[1]),
            "seconds": round(time.perf_counter() - t0, 3),
        },
    )
    report.exclude = exclusions(report)
    return report


def _neighbours(X, group: np.ndarray, large: bool, neighbors: int, near_threshold: float, seed: int):
    """``(neighbours, projected rows or None)``: exact, block by block, on small data; on large data
    a search on the top principal directions, the pairs re-scored on the full rows (neighbors.py)."""
    mean = row_mean(X)
    if not large:
        return neighbor_pass(normalize_rows(X, mean), neighbors, near_threshold, group), None
    projected = project(X, mean, principal_basis(X, mean, LABEL_DIMS, seed))
    found = clustered_neighbors(unit(projected[:, :SEARCH_DIMS]), neighbors, group, seed)
    found.pairs, found.pair_similarity = rescore(X, mean, candidate_pairs(found.index), near_threshold)
    return found, projected


def issue_records(issues, feats: Features) -> list[dict]:
    """audit.json's ``label_issues``: score = 1 - the probability of the given label."""
    return [
        {
            "path": feats.paths[r],
            "given": feats.classes[int(g)],
            "suggested": feats.classes[int(s)],
            "score": round(float(1.0 - p), 4),
            "p_given": round(float(p), 4),
            "split": feats.split[r],
        }
        for r, g, s, p in zip(issues.rows, issues.given, issues.suggested, issues.score, strict=True)
    ]


def class_counts(feats: Features) -> dict:
    """``{split: {class: images}}`` ("all" for data without a split)."""
    splits = sorted({s or "all" for s in feats.split})
    tags = np.array([s or "all" for s in feats.split], dtype=object)
    n_classes = len(feats.classes)
    counts = {s: np.bincount(feats.y[tags == s], minlength=n_classes) for s in splits}
    return {s: {c: int(n) for c, n in zip(feats.classes, counts[s], strict=True)} for s in splits}


def exclusions(report: AuditReport) -> list[str]:
    """The images ``fit-head --exclude audit.json`` leaves out: every likely label error and
    outlier; of byte-identical or near copies, those in train when the set spans splits (the
    leak goes, val stays whole), all of them when their labels disagree, all but the first
    otherwise (one copy is kept)."""
    drop = {i["path"] for i in report.label_issues} | {o["path"] for o in report.outliers}
    for finding in report.exact_duplicates + report.near_duplicates:
        paths, splits = finding["paths"], finding["splits"]
        if finding["kind"] == "across splits":
            drop.update(p for p, s in zip(paths, splits, strict=True) if s in ("train", ""))
        elif finding["kind"] == "across classes":
            drop.update(paths)
        else:
            drop.update(paths[1:])
    return sorted(drop)
