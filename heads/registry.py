"""Registry of heads and the parsing of ``--param``; it imports no head (``linear`` and the
scikit-learn estimators register themselves). Grids run from the strongest regularization to the
weakest, so that a tie goes to the simpler model."""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import TlxError

DEFAULT_HEAD = "linear"

_HEADS: dict[str, HeadSpec] = {}
_FAMILIES: dict[str, tuple[Callable[[str], HeadSpec], str]] = {}  # prefix -> (resolver, help)


class UnknownHeadError(TlxError):
    pass


class ParamError(TlxError):
    """A ``--param KEY=VALUE`` that names no parameter of the head, or whose value does not parse."""


@dataclass(frozen=True)
class HeadSpec:
    """A head tlx implements itself: ``cls`` is its class (a :class:`~tlx.heads.base.Head`)."""

    name: str
    cls: Any
    main_param: str  # the regularization parameter that --sweep searches ("": none, no sweep)
    grid: tuple  # its values, strongest regularization first
    description: str

    def build(self, **params):
        return self.cls(**params)

    def defaults(self) -> dict[str, Any]:
        return self.cls().get_params()

    @property
    def exportable(self) -> bool:
        return bool(getattr(self.cls, "has_linear_form", False))

    @property
    def supports_class_weight(self) -> bool:
        return "class_weight" in inspect.signature(self.cls).parameters

    def validate(self, params: dict) -> None:
        """Refuse out-of-range values (``weight_decay=-1``) before any data is read."""
        self.build(**params)._validate_params()

    def describe_params(self) -> dict[str, str]:
        """Parameter -> its valid values, in words, for ``tlx heads``."""
        return dict(getattr(self.cls, "valid_values", {}))


def register_head(name: str, main_param: str, grid, description: str = ""):
    """Class decorator for tlx's own heads."""

    def decorate(cls):
        if main_param not in inspect.signature(cls).parameters:
            raise ValueError(f"head {name!r}: main parameter {main_param!r} is not an __init__ parameter")
        cls.name = name
        doc = description or (cls.__doc__ or "").strip().splitlines()[0]
        register_spec(HeadSpec(name, cls, main_param, tuple(grid), doc))
        return cls

    return decorate


def register_spec(spec: HeadSpec, replace: bool = False) -> HeadSpec:
    """Register a spec built elsewhere (scikit-learn's estimators, a user's estimator object)."""
    if spec.name in _HEADS and not replace:
        raise ValueError(f"head {spec.name!r} is registered twice")
    _HEADS[spec.name] = spec
    return spec


def register_family(prefix: str, resolver: Callable[[str], HeadSpec], help_text: str) -> None:
    """``<prefix>:<name>`` heads, resolved on first use by ``resolver(name)``."""
    _FAMILIES[prefix] = (resolver, help_text)


def _named() -> list[HeadSpec]:
    """The heads registered by name (not ``sklearn:<name>`` ones), the default first."""
    return sorted((s for n, s in _HEADS.items() if ":" not in n), key=lambda s: s.name != DEFAULT_HEAD)


def list_heads() -> dict[str, str]:
    """Registered head names, each with a one-line description."""
    return {spec.name: spec.description for spec in _named()}


def family_help() -> dict[str, str]:
    """``<prefix>:<name>`` -> how to use that family (``tlx heads``)."""
    return {f"{prefix}:<name>": text for prefix, (_, text) in _FAMILIES.items()}


def get_head(name: str) -> HeadSpec:
    if name in _HEADS:
        return _HEADS[name]
    prefix, sep, rest = name.partition(":")
    if sep and prefix in _FAMILIES and rest:
        return register_spec(_FAMILIES[prefix][0](rest), replace=True)
    known = ", ".join([*list_heads(), *family_help()])
    raise UnknownHeadError(f"unknown head {name!r}: expected one of {known} (see `tlx heads`)")


def exportable_heads() -> list[str]:
    return [spec.name for spec in _named() if spec.exportable]


_TRUE, _FALSE = {"true", "1", "yes", "on"}, {"false", "0", "no", "off"}


def parse_value(key: str, text: Any, default: Any, head: str) -> Any:
    """Parse ``text`` with the type of the parameter's default value."""
    if not isinstance(text, str):  # from the Python API or JSON: only lists need a tuple back
        return tuple(text) if isinstance(default, tuple) and isinstance(text, list) else text
    low = text.strip().lower()
    if low in {"none", "null"}:
        return None
    try:
        if isinstance(default, bool):
            if low not in _TRUE | _FALSE:
                raise ValueError
            return low in _TRUE
        if isinstance(default, int):
            return int(text)
        if isinstance(default, float):
            return float(text)
        if isinstance(default, tuple):
            return tuple(int(v) for v in text.replace("x", ",").split(",") if v.strip())
    except ValueError:
        kind = type(default).__name__ if not isinstance(default, tuple) else "comma-separated ints"
        raise ParamError(f"--param {key}={text}: {head} expects a {kind} (default {default!r})") from None
    if default is None or isinstance(default, str):  # a number if it looks like one (gamma=0.5, max_features=0.3)
        for cast in (int, float):
            try:
                return cast(text)
            except ValueError:
                pass
    return text


def parse_params(spec: HeadSpec, items) -> dict[str, Any]:
    """``["C=0.1", "kernel=linear"]`` or a dict -> typed keyword arguments for the head."""
    defaults = spec.defaults()
    if isinstance(items, dict):
        pairs = list(items.items())
    else:
        pairs = []
        for item in items or []:
            key, sep, value = item.partition("=")
            if not sep or not key.strip():
                example = f"{spec.main_param}={spec.grid[len(spec.grid) // 2]}" if spec.grid else "KEY=VALUE"
                raise ParamError(f"--param {item!r}: expected KEY=VALUE, e.g. --param {example}")
            pairs.append((key.strip(), value.strip()))
    out = {}
    for key, value in pairs:
        if key not in defaults:
            raise ParamError(f"{spec.name} has no parameter {key!r}: valid keys are {', '.join(sorted(defaults))}")
        out[key] = parse_value(key, value, defaults[key], spec.name)
    return out


def jsonable_params(params: dict) -> dict:
    """Parameters as JSON holds them: tuples as lists, numpy scalars as numbers, objects (an
    estimator) as their repr."""
    return json.loads(json.dumps(params, default=_plain))


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") and getattr(value, "shape", None) == () else repr(value)


def validate_params(spec: HeadSpec, params: dict) -> None:
    """Refuse out-of-range values (``C=-1``) before any data is read, in one line naming the
    parameter (scikit-learn's own check for its estimators)."""
    spec.validate(params)


def describe_heads() -> list[dict[str, Any]]:
    """One row per head for ``tlx heads``: what it is, its sweep, its parameters and their valid values."""
    rows = []
    for spec in _named():
        valid = spec.describe_params()
        params = jsonable_params(spec.defaults())
        rows.append(
            {
                "name": spec.name,
                "description": spec.description,
                "default": spec.name == DEFAULT_HEAD,
                "exportable": spec.exportable,
                "class_weight": spec.supports_class_weight,
                "sweep_param": spec.main_param,
                "sweep_grid": list(spec.grid),
                "params": [{"name": k, "default": v, "valid": valid.get(k, "")} for k, v in params.items()],
            }
        )
    return rows
