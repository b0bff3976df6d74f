"""``svm``: scikit-learn's SVC (libsvm's C-SVC) with Platt-calibrated probabilities, in numpy.

* **Solver**: libsvm's SMO with its second-order working-set selection (Fan, Chen & Lin 2005,
  "Working set selection using second order information"), its update and clipping rules, its
  stopping rule (the maximal violating pair closer than ``tol`` = 1e-3) and its bias (the mean
  over free support vectors). No shrinking: it changes the path, not the solution.
* **Kernels**: rbf ``exp(-gamma * |x - x'|^2)`` and linear ``x . x'``; ``gamma="scale"`` is
  ``1 / (D * X.var())`` of the rows fitted, ``"auto"`` is ``1 / D``. The Gram matrix of the
  training rows is computed once (float32, as libsvm caches its kernel) and every fold and
  class pair takes its block, so a fit holds at most ``MAX_ROWS`` rows (above, an svm is the
  wrong tool anyway: its fit grows with the square of the rows; ``linear`` and ``logreg`` scale).
* **Classes**: one-vs-one like libsvm, one binary SVC per pair with ``C`` scaled per class by
  ``class_weight``; the decision function has scikit-learn's one-vs-rest shape (votes plus
  scaled confidences) for three or more classes.
* **Probabilities**: scikit-learn's ``CalibratedClassifierCV(SVC(), method="sigmoid",
  ensemble=False)``: decision values of stratified k-fold models (``k = min(5, smallest
  class)``, the same folds for the same ``seed``) fitted to Platt's sigmoid per class by the
  Newton method of Lin, Lin & Weng (2007), the SVC refitted on every row.

Importing ``sklearn.svm`` and ``sklearn.calibration`` costs more than this whole fit, and a
head made of arrays loads without scikit-learn or skops.
"""

from __future__ import annotations

from numbers import Real

import numpy as np

from .base import Head, HeadError, standardization
from .constraints import Range, one_of
from .registry import register_head
from .training.split import stratified_folds

MAX_ROWS = 20_000  # training rows: the float32 Gram matrix takes MAX_ROWS^2 * 4 bytes (1.6 GB)
TAU = 1e-12  # libsvm's floor for a non-positive curvature
PREDICT_BLOCK = 4096  # query rows per kernel block


def smo(K: np.ndarray, y: np.ndarray, C: np.ndarray, tol: float = 1e-3) -> tuple[np.ndarray, float, int]:
    """libsvm's C-SVC dual: minimize ``a' Q a / 2 - sum(a)`` with ``Q = y y' * K``,
    ``0 <= a <= C`` and ``y' a = 0``. ``y`` holds +1 / -1; returns ``(alpha, rho, iterations)``
    with the decision function ``sum(alpha * y * K(x_i, x)) - rho``."""
    n = len(y)
    y = y.astype(np.float64)
    alpha = np.zeros(n)
    yG = -y  # y * gradient; the gradient starts at -1
    diag = np.diag(K).astype(np.float64)
    # I_up: rows whose alpha may move so that y * alpha grows; I_low: so that it shrinks.
    up, low = y > 0, y < 0
    max_iter = max(1_000_000, 100 * n)
    for it in range(max_iter):
        i = int(np.argmax(np.where(up, -yG, -np.inf)))
        g_max = -yG[i]
        g_max2 = np.max(np.where(low, yG, -np.inf))
        if not up[i] or g_max + g_max2 < tol:
            return alpha, _rho(alpha, yG, y, C), it
        Ki = K[i].astype(np.float64)
        grad_diff = g_max + yG
        quad = diag[i] + diag - 2.0 * Ki
        quad[quad <= 0] = TAU
        gain = np.where(low & (grad_diff > 0), -(grad_diff * grad_diff) / quad, np.inf)
        j = int(np.argmin(gain))
        if not np.isfinite(gain[j]):
            return alpha, _rho(alpha, yG, y, C), it
        a_i, a_j = _update_pair(alpha[i], alpha[j], y[i], y[j], y[i] * yG[i], y[j] * yG[j], quad[j], C[i], C[j])
        d_i, d_j = a_i - alpha[i], a_j - alpha[j]
        alpha[i], alpha[j] = a_i, a_j
        yG += Ki * (y[i] * d_i) + K[j].astype(np.float64) * (y[j] * d_j)
        for t in (i, j):
            up[t] = alpha[t] < C[t] if y[t] > 0 else alpha[t] > 0
            low[t] = alpha[t] > 0 if y[t] > 0 else alpha[t] < C[t]
    return alpha, _rho(alpha, yG, y, C), max_iter


