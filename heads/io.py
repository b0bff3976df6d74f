"""Saving and loading fitted heads without ever running code from a file.

Two kinds of head file, both described by ``head.json``:

* tlx's linear head is a set of arrays: ``head.safetensors`` (the arrays it names in
  ``tensor_names()``); loading builds the head from its registered class and parameters, fills
  in the arrays and checks their shapes against the classes and width.
* a scikit-learn head is saved with skops (``head.skops``, never pickle). At save time the
  file's own list of types that skops does not trust by default
  (``skops.io.get_untrusted_types``) is recorded in ``head.json``; at load the file's list must
  be within that record, and each type must come from scikit-learn, numpy or scipy, before
  ``skops.io.load(file, trusted=...)`` is called with exactly those types.

Runs saved by tlx's earlier numpy look-alikes (``svm``, ``rf``, ``mlp``, ``logreg``, ``ridge``,
``knn`` as ``head.safetensors``) or by the skops heads before them (no type record) are refused
with one line saying how to refit.

``head.json`` holds the head's name, parameters, classes, feature width and the sha256 of the
head file, an integrity check: a file damaged or changed since it was written is refused. It
proves nothing about who wrote the file (whoever can rewrite the head can rewrite the hash
beside it); the guarantees that matter, no code run from a file and only allow-listed types
built, come from the loaders above.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..common.atomic import storage_errors, write_bytes_atomic, write_json_atomic
from ..common.hashing import sha256_file
from ..errors import RunError, TlxError

HEAD_JSON = "head.json"
SKOPS_TYPE_PREFIXES = ("sklearn.", "numpy.", "scipy.")  # the only types a head file may build
# The heads that earlier tlx versions fitted with numpy look-alikes and saved as arrays.
LOOKALIKES = {"svm", "rf", "mlp", "logreg", "ridge", "knn"}
FORMAT = "tlx-head"
FORMAT_VERSION = 1


def save_head(head, run_dir) -> Path:
    """Write the fitted head into ``run_dir``; returns the path of ``head.json``."""
    from .registry import jsonable_params

    run_dir = Path(run_dir)
    with storage_errors(run_dir, "create"):
        run_dir.mkdir(parents=True, exist_ok=True)
    if not hasattr(head, "n_features_in_"):
        raise ValueError("save_head needs a fitted head")
    record = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "head": head.name,
        "params": jsonable_params(head.params_used()),
        "classes": np.asarray(head.classes_).tolist(),
        "n_features_in": int(head.n_features_in_),
    }
    if hasattr(head, "tensor_names"):
        file = _save_arrays(head, run_dir)
    else:
        file, extra = _save_skops(head, run_dir)
        record.update(extra)
    record.update(file=file.name, sha256=sha256_file(file))
    return write_json_atomic(run_dir / HEAD_JSON, record)


def skops_io():
    """``skops.io``, imported without its walk over scikit-learn.

    On import, skops.io builds its default list of trusted types from
    ``sklearn.utils.all_estimators()``, which imports every scikit-learn module and, through
    ``array_api_compat``, torch: 4 to 8 s here, more than any head's fit. tlx does not rely on
    that list: it records each file's untrusted types at save and checks them against its own
    allow-list at load. So the first import runs with ``all_estimators`` answering no estimator;
    the only effect is that skops trusts no scikit-learn estimator by default (more types are
    reported untrusted, and tlx records and checks them): stricter, never looser."""
    import sys

    if "skops.io" in sys.modules:
        return sys.modules["skops.io"]
    import sklearn.utils

    walk = sklearn.utils.all_estimators
    sklearn.utils.all_estimators = lambda *args, **kwargs: []
    try:
        import skops.io
    finally:
        sklearn.utils.all_estimators = walk
    return skops.io


def _save_arrays(head, run_dir: Path) -> Path:
    from safetensors.numpy import save

    file = run_dir / "head.safetensors"
    tensors = {
        name: np.ascontiguousarray(getattr(head, name))
        for name in head.tensor_names()
        if getattr(head, name, None) is not None
    }
    # serialised in memory, then written whole or not at all (a full disk leaves no half file)
    write_bytes_atomic(file, save(tensors, metadata={"format": FORMAT, "head": head.name}))
    return file


def _save_skops(head, run_dir: Path) -> tuple[Path, dict]:
    """The pipeline as a plain scikit-learn ``Pipeline`` (no tlx type in the file)."""
    from sklearn.pipeline import Pipeline

    sio = skops_io()
    file = run_dir / "head.skops"
    data = sio.dumps(Pipeline(head.steps))
    write_bytes_atomic(file, data)  # whole or not at all, as every file tlx writes
    return file, {
        "untrusted_types": sorted(sio.get_untrusted_types(data=data)),
        "model_path": head.model_path,
        "balance_classes": bool(head.balance_classes),
    }


def load_head(run_dir):
    """Load the head saved in ``run_dir``; a foreign or damaged file, or one that fails the
    integrity check, raises RunError."""

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
    saved = str(meta.get("file", ""))
    name = str(meta.get("head"))
    if saved.endswith(".skops") and "untrusted_types" not in meta:
        raise RunError(
            f"{run_dir / Path(saved).name} is a {name} head saved with skops by an earlier tlx, without the "
            f"record of its types that this version checks: refit it with `tlx fit-head --clf {name}`"
        )
    if saved.endswith(".safetensors") and name in LOOKALIKES:
        raise RunError(
            f"{run_dir / Path(saved).name} is a {name} head saved by an earlier tlx, whose {name} was a numpy "
            f"imitation of scikit-learn's; this version fits scikit-learn's own: refit it with "
            f"`tlx fit-head --clf {name}`"
        )
    try:
        file = run_dir / Path(meta["file"]).name
        expected_hash = meta["sha256"]
        classes = np.asarray(meta["classes"])
        width = int(meta["n_features_in"])
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
        head = _load_skops(file, meta)
    elif file.suffix == ".safetensors":
        head = _load_arrays(file, meta, meta_path)
    else:
        raise RunError(f"{meta_path} names a head file of unknown type {file.name!r}: refusing it")
    if head.n_features_in_ != width or not np.array_equal(np.asarray(head.classes_), classes):
        raise RunError(f"{file} does not match {HEAD_JSON} (width or classes differ): refusing a foreign file")
    return head


def _load_arrays(file: Path, meta: dict, meta_path: Path):
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    from .registry import coerce_value, get_head

    try:
        spec = get_head(meta["head"])
        defaults = spec.defaults()
        params = {k: coerce_value(k, v, defaults.get(k), spec.name) for k, v in meta["params"].items()}
        head = spec.build(**params)
    except TlxError as exc:
        raise RunError(f"{meta_path}: {exc}") from None
    except (KeyError, TypeError, ValueError) as exc:
        raise RunError(f"{meta_path} is incomplete ({exc}): fit the head again") from None
    if not hasattr(head, "tensor_names"):
        raise RunError(f"{meta_path}: a {spec.name} head is not saved as arrays: refusing a foreign file")
    try:
        tensors = load_file(str(file))
    except (SafetensorError, OSError, ValueError) as exc:
        raise RunError(f"{file} is not a readable safetensors file ({exc}): fit the head again") from None
    for name in head.tensor_names():
        setattr(head, name, tensors.get(name))
    classes = np.asarray(meta["classes"])
    head.classes_ = classes
    head.n_features_in_ = int(meta["n_features_in"])
    if not head.arrays_fit(len(classes), head.n_features_in_):
        raise RunError(
            f"{file} does not hold a {len(classes)} x {head.n_features_in_} {spec.name} head: refusing a foreign file"
        )
    return head


def _load_skops(file: Path, meta: dict):
    """Build the pipeline only from the types tlx recorded, each from scikit-learn, numpy or scipy."""
    from sklearn.pipeline import Pipeline

    from .pipeline import HeadPipeline

    sio = skops_io()
    try:
        found = sio.get_untrusted_types(file=file)
    except Exception as exc:  # not a skops zip at all
        raise RunError(f"{file} is not a readable skops file ({type(exc).__name__}): fit the head again") from None
    recorded = set(meta.get("untrusted_types") or [])
    unexpected = sorted(set(found) - recorded)
    if unexpected:
        raise RunError(f"{file} holds types that tlx did not save ({', '.join(unexpected[:3])}): refusing it")
    foreign = [t for t in found if not t.startswith(SKOPS_TYPE_PREFIXES)]
    if foreign:
        raise RunError(
            f"{file} holds types outside scikit-learn, numpy and scipy ({', '.join(foreign[:3])}): refusing it"
        )
    try:
        pipeline = sio.load(file, trusted=list(found))
    except Exception as exc:  # skops refuses, or the file is damaged
        raise RunError(
            f"{file} could not be loaded by skops ({type(exc).__name__}: {exc}): fit the head again"
        ) from None
    if type(pipeline) is not Pipeline:
        raise RunError(f"{file} does not hold a scikit-learn Pipeline: refusing a foreign file")
    return HeadPipeline(
        pipeline.steps,
        model_path=meta.get("model_path"),
        balance_classes=bool(meta.get("balance_classes")),
        name=str(meta["head"]),
    )
