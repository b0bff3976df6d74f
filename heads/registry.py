"""Registry of heads, in the manner of the backbone registry (``tlx.extractor.registry``).

A head is one class decorated with :func:`register_head`; the decorator records its main
regularization parameter and the log grid that ``--sweep`` searches. Grids run from the
strongest regularization to the weakest, so that a tie in validation accuracy goes to the
simpler model. Nothing here imports torch.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from ..errors import TlxError
from .constraints import COMMON, describe, satisfied

if TYPE_CHECKING:
    from .base import Head

H = TypeVar("H", bound="Head")

DEFAULT_HEAD = "linear"
BUILTIN_MODULES = ("linear", "linear_models", "neighbors", "svm", "forest", "mlp")

_HEADS: dict[str, HeadSpec] = {}


class UnknownHeadError(TlxError):
    pass


class ParamError(TlxError):
    """A ``--param KEY=VALUE`` that names no parameter of the head, or whose value does not parse."""


@dataclass(frozen=True)
class HeadSpec:
    name: str
    cls: type[Head]
    main_param: str  # the regularization parameter that --sweep searches
    grid: tuple  # its values, strongest regularization first
    description: str
    # Valid values per parameter (``tlx.heads.constraints``: Range, OneOf, Sizes, "boolean",
    # None), beyond the common ones.
    constraints: dict = field(default_factory=dict)

    def build(self, **params):
        return self.cls(**params)

    def defaults(self) -> dict[str, Any]:
        return self.cls().get_params()

    @property
    def exportable(self) -> bool:
        from .base import Head

        return self.cls.linear_form is not Head.linear_form

    @property
    def supports_class_weight(self) -> bool:
        return "class_weight" in inspect.signature(self.cls).parameters


def register_head(name: str, main_param: str, grid, description: str = "", constraints: dict | None = None):
    """Class decorator; ``constraints`` declares the valid values of the head's own parameters
    (see :func:`validate_params`)."""

    def decorate(cls: type[H]) -> type[H]:
        if name in _HEADS:
            raise ValueError(f"head {name!r} is registered twice")
        cls.name = name
        if main_param not in inspect.signature(cls).parameters:
            raise ValueError(f"head {name!r}: main parameter {main_param!r} is not an __init__ parameter")
        doc = description or (cls.__doc__ or "").strip().splitlines()[0]
        _HEADS[name] = HeadSpec(name, cls, main_param, tuple(grid), doc, dict(constraints or {}))
        return cls

    return decorate


def _ensure_builtins() -> None:
    import importlib

    for module in BUILTIN_MODULES:  # importing a head's module registers it
        importlib.import_module(f"tlx.heads.{module}")
    # Heads are listed in BUILTIN_MODULES order (then any registered elsewhere), even when one
    # module was imported on its own first (``from tlx.heads.forest import RfHead``).
    ranked = sorted(_HEADS.values(), key=lambda spec: _module_rank(spec.cls.__module__))
    if [spec.name for spec in ranked] != list(_HEADS):
        _HEADS.clear()
        _HEADS.update((spec.name, spec) for spec in ranked)


def _module_rank(module: str) -> int:
    package, _, name = module.rpartition(".")
    return BUILTIN_MODULES.index(name) if package == "tlx.heads" and name in BUILTIN_MODULES else len(BUILTIN_MODULES)


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


def registered_head(name: str) -> HeadSpec | None:
    """The spec registered under ``name``, or None (no error: for heads defined elsewhere)."""
    _ensure_builtins()
    return _HEADS.get(name)


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
        if default is None or isinstance(default, str):  # a number if it looks like one (gamma=0.5, max_features=0.3)
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
                raise ParamError(
                    f"--param {item!r}: expected KEY=VALUE, "
                    f"e.g. --param {spec.main_param}={spec.grid[len(spec.grid) // 2]}"
                )
            pairs.append((key.strip(), value.strip()))
    out = {}
    for key, value in pairs:
        if key not in defaults:
            raise ParamError(f"{spec.name} has no parameter {key!r}: valid keys are {', '.join(sorted(defaults))}")
        out[key] = parse_value(key, value, defaults[key], spec.name)
    return out


def jsonable_params(params: dict) -> dict:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in params.items()}


# -- valid values ----------------------------------------------------------------------------------
def own_constraints(spec: HeadSpec) -> dict[str, list]:
    """tlx's rules for the head's parameters (``tlx.heads.constraints``): the common ones and the
    head's own, for the parameters it has."""
    names = spec.defaults()
    return {key: rule for key, rule in {**COMMON, **spec.constraints}.items() if key in names}


def validate_params(spec: HeadSpec, params: dict) -> None:
    """Refuse out-of-range parameter values (``C=-1``, ``max_iter=0``) before any data is read,
    with a message in tlx's words rather than the estimator's."""
    defaults = spec.defaults()
    head = spec.build(**params)
    values = head.get_params()

    def refuse(key: str, wanted: str, value: Any) -> None:
        shown = params.get(key, value)
        shown = ",".join(map(str, shown)) if isinstance(shown, tuple) else shown
        raise ParamError(
            f"--param {key}={shown}: {spec.name} needs {key} to be {wanted} (default {defaults.get(key)!r})"
        )

    for key, rule in own_constraints(spec).items():
        if not satisfied(rule, values[key]):
            refuse(key, describe(rule), values[key])


def describe_heads() -> list[dict[str, Any]]:
    """One row per head for listings (``tlx heads``): name, description, whether it is the
    default, exportable and takes class weights, the sweep's parameter and grid, and every
    parameter with its default and valid values."""
    _ensure_builtins()
    rows = []
    for name, spec in _HEADS.items():
        valid = {key: describe(rule) for key, rule in own_constraints(spec).items()}
        rows.append(
            {
                "name": name,
                "description": spec.description,
                "default": name == DEFAULT_HEAD,
                "exportable": spec.exportable,
                "class_weight": spec.supports_class_weight,
                "sweep_param": spec.main_param,
                "sweep_grid": list(spec.grid),
                "params": [
                    {"name": key, "default": value, "valid": valid.get(key, "")}
                    for key, value in jsonable_params(spec.defaults()).items()
                ],
            }
        )
    return rows