def _update_pair(a_i, a_j, y_i, y_j, G_i, G_j, quad, C_i, C_j) -> tuple[float, float]:
    """libsvm's two-variable step (``Solver::Solve``), clipped to the box as libsvm clips it."""
    if y_i != y_j:
        delta = (-G_i - G_j) / quad
        diff = a_i - a_j
        a_i, a_j = a_i + delta, a_j + delta
        if diff > 0:
            if a_j < 0:
                a_j, a_i = 0.0, diff
        elif a_i < 0:
            a_i, a_j = 0.0, -diff
        if diff > C_i - C_j:
            if a_i > C_i:
                a_i, a_j = C_i, C_i - diff
        elif a_j > C_j:
            a_j, a_i = C_j, C_j + diff
        return a_i, a_j
    delta = (G_i - G_j) / quad
    total = a_i + a_j
    a_i, a_j = a_i - delta, a_j + delta
    if total > C_i:
        if a_i > C_i:
            a_i, a_j = C_i, total - C_i
    elif a_j < 0:
        a_j, a_i = 0.0, total
    if total > C_j:
        if a_j > C_j:
            a_j, a_i = C_j, total - C_j
    elif a_i < 0:
        a_i, a_j = 0.0, total
    return a_i, a_j


def _rho(alpha: np.ndarray, yG: np.ndarray, y: np.ndarray, C: np.ndarray) -> float:
    """libsvm's bias: the mean of y * G over free support vectors, else the middle of the
    feasible interval."""
    upper, lower = alpha >= C, alpha <= 0
    free = ~upper & ~lower
    if free.any():
        return float(yG[free].mean())
    ub_rows = (upper & (y < 0)) | (lower & (y > 0))
    lb_rows = (upper & (y > 0)) | (lower & (y < 0))
    ub = yG[ub_rows].min() if ub_rows.any() else np.inf
    lb = yG[lb_rows].max() if lb_rows.any() else -np.inf
    return float((ub + lb) / 2)


def platt(f: np.ndarray, positive: np.ndarray, max_iter: int = 100, eps: float = 1e-8) -> tuple[float, float]:
    """Platt's sigmoid ``P(positive | f) = 1 / (1 + exp(A f + B))`` with his smoothed targets,
    fitted by the Newton method with backtracking of Lin, Lin & Weng (2007, algorithm 1)."""
    f = np.asarray(f, dtype=np.float64)
    prior1 = float(positive.sum())
    prior0 = len(f) - prior1
    t = np.where(positive, (prior1 + 1.0) / (prior1 + 2.0), 1.0 / (prior0 + 2.0))

    def value(A: float, B: float) -> float:
        z = f * A + B
        return float(np.sum(t * z + np.logaddexp(0.0, -z)))

    A, B = 0.0, float(np.log((prior0 + 1.0) / (prior1 + 1.0)))
    current = value(A, B)
    for _ in range(max_iter):
        p = np.exp(-np.logaddexp(0.0, f * A + B))  # 1 / (1 + exp(A f + B)), without overflow
        d2 = p * (1 - p)
        h11, h22, h21 = 1e-12 + float(f * f @ d2), 1e-12 + float(d2.sum()), float(f @ d2)
        d1 = t - p
        g1, g2 = float(f @ d1), float(d1.sum())
        if abs(g1) < eps and abs(g2) < eps:
            break
        det = h11 * h22 - h21 * h21
        dA, dB = -(h22 * g1 - h21 * g2) / det, -(-h21 * g1 + h11 * g2) / det
        slope = g1 * dA + g2 * dB
        step = 1.0
        while step >= 1e-10:
            candidate = value(A + step * dA, B + step * dB)
            if candidate < current + 1e-4 * step * slope:
                A, B, current = A + step * dA, B + step * dB, candidate
                break
            step /= 2
        else:
            break  # no decrease left at this precision
    return A, B


