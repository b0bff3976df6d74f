"""The linear head's numpy solver: the gradient is right, the minimum is scipy's and torch's,
and the CPU fit does not import torch."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO

from tlx.heads.lbfgs import minimize_lbfgs
from tlx.heads.linear import LinearHead
from tlx.heads.linear_objective import SoftmaxProblem, fit_torch


def _blobs(n=600, d=32, c=4, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    X = (
        rng.normal(size=(c, d))[y] * 0.5
        + rng.normal(size=(n, d)) * rng.uniform(0.1, 5, size=d)
        + rng.normal(size=d) * 10
    )
    return X.astype(np.float32), y


@pytest.mark.parametrize("weighted", [False, True])
def test_gradient_matches_finite_differences(weighted):
    X, y = _blobs(n=120, d=6, c=3)
    weights = np.random.default_rng(1).uniform(0.5, 2, len(y)) if weighted else None
    problem = SoftmaxProblem(X, y, 3, weights, block_rows=50)  # several blocks
    problem.standardize()
    rng = np.random.default_rng(2)
    W, b = rng.normal(size=(3, 6)) * 0.3, rng.normal(size=3) * 0.3
    _, grad_W, grad_b = problem.value_and_grad(W, b, 0.1)
    eps = 1e-3
    for i, j in [(0, 0), (1, 3), (2, 5)]:
        up, down = W.copy(), W.copy()
        up[i, j] += eps
        down[i, j] -= eps
        numeric = (problem.value_and_grad(up, b, 0.1)[0] - problem.value_and_grad(down, b, 0.1)[0]) / (2 * eps)
        assert numeric == pytest.approx(grad_W[i, j], rel=1e-2, abs=1e-5)
    up_b = b.copy()
    up_b[1] += eps
    down_b = b.copy()
    down_b[1] -= eps
    numeric = (problem.value_and_grad(W, up_b, 0.1)[0] - problem.value_and_grad(W, down_b, 0.1)[0]) / (2 * eps)
    assert numeric == pytest.approx(grad_b[1], rel=1e-2, abs=1e-5)


def test_lbfgs_finds_the_minimum_of_a_quadratic():
    A = np.diag(np.linspace(1, 100, 20))
    target = np.arange(20, dtype=float)
    result = minimize_lbfgs(
        lambda x: (0.5 * (x - target) @ A @ (x - target), A @ (x - target)), np.zeros(20), gtol=1e-8
    )
    assert result.converged and np.allclose(result.x, target, atol=1e-6)


def test_numpy_fit_reaches_scipys_and_torchs_minimum():
    """Same objective, same standardization: the numpy L-BFGS fit, scipy's L-BFGS-B and torch's
    LBFGS agree on the loss to 1e-5 (relative) and on the weights to 5e-3 at the default tol."""
    from scipy.optimize import minimize

    X, y = _blobs()
    head = LinearHead(weight_decay=1e-2).fit(X, y)
    problem = SoftmaxProblem(X, y, 4)
    problem.standardize()
    c, d = 4, X.shape[1]

    def fun(theta):
        value, grad_W, grad_b = problem.value_and_grad(theta[: c * d].reshape(c, d), theta[c * d :], 1e-2)
        return value, np.concatenate([grad_W.ravel(), grad_b])

    ref = minimize(
        fun, np.zeros(c * d + c), jac=True, method="L-BFGS-B", options={"gtol": 1e-8, "ftol": 1e-15, "maxiter": 2000}
    )
    W_torch, b_torch, _ = fit_torch(problem, 1e-2, 200, 1e-4, "cpu")
    assert head.loss_ == pytest.approx(ref.fun, rel=1e-5)
    assert problem.loss(W_torch, b_torch, 1e-2) == pytest.approx(ref.fun, rel=1e-5)
    assert np.abs(head.coef_ - ref.x[: c * d].reshape(c, d)).max() < 5e-3
    assert np.abs(head.coef_ - W_torch).max() < 5e-3
    torch_pred = ((X - problem.shift) / problem.scale @ W_torch.T + b_torch).argmax(axis=1)
    assert np.mean(head.predict(X) == head.classes_[torch_pred]) > 0.99


def test_cpu_fit_does_not_import_torch():
    code = (
        "import sys, numpy as np\n"
        "from tlx.heads.linear import LinearHead\n"
        "X = np.random.default_rng(0).normal(size=(50, 8)).astype('float32'); y = np.arange(50) % 2\n"
        "LinearHead().fit(X, y).predict_proba(X)\n"
        "print(sorted(m for m in ('torch',) if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO.parent, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_streamed_blocks_give_the_in_memory_objective(tmp_path):
    import h5py

    from tlx.cache.rows import CacheRows

    X, y = _blobs(n=500, d=16, c=3)
    with h5py.File(tmp_path / "m.h5", "w") as f:
        f.create_dataset("features", data=X)
    rows = np.arange(0, 500, 2)
    memory = SoftmaxProblem(X[rows], y[rows], 3, block_rows=64)
    streamed = SoftmaxProblem(CacheRows(tmp_path / "m.h5", rows), y[rows], 3, block_rows=64)
    for problem in (memory, streamed):
        problem.standardize()
    np.testing.assert_allclose(streamed.shift, memory.shift)
    W_mem, _, _ = memory.fit(1e-2, 200, 1e-4)
    W_str, _, _ = streamed.fit(1e-2, 200, 1e-4)
    np.testing.assert_allclose(W_str, W_mem, atol=1e-6)
