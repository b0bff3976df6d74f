"""Registry of heads, in the manner of the backbone registry (``tlx.extractor.registry``).

A head is one class decorated with :func:`register_head`; the decorator records its main
regularization parameter and the log grid that ``--sweep`` searches. Grids run from the
strongest regularization to the weakest, so that a tie in validation accuracy goes to the
simpler model. Nothing here imports torch.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

from tlx.errors import TlxError

DEFAULT_HEAD = "linear"

_HEADS: dict[str, "HeadSpec"] = {}


class UnknownHeadError(TlxError):
    pass


class ParamError(TlxError):
    """A ``--param KEY=VALUE`` that names no parameter of the head, or whose value does not parse."""


@dataclass(frozen=True)
class HeadSpec:
    name: str
    cls: type
    main_param: str  # the regularization parameter that --sweep searches
    grid: tuple  # its values, strongest regularization first
    description: str

    def build(self, **params):
        return self.cls(**params)

    def defaults(self) -> dict[str, Any]:
        return self.cls().get_params()

    @property
    def exportable(self) -> bool:
        from tlx.heads.base import Head

        return self.cls.linear_form is not Head.linear_form

    @property
    def supports_class_weight(self) -> bool:
        return "class_weight" in inspect.signature(self.cls.__init__).parameters


def register_head(name: str, main_param: str, grid, description: str = ""):
    def decorate(cls: type) -> type:
        if name in _HEADS:
            raise ValueError(f"head {name!r} is registered twice")
        cls.name = name
        if main_param not in inspect.signature(cls.__init__).parameters:
            raise ValueError(f"head {name!r}: main parameter {main_param!r} is not an __init__ parameter")
        doc = description or (cls.__doc__ or "").strip().splitlines()[0]
        _HEADS[name] = HeadSpec(name, cls, main_param, tuple(grid), doc)
        return cls

    return decorate


def _ensure_builtins() -> None:
    from tlx.heads import linear, sklearn_heads  # noqa: F401  (register on import)


def list_heads() -> dict[str, str]:
    """Registered head names, each with a one-line description."""
    _ensure_builtins()
    return {name: spec.description for name, spec in _HEADS.items()}


def get_head(name: str) -> HeadSpec:
    _ensure_builtins()
    try:
        return _HEADS[name]
    except KeyError:
        raise UnknownHeadError(f"unknown head {name!r}: expected one of {', '.join(_HEADS)}") from None


def exportable_heads() -> list[str]:
    _ensure_builtins()
    return [name for name, spec in _HEADS.items() if spec.exportable]


# -- --param KEY=VALUE ---------------------------------------------------------------------------
_TRUE, _FALSE = {"true", "1", "yes", "on"}, {"false", "0", "no", "off"}


def parse_value(key: str, text: str, default: Any, head: str) -> Any:
    """Parse ``text`` with the type of the parameter's default value."""
    if not isinstance(text, str):
        return coerce_value(key, text, default, head)
    low = text.strip().lower()
    if low in {"none", "null"}:
        return None
    try:
        if isinstance(default, bool):
            if low in _TRUE:
                return True
            if low in _FALSE:
                return False
            raise ValueError
        if isinstance(default, int):
            return int(text)
        if isinstance(default, float):
            return float(text)
        if isinstance(default, tuple):
            return tuple(int(v) for v in text.replace("x", ",").split(",") if v.strip())
        if default is None:  # no type to go by: number if it looks like one
            for cast in (int, float):
                try:
                    return cast(text)
                except ValueError:
                    pass
        return text
    except ValueError:
        kind = type(default).__name__ if not isinstance(default, tuple) else "comma-separated ints"
        raise ParamError(f"--param {key}={text}: {head} expects a {kind} (default {default!r})") from None


def coerce_value(key: str, value: Any, default: Any, head: str) -> Any:
    """Values read back from JSON: lists become tuples where the default is a tuple."""
    if isinstance(default, tuple) and isinstance(value, list):
        return tuple(value)
    return value


def parse_params(spec: HeadSpec, items) -> dict[str, Any]:
    """``["C=0.1", "kernel=linear"]`` or a dict -> typed keyword arguments for ``spec.cls``."""
    defaults = spec.defaults()
    if isinstance(items, dict):
        pairs = list(items.items())
    else:
        pairs = []
        for item in items or []:
            key, sep, value = item.partition("=")
            if not sep or not key.strip():
                raise ParamError(f"--param {item!r}: expected KEY=VALUE, e.g. --param {spec.main_param}={spec.grid[len(spec.grid) // 2]}")
            pairs.append((key.strip(), value.strip()))
    out = {}
    for key, value in pairs:
        if key not in defaults:
            raise ParamError(f"{spec.name} has no parameter {key!r}: valid keys are {', '.join(sorted(defaults))}")
        out[key] = parse_value(key, value, defaults[key], spec.name)
    return out


def jsonable_params(params: dict) -> dict:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in params.items()}
