"""``tlx.audit``: what is wrong with a data set, found from its feature cache alone (no image is
read again); ``AuditReport.write`` saves ``audit.json`` and ``audit.png``."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..cache.features import Features, load_features
from ..common.atomic import write_json_atomic
from .duplicates import NEAR_THRESHOLD, exact_duplicates, hash_groups, near_duplicates
from .label_issues import MAX_FOLDS, label_issues, neighbor_vote, out_of_fold_proba
from .neighbors import SEARCH_DIMS, find_neighbors
from .outliers import find_outliers

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
        from .gallery import plot_audit

        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out / "audit.json", self.to_dict())
        missing = plot_audit(self, out / "audit.png")
        return {"json": str(out / "audit.json"), "png": str(out / "audit.png"), "missing_images": missing}


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
    group = hash_groups(feats.sha256)
    found, projected = find_neighbors(feats.X, group, neighbors, near_threshold, LABEL_DIMS, seed)
    log(f"neighbours of {len(feats)} images in {time.perf_counter() - t0:.1f} s")
    large = projected is not None
    issues, view_rows = _label_issues(feats, group, found, projected, views, seed)
    log(f"label issues from {issues.folds}-fold linear heads and a {neighbors}-neighbour vote ({issues.method})")
    width = int(feats.X.shape[1])
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
        failed=[{"kind": "failed", "path": p, "reason": why} for p, why in sorted(feats.failed.items())],
        exclude=[],
        settings={
            "near_threshold": near_threshold,
            "neighbors": neighbors,
            "folds": issues.folds,
            "views": feats.n_views if view_rows is not None else 0,
            "label_method": issues.method,
            "search_dims": SEARCH_DIMS if large else width,
            "label_dims": LABEL_DIMS if large else width,
            "seconds": round(time.perf_counter() - t0, 3),
        },
    )
    report.exclude = exclusions(report)
    return report


def _label_issues(feats: Features, group: np.ndarray, found, projected, views: bool, seed: int):
    """``(LabelIssues, the view rows used or None)``: out-of-fold linear heads and the neighbour vote.
    On large data the heads fit the projected rows, without views (time and memory)."""
    large = projected is not None
    # Copies share one group, so a fold never holds an image in both its halves.
    image_group = np.where(group >= 0, group, len(group) + np.arange(len(group)))
    view_rows = feats.views() if views and feats.n_views > 0 and not large else None
    n_classes = len(feats.classes)
    rows, max_folds = (projected, LARGE_FOLDS) if large else (feats.X, MAX_FOLDS)
    lin, folds = out_of_fold_proba(rows, feats.y, n_classes, image_group, view_rows, seed, max_folds)
    knn = neighbor_vote(found.index, found.similarity, feats.y, n_classes)
    return label_issues(feats.y, lin, knn, folds), view_rows


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
