"""A small L-BFGS minimizer in numpy for the linear head's smooth, strongly convex objective.

Not ``scipy.optimize``: its import costs about half of ``fit-head --clf linear``'s start-up
budget (torch's, seconds). The textbook method is enough here: the two-loop recursion (Nocedal &
Wright, algorithm 7.4) and a backtracking Armijo line search; tests compare it with scipy's.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

HISTORY = 10  # curvature pairs kept
MAX_BACKTRACKS = 30  # halvings of a step before giving up
FTOL = 1e-9  # stop when an iteration lowers the value by less than this, relative to it
Objective = Callable[[np.ndarray], tuple[float, np.ndarray]]  # theta -> (value, gradient)


@dataclass
class LbfgsResult:
    x: np.ndarray
    fun: float
    n_iter: int
    converged: bool


def minimize_lbfgs(
    fun: Objective,
    x0: np.ndarray,
    max_iter: int = 200,
    gtol: float = 1e-4,
) -> LbfgsResult:
    """Minimize ``fun`` from ``x0``. Stops when the largest gradient entry is at most ``gtol``
    (as torch's ``LBFGS(tolerance_grad)`` and scipy's ``gtol``), when an iteration lowers the
    value by less than ``FTOL`` relative to it, or after ``max_iter`` iterations."""
    x = np.array(x0, dtype=np.float64)
    f, g = fun(x)
    pairs: deque[tuple[np.ndarray, np.ndarray, float]] = deque(maxlen=HISTORY)  # (s, y, 1 / y.s)
    for it in range(1, max_iter + 1):
        if np.max(np.abs(g)) <= gtol:
            return LbfgsResult(x, f, it - 1, True)
        d = -_two_loop(g, pairs)
        slope = float(g @ d)
        if slope >= 0:  # not a descent direction (rounding): restart from steepest descent
            pairs.clear()
            d, slope = -g, -float(g @ g)
        step = 1.0 if pairs else min(1.0, 1.0 / max(np.sum(np.abs(g)), 1e-12))
        for _ in range(MAX_BACKTRACKS):
            x_new = x + step * d
            f_new, g_new = fun(x_new)
            if np.isfinite(f_new) and f_new <= f + 1e-4 * step * slope:
                break
            step *= 0.5
        else:
            return LbfgsResult(x, f, it, False)  # no decrease possible at this precision
        s, y = x_new - x, g_new - g
        sy = float(s @ y)
        if sy > 1e-10 * float(y @ y):  # keep the curvature pair only where it is positive
            pairs.append((s, y, 1.0 / sy))
        decrease = f - f_new
        x, f, g = x_new, f_new, g_new
        if decrease <= FTOL * max(abs(f), 1.0):
            return LbfgsResult(x, f, it, True)
    return LbfgsResult(x, f, max_iter, np.max(np.abs(g)) <= gtol)


def _two_loop(g: np.ndarray, pairs: deque) -> np.ndarray:
    """The product of the L-BFGS inverse-Hessian approximation with ``g``."""
    q = g.copy()
    alphas = []
    for s, y, rho in reversed(pairs):
        a = rho * float(s @ q)
        q -= a * y
        alphas.append(a)
    if pairs:
        s, y, _ = pairs[-1]
        q *= float(s @ y) / float(y @ y)
    for (s, y, rho), a in zip(pairs, reversed(alphas), strict=False):
        q += (a - rho * float(y @ q)) * s
    return q
