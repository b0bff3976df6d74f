"""Valid values of head parameters, checked without importing scikit-learn.

The heads' own rules (``weight_decay >= 0``, ``kernel`` in {rbf, linear}) are written with the
small types here; they print the way scikit-learn's ``Interval`` and ``StrOptions`` do, so
every message reads alike. No head wraps a scikit-learn estimator any more, so these rules are
the only ones: checking a parameter never pays for importing scikit-learn.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any, cast


@dataclass(frozen=True)
class Range:
    """A number in ``[low, high]``; ``closed`` says which ends belong ("left", "right", "both",
    "neither"); ``None`` is an open end."""

    kind: type  # Integral or Real
    low: float | None
    high: float | None
    closed: str = "both"

    def accepts(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, self.kind):
            return False
        number = float(cast(float, value))
        if math.isnan(number):
            return False
        low, high = self.low, self.high
        left_in, right_in = self.closed in ("left", "both"), self.closed in ("right", "both")
        if low is not None and (number < low or (number == low and not left_in)):
            return False
        return not (high is not None and (number > high or (number == high and not right_in)))

    def __str__(self) -> str:
        name = "an int" if self.kind is Integral else "a float"
        low = "-inf" if self.low is None else (float(self.low) if self.kind is Real else self.low)
        high = "inf" if self.high is None else (float(self.high) if self.kind is Real else self.high)
        left = "[" if self.closed in ("left", "both") and self.low is not None else "("
        right = "]" if self.closed in ("right", "both") and self.high is not None else ")"
        return f"{name} in the range {left}{low}, {high}{right}"


@dataclass(frozen=True)
class OneOf:
    """One of a few strings."""

    options: frozenset

    def accepts(self, value: Any) -> bool:
        return isinstance(value, str) and value in self.options

    def __str__(self) -> str:
        return f"a str among {{{', '.join(repr(o) for o in sorted(self.options))}}}"


@dataclass(frozen=True)
class Sizes:
    """A non-empty tuple of positive ints (the mlp's ``hidden_layer_sizes``)."""

    def accepts(self, value: Any) -> bool:
        return (
            isinstance(value, (tuple, list))
            and len(value) > 0
            and all(isinstance(v, Integral) and not isinstance(v, bool) and int(v) >= 1 for v in value)
        )

    def __str__(self) -> str:
        return "one or more positive ints separated by commas"


def one_of(*options: str) -> OneOf:
    return OneOf(frozenset(options))


BOOLEAN = "boolean"

COMMON: dict[str, list] = {
    # Parameters that mean the same in every head that has them.
    "standardize": [BOOLEAN],
    "l2norm": [BOOLEAN],
    "class_weight": [one_of("balanced"), None],
    "seed": [Range(Integral, 0, 2**32 - 1)],
    "max_iter": [Range(Integral, 1, None, "left")],
    "warm_start": [BOOLEAN],
    "tol": [Range(Real, 0, None, "neither")],
    "weight_decay": [Range(Real, 0, None, "left")],
}


def satisfied(rule: list, value: Any) -> bool:
    """Whether ``value`` meets any constraint of ``rule``."""
    for constraint in rule:
        if constraint is None and value is None:
            return True
        if constraint == BOOLEAN and isinstance(value, bool):
            return True
        if isinstance(constraint, (Range, OneOf, Sizes)) and constraint.accepts(value):
            return True
    return False


def describe(rule: list) -> str:
    """``"a float in the range [0.0, inf)"``, ``"true or false"``, ... joined with "or"."""
    texts = ["true or false" if c == BOOLEAN else str(c) for c in rule if c is not None]
    return " or ".join(texts + (["None"] if None in rule else []))
