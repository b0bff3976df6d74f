"""The linear head's objective, weighted softmax cross-entropy plus L2, evaluated block by block
with the standardization folded into the weights, so the training matrix (in memory or streamed
from disk) is never copied."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from .lbfgs import minimize_lbfgs

BLOCK_ROWS = 65536  # rows per block: bounds the logits' memory at BLOCK_ROWS x C floats


def l2_normalize(X: np.ndarray) -> np.ndarray:
    return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)


class SoftmaxProblem:
    """The loss ``sum(w_i * ce_i) / n + lam / 2 * ||W||^2`` (``w_i = 1`` without weights) of
    ``targets``, class indices in ``range(n_classes)``."""

    def __init__(
        self,
        X: np.ndarray,
        targets: np.ndarray,
        n_classes: int,
        weights: np.ndarray | None = None,
        l2norm: bool = False,
        block_rows: int = BLOCK_ROWS,
    ):
        self.X, self.targets, self.n_classes = X, np.asarray(targets, dtype=np.int64), int(n_classes)
        self.weights = None if weights is None else np.asarray(weights, dtype=np.float64)
        self.l2norm, self.block_rows = l2norm, int(block_rows)
        if hasattr(X, "block_rows"):  # streamed from disk: blocks of the reader's size (64 MiB)
            self.block_rows = min(self.block_rows, X.block_rows())
        self.n, self.d = X.shape
        self.shift = np.zeros(self.d, np.float32)
        self.scale = np.ones(self.d, np.float32)

    def blocks(self) -> Iterator[tuple[slice, np.ndarray]]:
        """``(rows, float32 block)``: slices of an array, or the blocks a ``CacheRows`` reads."""
        if hasattr(self.X, "blocks"):
            source = self.X.blocks(self.block_rows)
        else:
            source = ((slice(s, min(s + self.block_rows, self.n)), None) for s in range(0, self.n, self.block_rows))
        for rows, block in source:
            X = self.X[rows] if block is None else block
            yield rows, (l2_normalize(X).astype(np.float32) if self.l2norm else X)

    def standardize(self) -> None:
        """Per-feature mean and standard deviation in one pass (float64 sums); a constant feature
        keeps a scale of 1."""
        total, squares = np.zeros(self.d), np.zeros(self.d)
        for _, X in self.blocks():
            total += X.sum(axis=0, dtype=np.float64)
            squares += np.einsum("ij,ij->j", X, X, dtype=np.float64)
        mean = total / self.n
        std = np.sqrt(np.maximum(squares / self.n - mean * mean, 0.0))
        self.shift = mean.astype(np.float32)
        self.scale = np.where(std > 1e-6 * np.maximum(np.abs(mean), 1.0), std, 1.0).astype(np.float32)

    def value_and_grad(self, W: np.ndarray, b: np.ndarray, lam: float) -> tuple[float, np.ndarray, np.ndarray]:
        """Loss and its gradient with respect to the standardized-space ``W`` (C x D) and ``b``."""
        W_raw = (W / self.scale).astype(np.float32)  # weights on the raw features
        b_raw = (b - W_raw.astype(np.float64) @ self.shift).astype(np.float32)
        loss, grad_raw, grad_b = 0.0, np.zeros((self.n_classes, self.d)), np.zeros(self.n_classes)
        for rows, X in self.blocks():
            logits = X @ W_raw.T + b_raw
            logits -= logits.max(axis=1, keepdims=True)
            np.exp(logits, out=logits)
            total = logits.sum(axis=1, keepdims=True)
            y = self.targets[rows]
            picked = logits[np.arange(len(y)), y]
            w = np.ones(len(y)) if self.weights is None else self.weights[rows]
            loss -= float(np.dot(w, np.log(np.maximum(picked / total[:, 0], 1e-300))))
            logits /= total  # now the probabilities
            logits[np.arange(len(y)), y] -= 1.0  # now d(ce)/d(logits)
            logits *= (w / self.n)[:, None].astype(np.float32)
            grad_raw += (X.T @ logits).T  # this order runs as one BLAS call on a C-ordered X
            grad_b += logits.sum(axis=0, dtype=np.float64)
        # Chain rule back through the folded standardization.
        grad_W = (grad_raw - np.outer(grad_b, self.shift)) / self.scale + lam * W
        return loss / self.n + 0.5 * lam * float(np.sum(W * W)), grad_W, grad_b

    def loss(self, W: np.ndarray, b: np.ndarray, lam: float) -> float:
        return self.value_and_grad(W.astype(np.float64), b.astype(np.float64), lam)[0]

    def fit(
        self, lam: float, max_iter: int, tol: float, x0: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, int]:
        """``(W, b, iterations)`` by numpy L-BFGS from ``x0`` (W then b, flattened; zeros when None
        or of another shape); the final loss is kept in ``last_loss``."""
        c, d = self.n_classes, self.d

        def fun(theta: np.ndarray) -> tuple[float, np.ndarray]:
            value, grad_W, grad_b = self.value_and_grad(theta[: c * d].reshape(c, d), theta[c * d :], lam)
            return value, np.concatenate([grad_W.ravel(), grad_b])

        start = x0 if x0 is not None and x0.shape == (c * d + c,) else np.zeros(c * d + c)
        result = minimize_lbfgs(fun, start, max_iter=max_iter, gtol=tol)
        self.last_loss = float(result.fun)
        return result.x[: c * d].reshape(c, d), result.x[c * d :], result.n_iter


def fit_torch(
    problem: SoftmaxProblem, lam: float, max_iter: int, tol: float, device: str
) -> tuple[np.ndarray, np.ndarray, int]:
    """The same objective by ``torch.optim.LBFGS`` on ``device``; the data is standardized once
    on the device, where that is fast, rather than folded into the weights."""
    import torch

    dev = torch.device(device)
    X = torch.cat([torch.from_numpy(np.ascontiguousarray(block)).to(dev) for _, block in problem.blocks()])
    X = (X - torch.from_numpy(problem.shift).to(dev)) / torch.from_numpy(problem.scale).to(dev)
    y = torch.from_numpy(problem.targets).to(dev)
    w = None if problem.weights is None else torch.from_numpy(problem.weights.astype(np.float32)).to(dev)
    W = torch.zeros(problem.n_classes, problem.d, device=dev, requires_grad=True)
    b = torch.zeros(problem.n_classes, device=dev, requires_grad=True)
    opt = torch.optim.LBFGS(
        [W, b],
        lr=1.0,
        max_iter=max_iter,
        tolerance_grad=tol,
        tolerance_change=1e-9,
        history_size=10,
        line_search_fn="strong_wolfe",
    )

    def closure():
        opt.zero_grad(set_to_none=False)
        ce = torch.nn.functional.cross_entropy(torch.addmm(b, X, W.t()), y, reduction="none")
        loss = (ce * w).sum() / problem.n if w is not None else ce.mean()
        loss = loss + 0.5 * lam * (W * W).sum()
        loss.backward()
        return loss

    opt.step(closure)
    n_iter = int(opt.state[opt._params[0]].get("n_iter", 0))
    return W.detach().cpu().numpy().astype(np.float64), b.detach().cpu().numpy().astype(np.float64), n_iter
