"""The default head: softmax (multinomial logistic) regression fitted in torch.

Full-batch L-BFGS with a strong-Wolfe line search on the whole cached matrix in float32,
minimizing ``mean cross-entropy + weight_decay / 2 * ||W||^2`` (the bias is not decayed).
Two classes still get a two-way softmax (a C x D weight), so the head drops into the
backbone as an ``nn.Linear(D, C)``. torch is imported only inside ``fit``; the fitted head
predicts with numpy.
"""

from __future__ import annotations

import numpy as np

from tlx.heads.base import Head, NotExportableError, softmax
from tlx.heads.registry import register_head


@register_head("linear", main_param="weight_decay", grid=np.logspace(0, -6, 7).tolist(),
               description="softmax regression in torch, full-batch L-BFGS (default)")
class LinearHead(Head):
    """Softmax regression in torch, full-batch L-BFGS, L2 weight decay."""

    _tensors = ("coef_", "intercept_", "shift_", "scale_")

    def __init__(self, weight_decay: float = 1e-3, standardize: bool = True, l2norm: bool = False,
                 class_weight=None, max_iter: int = 200, tol: float = 1e-4, device: str = "cpu"):
        self.weight_decay = weight_decay
        self.standardize = standardize
        self.l2norm = l2norm
        self.class_weight = class_weight
        self.max_iter = max_iter
        self.tol = tol
        self.device = device

    @classmethod
    def prepare(cls) -> None:
        # The first torch.optim optimizer in a process imports torch._dynamo (seconds on a small
        # CPU); do it before the timer starts.
        import torch

        torch.optim.LBFGS([torch.zeros(1, requires_grad=True)])

    def _transform(self, X: np.ndarray) -> np.ndarray:
        if self.l2norm:
            X = X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
        if self.shift_ is not None:
            X = (X - self.shift_) / self.scale_
        return X

    def _fit(self, X: np.ndarray, y: np.ndarray) -> None:
        import torch

        if self.weight_decay < 0 or self.max_iter < 1 or self.tol <= 0:
            raise ValueError("weight_decay must be >= 0, max_iter >= 1 and tol > 0")
        self.shift_ = self.scale_ = None
        if self.l2norm:
            X = X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
        if self.standardize:
            self.shift_ = X.mean(axis=0).astype(np.float32)
            std = X.std(axis=0).astype(np.float32)
            self.scale_ = np.where(std > 1e-12, std, 1.0).astype(np.float32)
            X = (X - self.shift_) / self.scale_
        index = {c: i for i, c in enumerate(self.classes_.tolist())}
        targets = np.fromiter((index[v] for v in y.tolist()), dtype=np.int64, count=len(y))
        weights = self._class_weights(y)

        device = torch.device(self.device)
        Xt = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32)).to(device)
        yt = torch.from_numpy(targets).to(device)
        wt = None if weights is None else torch.from_numpy(weights.astype(np.float32)).to(device)
        n, d = Xt.shape
        c = len(self.classes_)
        W = torch.zeros(c, d, dtype=torch.float32, device=device, requires_grad=True)
        b = torch.zeros(c, dtype=torch.float32, device=device, requires_grad=True)
        lam = float(self.weight_decay)
        opt = torch.optim.LBFGS([W, b], lr=1.0, max_iter=int(self.max_iter), tolerance_grad=float(self.tol),
                                tolerance_change=1e-9, history_size=10, line_search_fn="strong_wolfe")

        def objective():
            logits = torch.addmm(b, Xt, W.t())
            ce = torch.nn.functional.cross_entropy(logits, yt, reduction="none")
            loss = (ce * wt).sum() / n if wt is not None else ce.mean()
            return loss + 0.5 * lam * (W * W).sum()

        def closure():
            opt.zero_grad(set_to_none=False)
            loss = objective()
            loss.backward()
            return loss

        opt.step(closure)
        state = opt.state[opt._params[0]]
        self.n_iter_ = int(state.get("n_iter", 0))
        with torch.no_grad():
            self.loss_ = float(objective().item())
        self.coef_ = W.detach().cpu().numpy().astype(np.float32)
        self.intercept_ = b.detach().cpu().numpy().astype(np.float32)

    def _predict_proba(self, X: np.ndarray) -> np.ndarray:
        return softmax(self._transform(X) @ self.coef_.T + self.intercept_)

    def decision_function(self, X) -> np.ndarray:
        return self._transform(self._check_X(X)) @ self.coef_.T + self.intercept_

    def linear_form(self):
        if not hasattr(self, "coef_"):
            self._check_X(np.zeros((1, 1), np.float32))  # raises "not fitted"
        if self.l2norm:
            raise NotExportableError(
                "this linear head L2-normalizes each feature row (l2norm=true), which has no linear form: "
                "refit with --param l2norm=false to export it"
            )
        return self.coef_.astype(np.float32), self.intercept_.astype(np.float32), self.shift_, self.scale_
