"""Saving and loading fitted heads without ever running code from a file.

Linear heads (tlx's ``linear``; logreg, ridge and scikit-learn's other linear classifiers) are
arrays in ``head.safetensors``; any other head is ``head.skops``, loaded only when every type the
file holds is one tlx recorded at save and comes from scikit-learn, numpy or scipy. The sha256 in
``head.json`` catches damage; it proves nothing about who wrote the file.
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
    if hasattr(head, "tensors"):  # tlx's linear head
        arrays = {name: getattr(head, name) for name in head.tensors if getattr(head, name) is not None}
        file = _save_arrays(arrays, run_dir, head.name)
    else:  # a scikit-learn pipeline
        record.update(model_path=head.model_path, balance_classes=bool(head.balance_classes))
        state = head.to_arrays()
        if state is None:
            file = _save_skops(head, run_dir, record)
        else:
            record["steps"], arrays = state
            file = _save_arrays(arrays, run_dir, head.name)
    record.update(file=file.name, sha256=sha256_file(file))
    return write_json_atomic(run_dir / HEAD_JSON, record)


def skops_io():
    """``skops.io``, imported without its walk over scikit-learn: its default trusted types come from
    ``sklearn.utils.all_estimators()``, which imports all of scikit-learn and torch (4 to 8 s). tlx
    records and checks each file's types itself; with no estimator listed skops trusts fewer types."""
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


def _save_arrays(arrays: dict, run_dir: Path, name: str) -> Path:
    from safetensors.numpy import save

    file = run_dir / "head.safetensors"
    tensors = {key: np.ascontiguousarray(value) for key, value in arrays.items()}
    # serialised in memory, then written whole or not at all (a full disk leaves no half file)
    write_bytes_atomic(file, save(tensors, metadata={"format": FORMAT, "head": name}))
    return file


def _save_skops(head, run_dir: Path, record: dict) -> Path:
    """The pipeline as a plain scikit-learn ``Pipeline`` (no tlx type in the file)."""
    from sklearn.pipeline import Pipeline

    sio = skops_io()
    file = run_dir / "head.skops"
    data = sio.dumps(Pipeline(head.steps))
    write_bytes_atomic(file, data)
    record["untrusted_types"] = sorted(sio.get_untrusted_types(data=data))
    return file


def _pipeline_options(meta: dict) -> dict:
    """A scikit-learn head's own settings, as head.json records them."""
    return dict(
        model_path=meta.get("model_path"), balance_classes=bool(meta.get("balance_classes")), name=str(meta["head"])
    )


def load_head(run_dir):
    """Load the head saved in ``run_dir``; a foreign or damaged file, or one that fails the
    integrity check, raises RunError."""
    run_dir = Path(run_dir)
    meta_path = run_dir / HEAD_JSON
    if not meta_path.is_file():
        raise RunError(f"{run_dir} has no {HEAD_JSON}: it is not a head run (fit one with `tlx fit-head`)")
    meta = _read_meta(meta_path)
    name = str(meta.get("head"))
    suffix = Path(str(meta.get("file"))).suffix
    if suffix == ".skops" and "untrusted_types" not in meta:
        raise RunError(
            f"{run_dir / meta['file']} is a {name} head saved with skops by an earlier tlx, without the "
            f"record of its types that this version checks: refit it with `tlx fit-head --clf {name}`"
        )
    if suffix == ".safetensors" and name in LOOKALIKES and "steps" not in meta:
        raise RunError(
            f"{run_dir / meta['file']} is a {name} head saved by an earlier tlx, whose {name} was a numpy "
            f"imitation of scikit-learn's; this version fits scikit-learn's own: refit it with "
            f"`tlx fit-head --clf {name}`"
        )
    try:
        classes, width = np.asarray(meta["classes"]), int(meta["n_features_in"])
        expected_hash = meta["sha256"]
        file = run_dir / Path(meta["file"]).name
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
    elif file.suffix == ".safetensors" and "steps" in meta:
        head = _load_sklearn_arrays(file, meta)
    elif file.suffix == ".safetensors":
        head = _load_arrays(file, meta, meta_path)
    else:
        raise RunError(f"{meta_path} names a head file of unknown type {file.name!r}: refusing it")
    if head.n_features_in_ != width or not np.array_equal(np.asarray(head.classes_), classes):
        raise RunError(f"{file} does not match {HEAD_JSON} (width or classes differ): refusing a foreign file")
    return head


def _read_meta(meta_path: Path) -> dict:
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        meta = None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise RunError(f"{meta_path} is not a tlx head description: the run is damaged or foreign; fit the head again")
    if meta.get("format_version") != FORMAT_VERSION:
        raise RunError(
            f"{meta_path} has head format version {meta.get('format_version')!r} "
            f"but this tlx reads {FORMAT_VERSION}: fit the head again"
        )
    return meta


def _read_tensors(file: Path) -> dict[str, np.ndarray]:
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        return load_file(str(file))
    except (SafetensorError, OSError, ValueError) as exc:
        raise RunError(f"{file} is not a readable safetensors file ({exc}): fit the head again") from None


def _load_arrays(file: Path, meta: dict, meta_path: Path):
    from .registry import get_head, parse_value

    try:
        spec = get_head(meta["head"])
        defaults = spec.defaults()
        params = {k: parse_value(k, v, defaults.get(k), spec.name) for k, v in meta["params"].items()}
        head = spec.build(**params)
    except TlxError as exc:
        raise RunError(f"{meta_path}: {exc}") from None
    except (KeyError, TypeError, ValueError) as exc:
        raise RunError(f"{meta_path} is incomplete ({exc}): fit the head again") from None
    if not hasattr(head, "tensors"):
        raise RunError(f"{meta_path}: a {spec.name} head is not saved as arrays: refusing a foreign file")
    tensors = _read_tensors(file)
    for name in head.tensors:
        setattr(head, name, tensors.get(name))
    head.classes_ = np.asarray(meta["classes"])
    head.n_features_in_ = int(meta["n_features_in"])
    coef = getattr(head, "coef_", None)
    if coef is None or coef.shape != (len(head.classes_), head.n_features_in_):
        raise RunError(
            f"{file} does not hold a {len(head.classes_)} x {head.n_features_in_} {spec.name} head: "
            "refusing a foreign file"
        )
    return head


def _load_sklearn_arrays(file: Path, meta: dict):
    """A linear scikit-learn pipeline rebuilt from its arrays: only a StandardScaler and
    scikit-learn's linear classifiers can be named (``HeadPipeline.from_arrays``)."""
    from .pipeline import HeadPipeline

    tensors = _read_tensors(file)
    try:
        return HeadPipeline.from_arrays(meta["steps"], tensors, **_pipeline_options(meta))
    except (KeyError, TypeError, ValueError, AttributeError, ImportError) as exc:
        raise RunError(f"{file} is not a linear scikit-learn head tlx saved ({exc}): refusing it") from None


def _load_skops(file: Path, meta: dict):
    """Build the pipeline only from the types tlx recorded, each from scikit-learn, numpy or scipy."""
    from sklearn.pipeline import Pipeline

    from .pipeline import HeadPipeline

    sio = skops_io()
    try:
        found = sio.get_untrusted_types(file=file)
    except Exception as exc:  # not a skops zip at all
        raise RunError(f"{file} is not a readable skops file ({type(exc).__name__}): fit the head again") from None
    unexpected = sorted(set(found) - set(meta.get("untrusted_types") or []))
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
    return HeadPipeline(pipeline.steps, **_pipeline_options(meta))