def ovr_decision(dec: np.ndarray, n_classes: int) -> np.ndarray:
    """scikit-learn's one-vs-rest view of one-vs-one decision values: each class's votes plus
    its summed confidences squashed into (-1/3, 1/3), so that they only break ties."""
    votes = np.zeros((len(dec), n_classes))
    confidence = np.zeros((len(dec), n_classes))
    pair = 0
    for i in range(n_classes):
        for j in range(i + 1, n_classes):
            confidence[:, i] += dec[:, pair]
            confidence[:, j] -= dec[:, pair]
            votes[dec[:, pair] >= 0, i] += 1
            votes[dec[:, pair] < 0, j] += 1
            pair += 1
    return votes + confidence / (3 * (np.abs(confidence) + 1))


def kernel_block(gram, sq, rows, cols, kernel: str, gamma: float) -> np.ndarray:
    """The kernel between training rows ``rows`` and ``cols``, from their Gram matrix ``gram``
    and squared norms ``sq`` (float32, as libsvm's kernel cache)."""
    G = gram[np.ix_(rows, cols)]
    if kernel == "linear":
        return G
    squared = np.maximum(sq[rows][:, None] + sq[cols][None, :] - 2.0 * G, 0.0)
    return np.exp(-gamma * squared).astype(np.float32)


class OvoModel:
    """One-vs-one C-SVCs in libsvm's layout: support vectors grouped by class (``n_support``
    per class), ``dual`` ((k - 1) x n_SV: for the pair (i, j), class i's coefficients in row
    j - 1 and class j's in row i) and ``intercept`` (one per pair, -rho)."""

    def __init__(self, support: np.ndarray, dual: np.ndarray, intercept: np.ndarray, n_support: np.ndarray):
        self.support, self.dual, self.intercept, self.n_support = support, dual, intercept, n_support

    @classmethod
    def fit(cls, kernel_of, t: np.ndarray, n_classes: int, C: np.ndarray, tol: float) -> OvoModel:
        """``kernel_of(positions)`` gives the kernel block of those rows; ``t`` their class
        indices; ``C`` the box bound of each class."""
        fitted = []
        is_sv = np.zeros(len(t), dtype=bool)
        for i in range(n_classes):
            for j in range(i + 1, n_classes):
                members = np.flatnonzero((t == i) | (t == j))
                sign = np.where(t[members] == i, 1.0, -1.0)
                alpha, rho, _ = smo(kernel_of(members), sign, np.where(sign > 0, C[i], C[j]), tol)
                fitted.append((members, alpha * sign, -rho))
                is_sv[members[alpha > 0]] = True
        support = np.flatnonzero(is_sv)
        support = support[np.argsort(t[support], kind="stable")]
        column = np.full(len(t), -1)
        column[support] = np.arange(len(support))
        dual = np.zeros((max(n_classes - 1, 1), len(support)))
        pairs = iter(fitted)
        for i in range(n_classes):
            for j in range(i + 1, n_classes):
                members, coef, _ = next(pairs)
                used = coef != 0
                dual[j - 1, column[members[used & (t[members] == i)]]] = coef[used & (t[members] == i)]
                dual[i, column[members[used & (t[members] == j)]]] = coef[used & (t[members] == j)]
        n_support = np.bincount(t[support], minlength=n_classes)
        return cls(support, dual, np.array([b for _, _, b in fitted]), n_support)

    def decision(self, Kq: np.ndarray) -> np.ndarray:
        """scikit-learn's ``SVC.decision_function`` from the kernel between the query rows and
        the support vectors: (n,) for two classes (positive: the second), else one-vs-rest (n, k)."""
        k = len(self.n_support)
        start = np.concatenate([[0], np.cumsum(self.n_support)])
        dec = np.empty((len(Kq), len(self.intercept)))
        pair = 0
        for i in range(k):
            for j in range(i + 1, k):
                si, sj = slice(start[i], start[i + 1]), slice(start[j], start[j + 1])
                dec[:, pair] = Kq[:, si] @ self.dual[j - 1, si] + Kq[:, sj] @ self.dual[i, sj] + self.intercept[pair]
                pair += 1
        return -dec[:, 0] if k == 2 else ovr_decision(dec, k)


