"""``mlp``: scikit-learn's MLPClassifier with ``solver="lbfgs"``, computed in numpy.

A multi-layer perceptron (ReLU hidden layers, one of 256 by default), softmax output for three
or more classes and one logistic unit for two (as scikit-learn), trained full batch by the
numpy L-BFGS of ``heads/lbfgs.py`` on scikit-learn's objective: the (weighted) mean log loss
plus ``0.5 * alpha * ||W||^2 / sum(weights)`` over every weight matrix (the biases are not
penalized). Weights start from scikit-learn's Glorot-uniform draw with
``RandomState(seed)``, so both start from the same point. L-BFGS is scikit-learn's own advice
for small data sets, which cached-feature heads usually are.

Standardization is folded into the first layer instead of applied to a copy of X:
``((X - shift) / scale) @ W0 + b0 == X @ (W0 / scale[:, None]) + (b0 - shift @ (W0 / scale[:, None]))``.
The fitted weights (in standardized space) are saved as arrays, so loading needs neither
scikit-learn nor skops; importing ``sklearn.neural_network`` costs more than this fit.
"""

from __future__ import annotations

import contextlib
from numbers import Real

import numpy as np

from .base import Head, softmax, standardization
from .constraints import Range, Sizes
from .lbfgs import minimize_lbfgs
from .registry import register_head


def _expit(z: np.ndarray) -> np.ndarray:
    """The logistic function without overflow: exp only ever sees -|z|."""
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def _log_clipped(p: np.ndarray) -> np.ndarray:
    """log of probabilities clipped to [eps, 1 - eps], as scikit-learn's log losses do."""
    eps = np.finfo(p.dtype).eps
    return np.log(np.clip(p, eps, 1 - eps))


