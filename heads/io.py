"""Saving and loading fitted heads without ever running code from a file.

Every head is a set of arrays: ``head.safetensors`` (the arrays the head names in
``tensor_names()``) + ``head.json``. Loading builds the head from its registered class and
parameters, fills in the arrays and checks their shapes against the classes and width, so a
foreign file is refused and nothing in a file is ever executed; no scikit-learn is needed.

Runs written before svm, rf and mlp became arrays hold a ``head.skops`` file; they are refused
with one line asking to refit, rather than kept loadable through skops and scikit-learn
(seconds of imports, and an allow-list of pickled types to maintain).

``head.json`` holds the head's name, parameters, classes, feature width and the sha256 of the
head file, an integrity check: a file damaged or changed since it was written is refused. It
proves nothing about who wrote the file (whoever can rewrite the head can rewrite the hash
beside it); the guarantee that matters, no code run from a file, comes from the loader above.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..common.atomic import storage_errors, write_bytes_atomic, write_json_atomic
from ..common.hashing import sha256_file
from ..errors import RunError, TlxError

HEAD_JSON = "head.json"
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
    from safetensors.numpy import save

    file = run_dir / "head.safetensors"
    tensors = {
        name: np.ascontiguousarray(getattr(head, name))
        for name in head.tensor_names()
        if getattr(head, name, None) is not None
    }
    # serialised in memory, then written whole or not at all (a full disk leaves no half file)
    write_bytes_atomic(file, save(tensors, metadata={"format": FORMAT, "head": head.name}))
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
    from .registry import coerce_value, get_head

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
    if saved.endswith(".skops"):  # svm, rf and mlp before they were saved as arrays
        raise RunError(
            f"{run_dir / Path(saved).name} is a {meta.get('head')} head saved with skops by an earlier tlx; "
            f"this version saves heads as arrays and no longer reads skops files: refit it with "
            f"`tlx fit-head --clf {meta.get('head')}`"
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
    if file.suffix != ".safetensors":
        raise RunError(f"{meta_path} names a head file of unknown type {file.name!r}: refusing it")
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
    if head.n_features_in_ != width or len(head.classes_) != len(classes):
        raise RunError(f"{file} does not match {HEAD_JSON} (width or classes differ): refusing a foreign file")
    return head