@register_head(
    "svm",
    main_param="C",
    grid=np.logspace(-3, 3, 7).tolist(),
    description="SVC (scikit-learn's model, libsvm's SMO in numpy; rbf or linear, Platt probabilities), standardized",
    constraints={
        "C": [Range(Real, 0, None, "neither")],
        "kernel": [one_of("rbf", "linear")],
        "gamma": [one_of("scale", "auto"), Range(Real, 0, None, "neither")],
    },
)
class SvmHead(Head):
    """C-SVC, kernel rbf or linear, one-vs-one, with sigmoid (Platt) probabilities calibrated
    on out-of-fold decision values (``seed`` shuffles the folds)."""

    _tensors = (
        "support_vectors_",
        "dual_coef_",
        "intercept_",
        "n_support_",
        "gamma_",
        "calibration_",
        "shift_",
        "scale_",
    )

    shift_: np.ndarray | None
    scale_: np.ndarray | None

    def __init__(
        self,
        C: float = 1.0,
        kernel: str = "rbf",
        gamma: str = "scale",
        standardize: bool = True,
        class_weight=None,
        seed: int = 0,
    ):
        self.C = C
        self.kernel = kernel
        self.gamma = gamma
        self.standardize = standardize
        self.class_weight = class_weight
        self.seed = seed

    def _gamma(self, Z: np.ndarray) -> float:
        if self.kernel == "linear":
            return 0.0
        if self.gamma == "scale":
            var = float(Z.var(dtype=np.float64))
            return 1.0 / (Z.shape[1] * var) if var > 0 else 1.0
        if self.gamma == "auto":
            return 1.0 / Z.shape[1]
        return float(self.gamma)

    def _box(self, t: np.ndarray, k: int) -> np.ndarray:
        """C per class: scaled by n / (k * n_class) under ``class_weight="balanced"``."""
        if self.class_weight is None:
            return np.full(k, float(self.C))
        counts = np.bincount(t, minlength=k)
        return float(self.C) * len(t) / (k * np.maximum(counts, 1))

    def _fit_rows(self, Z, gram, sq, rows: np.ndarray, t: np.ndarray, k: int) -> tuple[OvoModel, float]:
        gamma = self._gamma(Z[rows])
        model = OvoModel.fit(
            lambda members: kernel_block(gram, sq, rows[members], rows[members], self.kernel, gamma),
            t[rows],
            k,
            self._box(t[rows], k),
            1e-3,
        )
        return model, gamma

    def _fit(self, X: np.ndarray, y: np.ndarray) -> None:
        n, k = len(y), len(self.classes_)
        if n > MAX_ROWS:
            raise HeadError(
                f"an svm head fits at most {MAX_ROWS:,} training images (got {n:,}): its kernel matrix grows "
                "with their square; use --clf linear or --clf logreg for data this large"
            )
        t = np.searchsorted(self.classes_, y)
        smallest = int(np.bincount(t).min())
        if smallest < 2:
            raise HeadError("an svm head needs at least 2 training images per class to calibrate its probabilities")
        self.shift_, self.scale_ = standardization(X) if self.standardize else (None, None)
        Z = self._standardized(X)
        gram = Z @ Z.T
        sq = np.einsum("ij,ij->i", Z, Z, dtype=np.float64).astype(np.float32)
        scores = np.zeros((n, 1 if k == 2 else k))
        for train, test in stratified_folds(t, min(5, smallest), int(self.seed)):
            model, gamma = self._fit_rows(Z, gram, sq, train, t, k)
            Kq = kernel_block(gram, sq, test, train[model.support], self.kernel, gamma).astype(np.float64)
            scores[test] = model.decision(Kq).reshape(len(test), -1)
        positives = [t == 1] if k == 2 else [t == c for c in range(k)]
        self.calibration_ = np.array([platt(scores[:, c], positives[c]) for c in range(len(positives))])
        model, gamma = self._fit_rows(Z, gram, sq, np.arange(n), t, k)
        self.support_vectors_ = Z[model.support]
        self.dual_coef_, self.intercept_, self.n_support_ = model.dual, model.intercept, model.n_support
        self.gamma_ = np.array([gamma])

    def _standardized(self, X: np.ndarray) -> np.ndarray:
        Z = X if self.shift_ is None else (X - self.shift_) / self.scale_
        return np.ascontiguousarray(Z, dtype=np.float32)

    def _model(self) -> OvoModel:
        return OvoModel(np.arange(len(self.dual_coef_[0])), self.dual_coef_, self.intercept_, self.n_support_)

    def decision_function(self, X) -> np.ndarray:
        """scikit-learn's ``SVC.decision_function`` (standardized as in fit): (n,) for two
        classes, one-vs-rest (n, k) for more."""
        X = self._check_X(X)
        SV = self.support_vectors_.astype(np.float64)
        sv_sq = (SV * SV).sum(axis=1)
        gamma, model, parts = float(self.gamma_[0]), self._model(), []
        for start in range(0, len(X), PREDICT_BLOCK):
            Q = self._standardized(X[start : start + PREDICT_BLOCK]).astype(np.float64)
            Kq = Q @ SV.T
            if self.kernel != "linear":
                Kq = np.exp(-gamma * np.maximum((Q * Q).sum(axis=1)[:, None] + sv_sq[None, :] - 2.0 * Kq, 0.0))
            parts.append(model.decision(Kq))
        return np.concatenate(parts)

    def _predict_proba(self, X: np.ndarray) -> np.ndarray:
        scores = self.decision_function(X).reshape(len(X), -1)
        A, B = self.calibration_[:, 0], self.calibration_[:, 1]
        p = np.exp(-np.logaddexp(0.0, scores * A + B))  # Platt: 1 / (1 + exp(A f + B))
        if len(self.classes_) == 2:
            return np.column_stack([1.0 - p[:, 0], p[:, 0]])
        total = p.sum(axis=1, keepdims=True)
        uniform = np.full_like(p, 1.0 / p.shape[1])
        return np.divide(p, total, out=uniform, where=total > 0)

    def arrays_fit(self, n_classes: int, width: int) -> bool:
        SV, dual = getattr(self, "support_vectors_", None), getattr(self, "dual_coef_", None)
        n_support, calibration = getattr(self, "n_support_", None), getattr(self, "calibration_", None)
        if SV is None or dual is None or n_support is None or calibration is None or SV.ndim != 2:
            return False
        pairs = n_classes * (n_classes - 1) // 2
        return (
            SV.shape[1] == width
            and dual.shape == (max(n_classes - 1, 1), len(SV))
            and n_support.shape == (n_classes,)
            and int(n_support.sum()) == len(SV)
            and getattr(self, "intercept_", np.empty(0)).shape == (pairs,)
            and calibration.shape == (1 if n_classes == 2 else n_classes, 2)
        )