class MlpProblem:
    """The objective of scikit-learn's MLPClassifier on ``X`` (raw rows; ``shift`` / ``scale``
    standardize them inside the first layer). ``targets`` are class indices; ``theta`` is packed
    as scikit-learn packs it: every weight matrix (fan_in x fan_out, row-major), then every bias."""

    def __init__(self, X, targets, n_classes: int, hidden, alpha: float, weights=None, shift=None, scale=None):
        self.X = X
        n, d = X.shape
        n_out = 1 if n_classes == 2 else n_classes
        self.sizes = [d, *(int(h) for h in hidden), n_out]
        targets = np.asarray(targets, dtype=np.int64)
        if n_out == 1:
            self.Y = (targets == 1).astype(np.float64)[:, None]
        else:
            self.Y = np.zeros((n, n_out))
            self.Y[np.arange(n), targets] = 1.0
        self.weights = None if weights is None else np.asarray(weights, dtype=np.float64)
        self.total = float(n) if self.weights is None else float(self.weights.sum())
        self.alpha = float(alpha)
        self.shift = np.zeros(d) if shift is None else np.asarray(shift, dtype=np.float64)
        self.scale = np.ones(d) if scale is None else np.asarray(scale, dtype=np.float64)

    def unpack(self, theta: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
        coefs, intercepts, at = [], [], 0
        for fan_in, fan_out in zip(self.sizes[:-1], self.sizes[1:], strict=True):
            coefs.append(theta[at : at + fan_in * fan_out].reshape(fan_in, fan_out))
            at += fan_in * fan_out
        for fan_out in self.sizes[1:]:
            intercepts.append(theta[at : at + fan_out])
            at += fan_out
        return coefs, intercepts

    def initial(self, seed: int) -> np.ndarray:
        """scikit-learn's Glorot-uniform start (bound sqrt(6 / (fan_in + fan_out)) for ReLU),
        drawn in its order from ``RandomState(seed)``."""
        rng = np.random.RandomState(seed)
        coefs, intercepts = [], []
        for fan_in, fan_out in zip(self.sizes[:-1], self.sizes[1:], strict=True):
            bound = np.sqrt(6.0 / (fan_in + fan_out))
            coefs.append(rng.uniform(-bound, bound, (fan_in, fan_out)))
            intercepts.append(rng.uniform(-bound, bound, fan_out))
        return np.concatenate([a.ravel() for a in coefs + intercepts])

    def value_and_grad(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        coefs, intercepts = self.unpack(theta)
        X = self.X
        first = coefs[0] / self.scale[:, None]  # standardization folded into the first layer
        bias = intercepts[0] - self.shift @ first
        # The first product runs in X's precision (float32 for cached features), the rest in float64.
        z = (X @ first.astype(X.dtype)).astype(np.float64) + bias
        activations = []
        for W, b in zip(coefs[1:], intercepts[1:], strict=True):
            activations.append(np.maximum(z, 0.0))
            z = activations[-1] @ W + b
        if z.shape[1] == 1:
            p = _expit(z)
            rows = -(self.Y * _log_clipped(p) + (1 - self.Y) * _log_clipped(1 - p)).sum(axis=1)
        else:
            p = softmax(z)
            rows = -(self.Y * _log_clipped(p)).sum(axis=1)
        w = self.weights
        loss = float(rows.sum() if w is None else rows @ w) / self.total
        loss += 0.5 * self.alpha * sum(float(np.dot(W.ravel(), W.ravel())) for W in coefs) / self.total
        delta = p - self.Y  # d(loss)/d(z) of the output layer (softmax or logistic with log loss)
        if w is not None:
            delta *= w[:, None]
        grads_W, grads_b = [], []
        for layer in range(len(coefs) - 1, 0, -1):
            a = activations[layer - 1]
            grads_W.append((a.T @ delta + self.alpha * coefs[layer]) / self.total)
            grads_b.append(delta.sum(axis=0) / self.total)
            delta = (delta @ coefs[layer].T) * (a > 0)
        # First layer: the gradient on the raw features, taken back through the folded scaling.
        raw = (X.T @ delta.astype(X.dtype)).astype(np.float64)
        summed = delta.sum(axis=0)
        grads_W.append(
            ((raw - np.outer(self.shift, summed)) / self.scale[:, None] + self.alpha * coefs[0]) / self.total
        )
        grads_b.append(summed / self.total)
        grads = grads_W[::-1] + grads_b[::-1]
        return loss, np.concatenate([g.ravel() for g in grads])


SMALL_PRODUCT = 2e8  # multiply-adds of the first layer's product below which one BLAS thread is faster


def _one_blas_thread(size: float):
    """One BLAS thread for an L-BFGS run of many small matrix products: a second thread buys
    little there, and on a busy machine each product then waits for both threads to be
    scheduled (measured here: ants/bees' mlp fit 0.2 s with one thread, 1.7 s with two while
    other work ran). Large products keep every thread."""
    if size >= SMALL_PRODUCT:
        return contextlib.nullcontext()
    from threadpoolctl import threadpool_limits

    return threadpool_limits(1, user_api="blas")


class RowSpace:
    """The same objective in fewer unknowns when there are fewer rows than features (n < D, as
    with a few hundred images of 1280 features).

    The first layer's weights enter the loss only through ``Xs @ W0`` (``Xs`` the standardized
    rows), so only their part in the row space of ``Xs`` matters to the data; the rest is only
    penalized. With ``Q`` an orthonormal basis of that space (D x n) and ``R`` the rest of the
    starting weights, ``W0 = Q @ C + r * R / |R|``: every gradient of the rest is proportional
    to it (``alpha * R / n``), so L-BFGS keeps it on that one direction and a scalar ``r``
    carries it. ``(C, r)`` is solved as an n+1 wide first layer on ``[Xs @ Q, 0]`` (``r``
    sits on the all-zero input, so only the penalty sees it): the objective, the gradients'
    inner products and the start are those of the full problem, at n / D of its cost.
    """

    def __init__(self, X: np.ndarray, shift, scale, full: MlpProblem, start: np.ndarray):
        Xs = X.astype(np.float64)
        if shift is not None:
            Xs = (Xs - shift) / scale
        self.Q = np.linalg.qr(Xs.T)[0]  # D x n, orthonormal
        self.M = np.hstack([Xs @ self.Q, np.zeros((len(X), 1))])
        self.full = full
        coefs, intercepts = full.unpack(start)
        C = self.Q.T @ coefs[0]
        self.rest = coefs[0] - self.Q @ C
        self.norm = float(np.linalg.norm(self.rest))
        extra = np.zeros((1, C.shape[1]))
        extra[0, 0] = self.norm
        self.start = np.concatenate([a.ravel() for a in [np.vstack([C, extra]), *coefs[1:], *intercepts]])

    def problem(self, targets, n_classes: int, hidden, alpha: float, weights) -> MlpProblem:
        return MlpProblem(self.M, targets, n_classes, hidden, alpha, weights)

    def lift(self, theta: np.ndarray) -> np.ndarray:
        """Reduced weights -> the full problem's packing (first layer D x H again)."""
        first = theta[: self.M.shape[1] * self.full.sizes[1]].reshape(self.M.shape[1], -1)
        W0 = self.Q @ first[:-1]
        if self.norm > 0:
            W0 += (first[-1, 0] / self.norm) * self.rest
        return np.concatenate([W0.ravel(), theta[first.size :]])


@register_head(
    "mlp",
    main_param="alpha",
    grid=np.logspace(1, -5, 7).tolist(),
    description="MLPClassifier (scikit-learn's model, ReLU, L-BFGS in numpy), standardized",
    constraints={"alpha": [Range(Real, 0, None, "left")], "hidden_layer_sizes": [Sizes()]},
)
class MlpHead(Head):
    """scikit-learn's MLPClassifier(solver="lbfgs") on standardized features: ReLU hidden layers
    (one of 256 by default), L2 penalty ``alpha``, at most ``max_iter`` L-BFGS iterations;
    ``class_weight="balanced"`` weighs each row by n / (k * n_class)."""

    shift_: np.ndarray | None
    scale_: np.ndarray | None

    def __init__(
        self,
        alpha: float = 1e-2,
        hidden_layer_sizes: tuple = (256,),
        max_iter: int = 200,
        tol: float = 1e-4,
        standardize: bool = True,
        class_weight=None,
        seed: int = 0,
    ):
        self.alpha = alpha
        self.hidden_layer_sizes = hidden_layer_sizes
        self.max_iter = max_iter
        self.tol = tol
        self.standardize = standardize
        self.class_weight = class_weight
        self.seed = seed

    def tensor_names(self) -> tuple:
        layers = len(tuple(self.hidden_layer_sizes)) + 1
        return (
            *(f"coef_{i}" for i in range(layers)),
            *(f"intercept_{i}" for i in range(layers)),
            "shift_",
            "scale_",
        )

    def _fit(self, X: np.ndarray, y: np.ndarray) -> None:
        shift, scale = standardization(X) if self.standardize else (None, None)
        targets, weights = np.searchsorted(self.classes_, y), self._class_weights(y)
        hidden, alpha = tuple(self.hidden_layer_sizes), float(self.alpha)
        problem = MlpProblem(X, targets, len(self.classes_), hidden, alpha, weights, shift, scale)
        start = problem.initial(int(self.seed))
        with _one_blas_thread(len(X) * min(X.shape) * max(hidden)):
            if len(X) < X.shape[1]:  # fewer rows than features: solve in the rows' span (RowSpace)
                space = RowSpace(X, shift, scale, problem, start)
                solver = space.problem(targets, len(self.classes_), hidden, alpha, weights)
                result = minimize_lbfgs(solver.value_and_grad, space.start, int(self.max_iter), float(self.tol))
                theta = space.lift(result.x)
            else:
                result = minimize_lbfgs(problem.value_and_grad, start, int(self.max_iter), float(self.tol))
                theta = result.x
        self.loss_, self.n_iter_ = float(result.fun), result.n_iter
        coefs, intercepts = problem.unpack(theta)
        for i, (W, b) in enumerate(zip(coefs, intercepts, strict=True)):
            setattr(self, f"coef_{i}", W.astype(np.float32))
            setattr(self, f"intercept_{i}", b.astype(np.float32))
        self.shift_, self.scale_ = shift, scale

    def _layers(self) -> list[tuple[np.ndarray, np.ndarray]]:
        count = len(tuple(self.hidden_layer_sizes)) + 1
        return [(getattr(self, f"coef_{i}"), getattr(self, f"intercept_{i}")) for i in range(count)]

    def arrays_fit(self, n_classes: int, width: int) -> bool:
        sizes = [width, *tuple(self.hidden_layer_sizes), 1 if n_classes == 2 else n_classes]
        try:
            layers = self._layers()
        except AttributeError:
            return False
        for (W, b), fan_in, fan_out in zip(layers, sizes[:-1], sizes[1:], strict=True):
            if W is None or b is None or W.shape != (fan_in, fan_out) or b.shape != (fan_out,):
                return False
        if self.shift_ is None or self.scale_ is None:
            return self.shift_ is None and self.scale_ is None
        return self.shift_.shape == (width,) and self.scale_.shape == (width,)

    def _predict_proba(self, X: np.ndarray) -> np.ndarray:
        out = np.empty((len(X), len(self.classes_)))
        for start in range(0, len(X), 65536):  # blocks bound the hidden activations' memory
            a = X[start : start + 65536]
            if self.shift_ is not None:
                a = (a - self.shift_) / self.scale_
            layers = self._layers()
            for W, b in layers[:-1]:
                a = np.maximum(a @ W + b, 0.0)
            z = (a @ layers[-1][0] + layers[-1][1]).astype(np.float64)
            if z.shape[1] == 1:
                p1 = _expit(z[:, 0])
                out[start : start + len(z)] = np.column_stack([1.0 - p1, p1])
            else:
                out[start : start + len(z)] = softmax(z)
        return out
