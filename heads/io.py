"""Saving and loading fitted heads without ever running code from a file.

* Heads made of arrays (``linear``) -> ``head.safetensors`` (the arrays named in the class's
  ``_tensors``) + ``head.json``.
* scikit-learn heads -> ``head.skops`` (the fitted pipeline, written by ``skops.io.dump``) +
  ``head.json``. Loading lists the file's types with ``skops.io.get_untrusted_types`` and refuses
  any that is not on the explicit allow-list below, so no arbitrary object is ever built.

``head.json`` holds the head's name, parameters, classes, feature width and the sha256 of the
head file, an integrity check: a file damaged or changed since it was written is refused. It
proves nothing about who wrote the file (whoever can rewrite the head can rewrite the hash
beside it); the guarantee that matters, no code run from a file, comes from the loaders above.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tlx.common.atomic import write_json_atomic
from tlx.common.hashing import sha256_file
from tlx.errors import RunError, TlxError

HEAD_JSON = "head.json"
FORMAT = "tlx-head"
FORMAT_VERSION = 1

# Types that a saved scikit-learn head may contain beyond those skops trusts by default.
ALLOWED_TYPES = frozenset(
    {
        "sklearn.pipeline.Pipeline",
        "sklearn.preprocessing._data.StandardScaler",
        "sklearn.preprocessing._label.LabelBinarizer",
        "sklearn.preprocessing._label.LabelEncoder",
        "sklearn.svm._classes.SVC",
        "sklearn.calibration.CalibratedClassifierCV",
        "sklearn.calibration._CalibratedClassifier",
        "sklearn.calibration._SigmoidCalibration",
        "sklearn.model_selection._split.StratifiedKFold",
        "sklearn.ensemble._forest.RandomForestClassifier",
        "sklearn.tree._classes.DecisionTreeClassifier",
        "sklearn.tree._tree.Tree",
        "sklearn.neural_network._multilayer_perceptron.MLPClassifier",
        "sklearn.neural_network._stochastic_optimizers.AdamOptimizer",
        "sklearn.neural_network._stochastic_optimizers.SGDOptimizer",
        "numpy.ndarray",
        "numpy.dtype",
        "numpy.float32",
        "numpy.float64",
        "numpy.int32",
        "numpy.int64",
        "numpy.random.mtrand.RandomState",
        "numpy.random._mt19937.MT19937",
        "builtins.slice",
    }
)


def _skops_io():
    """``import skops.io`` without importing torch.

    skops builds its trusted-type list at import time by walking every scikit-learn module;
    ``pkgutil.walk_packages`` imports ``sklearn.externals.array_api_compat.torch`` on the way,
    and that imports torch (seconds, and the CLI promises not to for scikit-learn heads). When
    torch is not loaded yet, it is hidden for the duration of that import: the walk treats the
    ImportError as "skip this package", and torch imports normally afterwards."""
    import sys

    if "skops.io" in sys.modules or "torch" in sys.modules:
        import skops.io

        return skops.io
    # scikit-learn itself (with scipy.stats, which looks torch up in sys.modules while it loads)
    # is imported before torch is hidden: only skops' walk must not see torch.
    import sklearn.base  # noqa: F401

    hidden = [name for name in ("torch",) if name not in sys.modules]
    for name in hidden:
        # makes `import torch` raise ImportError (a documented sys.modules sentinel that typeshed omits)
        sys.modules[name] = None  # type: ignore[assignment]
    try:
        import skops.io
    finally:
        for name in hidden:
            if sys.modules.get(name, 0) is None:
                del sys.modules[name]
        for name in [m for m in sys.modules if m.startswith("sklearn.externals.array_api_compat.torch")]:
            del sys.modules[name]
    return skops.io


def save_head(head, run_dir) -> Path:
    """Write the fitted head into ``run_dir``; returns the path of ``head.json``."""
    from tlx.heads.registry import jsonable_params

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if not hasattr(head, "n_features_in_"):
        raise ValueError("save_head needs a fitted head")
    if hasattr(head, "model_"):
        sio = _skops_io()

        file = run_dir / "head.skops"
        sio.dump(head.model_, file)
    else:
        from safetensors.numpy import save_file

        file = run_dir / "head.safetensors"
        tensors = {
            name: np.ascontiguousarray(getattr(head, name))
            for name in head.tensor_names()
            if getattr(head, name, None) is not None
        }
        save_file(tensors, str(file), metadata={"format": FORMAT, "head": head.name})
    record = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "head": head.name,
        "params": jsonable_params(head.get_params()),
        "classes": np.asarray(head.classes_).tolist(),
        "n_features_in": int(head.n_features_in_),
        "file": file.name,
        "sha256": sha256_file(file),
    }
    return write_json_atomic(run_dir / HEAD_JSON, record)


def load_head(run_dir):
    """Load the head saved in ``run_dir``; a foreign or damaged file, or one that fails the
    integrity check, raises RunError."""
    from tlx.heads.registry import coerce_value, get_head

    run_dir = Path(run_dir)
    meta_path = run_dir / HEAD_JSON
    if not meta_path.is_file():
        raise RunError(f"{run_dir} has no {HEAD_JSON}: it is not a head run (fit one with `tlx fit-head`)")
    try:
        meta = json.loads(meta_path.read_text())
        ok = isinstance(meta, dict) and meta.get("format") == FORMAT
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        ok = False
    if not ok:
        raise RunError(f"{meta_path} is not a tlx head description: the run is damaged or foreign; fit the head again")
    if meta.get("format_version") != FORMAT_VERSION:
        raise RunError(
            f"{meta_path} has head format version {meta.get('format_version')!r} "
            f"but this tlx reads {FORMAT_VERSION}: fit the head again"
        )
    try:
        spec = get_head(meta["head"])
        defaults = spec.defaults()
        params = {k: coerce_value(k, v, defaults.get(k), spec.name) for k, v in meta["params"].items()}
        head = spec.build(**params)
        file = run_dir / Path(meta["file"]).name
        expected_hash = meta["sha256"]
        classes = np.asarray(meta["classes"])
        width = int(meta["n_features_in"])
    except TlxError as exc:
        raise RunError(f"{meta_path}: {exc}") from None
    except (KeyError, TypeError, ValueError) as exc:
        raise RunError(f"{meta_path} is incomplete ({exc}): fit the head again") from None
    if not file.is_file():
        raise RunError(f"{file} is missing: the run folder is incomplete; fit the head again")
    if sha256_file(file) != expected_hash:
        raise RunError(
            f"{file} failed its integrity check (its sha256 does not match {HEAD_JSON}): "
            "it was damaged or changed after it was written; fit the head again"
        )

    if file.suffix == ".skops":
        model = _load_skops(file)
        from sklearn.pipeline import Pipeline

        try:
            if not isinstance(model, Pipeline) or not hasattr(head, "set_model"):
                raise ValueError("not a scikit-learn pipeline")
            head.set_model(model)
        except (ValueError, AttributeError, TypeError) as exc:
            raise RunError(f"{file} does not hold a {spec.name} head ({exc}): refusing a foreign file") from None
    elif file.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        try:
            tensors = load_file(str(file))
        except (SafetensorError, OSError, ValueError) as exc:
            raise RunError(f"{file} is not a readable safetensors file ({exc}): fit the head again") from None
        for name in head.tensor_names():
            setattr(head, name, tensors.get(name))
        head.classes_ = classes
        head.n_features_in_ = width
        if not head.arrays_fit(len(classes), width):
            raise RunError(f"{file} does not hold a {len(classes)} x {width} {spec.name} head: refusing a foreign file")
    else:
        raise RunError(f"{meta_path} names a head file of unknown type {file.name!r}: refusing it")
    if head.n_features_in_ != width or len(head.classes_) != len(classes):
        raise RunError(f"{file} does not match {HEAD_JSON} (width or classes differ): refusing a foreign file")
    return head


def _load_skops(file: Path):
    sio = _skops_io()

    try:
        untrusted = sio.get_untrusted_types(file=file)
    except Exception as exc:
        raise RunError(f"{file} is not a readable skops file ({type(exc).__name__}): fit the head again") from None
    refused = sorted(set(untrusted) - ALLOWED_TYPES)
    if refused:
        raise RunError(f"{file} contains types outside the allow-list ({', '.join(refused[:3])}): refusing to load it")
    try:
        return sio.load(file, trusted=list(untrusted))
    except Exception as exc:
        raise RunError(f"{file} could not be loaded ({type(exc).__name__}: {exc}): fit the head again") from None
