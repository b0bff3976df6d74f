"""``tlx export``: a run as one module (preprocessed images in, probabilities out) for serving
without tlx, as TorchScript or ONNX, checked against the eager module after writing."""

from __future__ import annotations

import io
import json
import time
import warnings
from contextlib import suppress
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..common.atomic import atomic_path, write_json_atomic
from ..common.outputs import check_output_file
from ..errors import TlxError
from ..heads.base import NotExportableError
from ..heads.runs import run_cache
from ..version import __version__
from .head import head_class_indices, rebuild_backbone

SUFFIX = {"torchscript": ".pt", "onnx": ".onnx"}  # the formats, with the default file's suffix
INPUT_NAME, OUTPUT_NAME = "images", "probabilities"
CHECK_ATOL = 1e-4


class ExportError(TlxError):
    """The exporter failed, or the exported file does not reproduce the model."""

    exit_code = 1


@dataclass
class ExportResult:
    path: str
    sidecar: str
    format: str
    kind: str
    classes: list[str]
    input_shape: list
    max_abs_diff: float | None  # exported file vs eager module on a check batch (None: not checked)
    checked_with: str
    seconds: float

    def to_dict(self) -> dict:
        return asdict(self)


def sidecar_path(out) -> Path:
    """``model.onnx`` -> ``model.onnx.json``: next to the file, unmistakably its own."""
    return Path(out).with_name(Path(out).name + ".json")


def _linear_probe(W, b, shift, scale):
    """Pooled features -> probabilities: ``softmax(((x - shift) / scale) @ W.T + b)``."""
    import torch
    from torch import nn

    def f32(value):
        return torch.tensor(np.asarray(value, dtype=np.float32))

    class LinearProbe(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(W.shape[1], W.shape[0])
            self.linear.load_state_dict({"weight": f32(W), "bias": f32(b)})
            self.register_buffer("shift", f32(0.0 if shift is None else shift))
            self.register_buffer("scale", f32(1.0 if scale is None else scale))

        def forward(self, features):
            return torch.softmax(self.linear((features - self.shift) / self.scale), dim=1)

    return LinearProbe()


def build_module(run):
    """``(module, classes, preprocessing)`` for a loaded run; ``classes`` name the output columns."""
    if run.kind == "finetune":
        from ..finetune.model import load_finetuned

        module, pre = load_finetuned(run.path)
        return module.eval().requires_grad_(False), list(run.classes), pre
    from torch import nn

    from ..extractor.pooling import FeatureExtractor, stage_taps

    net = rebuild_backbone(run)
    extractor = FeatureExtractor(net.body, run.space.pooling, stage_taps(net, run.space.stages))
    module = nn.Sequential(extractor, _linear_probe(*linear_form(run)))
    classes = [run.classes[i] for i in head_class_indices(run)]
    return module.eval().requires_grad_(False), classes, run.space.preprocessing


def linear_form(run):
    """The head's ``(W, b, shift, scale)``, or NotExportableError naming the run (numpy only, so a
    refusal costs no torch import)."""
    fused = run.info.get("fused") if run.kind == "head" else None
    if fused:
        names = " + ".join(b["feature_space"]["backbone"] for b in fused["blocks"])
        raise NotExportableError(
            f"{run.path} is fitted on fused features ({names}): an exported model runs one backbone; "
            "use `tlx predict --run` for this run, or export a run fitted on one of its caches"
        )
    try:
        return run.head.linear_form()
    except NotExportableError as exc:
        raise NotExportableError(f"{run.path} is not exportable: {exc}") from None


def export_run(run, fmt: str, out=None) -> ExportResult:
    """Write the run's module as ``fmt`` to ``out`` (default: inside the run folder) and its sidecar JSON."""
    started = time.perf_counter()
    if fmt not in SUFFIX:
        raise TlxError(f"--format must be one of {', '.join(SUFFIX)}, not {fmt!r}")
    out = Path(out) if out is not None else Path(run.path) / f"model{SUFFIX[fmt]}"
    if out.is_dir():
        raise TlxError(f"--out {out} is a folder: give a file name, for example {out / ('model' + SUFFIX[fmt])}")
    # an existing file is replaced only when it is an earlier export (a file with its sidecar beside it)
    check_output_file(out, "--out", may_replace=lambda p: _sidecar_record(sidecar_path(p)).get("file") == p.name)
    check_output_file(sidecar_path(out), "--out's sidecar", may_replace=lambda p: bool(_sidecar_record(p)))
    if run.kind == "head":
        linear_form(run)  # refuse a head without a linear form before torch is imported (seconds)
    import torch

    module, classes, pre = build_module(run)
    example = torch.randn(2, 3, pre.input_size, pre.input_size, generator=torch.Generator().manual_seed(0))
    with atomic_path(out) as tmp:
        try:
            with torch.inference_mode(False), torch.no_grad():
                (_to_torchscript if fmt == "torchscript" else _to_onnx)(module, example, tmp)
            diff, how = _check(module, tmp, fmt, check_batch(run, pre))
        finally:
            for extra in tmp.parent.glob(tmp.name + "?*"):  # onnx external-data leftovers, if any
                extra.unlink(missing_ok=True)
    side = write_json_atomic(sidecar_path(out), sidecar(run, fmt, out, classes, pre))
    return ExportResult(
        path=str(out),
        sidecar=str(side),
        format=fmt,
        kind=run.kind,
        classes=classes,
        input_shape=["N", 3, pre.input_size, pre.input_size],
        max_abs_diff=diff,
        checked_with=how,
        seconds=round(time.perf_counter() - started, 3),
    )


def _sidecar_record(path: Path) -> dict:
    """The export sidecar at ``path``, or {} where there is none."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    is_sidecar = isinstance(record, dict) and {"file", "format", "classes", "tlx_version"} <= record.keys()
    return record if is_sidecar else {}


def sidecar(run, fmt: str, out: Path, classes: list[str], pre) -> dict:
    import torch

    size = pre.input_size
    meaning = "class probabilities (softmax), columns in the order of 'classes'"
    return {
        "file": out.name,
        "format": fmt,
        "input": {"name": INPUT_NAME, "shape": ["N", 3, size, size], "dtype": "float32", "layout": "NCHW, RGB"},
        "output": {"name": OUTPUT_NAME, "shape": ["N", len(classes)], "dtype": "float32", "meaning": meaning},
        "classes": classes,
        "preprocessing": {
            **pre.to_dict(),
            "resize_size": pre.resize_size,
            "steps": [
                "decode to RGB (EXIF orientation applied)",
                f"resize the shorter side to {pre.resize_size} px ({pre.interpolation})",
                f"center-crop {size} x {size}",
                "scale to [0, 1] (divide by 255)",
                "subtract mean and divide by std, per channel",
            ],
        },
        "run": str(run.path),
        "kind": run.kind,
        "clf": run.info.get("clf"),
        "val_accuracy": run.info.get("val_accuracy"),
        "feature_space": run.space.to_dict(),
        "tlx_version": __version__,
        "torch_version": str(torch.__version__),
    }


def _to_torchscript(module, example, path: Path) -> None:
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings and torch.jit deprecation notices
        try:
            traced = torch.jit.trace(module, example, check_trace=False)
        except Exception as exc:
            raise ExportError(f"TorchScript tracing failed: {type(exc).__name__}: {exc}; try --format onnx") from None
        buffer = io.BytesIO()  # serialised in memory: torch reports a failed file write as a RuntimeError
        torch.jit.save(traced, buffer)
    path.write_bytes(buffer.getbuffer())  # a disk error is an OSError, one line from atomic_path


def _to_onnx(module, example, path: Path) -> None:
    """The TorchScript-based exporter first (one plain graph with the weights inside), the dynamo
    exporter where that one is removed or fails; both with a dynamic batch axis."""
    import torch

    errors = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        buffer = io.BytesIO()  # in memory first, so that a disk error is not taken for an exporter's
        try:
            torch.onnx.export(
                module,
                (example,),
                buffer,  # type: ignore[arg-type]  # a file object works; the stub says paths only
                dynamo=False,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                opset_version=17,
            )
        except Exception as exc:
            errors.append(f"dynamo=False: {type(exc).__name__}: {exc}")
        else:
            path.write_bytes(buffer.getbuffer())
            return
        try:
            program = torch.onnx.export(
                module,
                (example,),
                dynamo=True,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_shapes=({0: torch.export.Dim("batch", min=1)},),
                external_data=False,
            )
            assert program is not None  # dynamo=True always returns an ONNXProgram
        except ImportError as exc:
            errors.append(f"dynamo=True: {exc} (install onnx and onnxscript: pip install 'tlx[export]')")
        except Exception as exc:
            errors.append(f"dynamo=True: {type(exc).__name__}: {exc}")
        else:
            program.save(str(path), external_data=False)
            return
    raise ExportError("ONNX export failed: " + "; ".join(errors))


def check_batch(run, pre, n: int = 3):
    """``n`` (not the traced batch size) images to check on: the run's own when they are still there
    (on random noise a softmax saturates to 0/1, which would hide differences), else random ones."""
    import torch

    from ..extractor.preprocess import preprocess_image

    images = []
    cache = run_cache(run)
    if cache is not None:
        from ..cache.index import read_index

        with suppress(TlxError):
            index = read_index(cache)
            root = Path(index.attrs.get("dataset_root", ""))
            val_first = sorted(range(len(index.paths)), key=lambda i: (index.splits[i] != "val", i))
            for i in val_first[: 4 * n]:
                with suppress(Exception):
                    images.append(preprocess_image(root / index.paths[i], pre))
                if len(images) == n:
                    break
    gen = torch.Generator().manual_seed(1)
    while len(images) < n:
        images.append(torch.randn(3, pre.input_size, pre.input_size, generator=gen))
    return torch.stack(images)


def _check(module, path: Path, fmt: str, x) -> tuple[float | None, str]:
    """Largest difference between the written file and the eager module on the batch ``x``."""
    import torch

    with torch.no_grad():
        want = module(x).float().numpy()
    if fmt == "torchscript":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.jit deprecation notice
            got = torch.jit.load(str(path)).eval()(x).numpy()
        how = "torch.jit.load"
    else:
        try:
            import onnxruntime as ort
        except ImportError:
            return None, "not checked (onnxruntime is not installed)"
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
        how = "onnxruntime"
    if got.shape != want.shape:
        raise ExportError(
            f"the exported {fmt} file gives shape {tuple(got.shape)} for a batch of 3, expected {tuple(want.shape)}"
        )
    diff = float(np.abs(got - want).max())
    if not diff <= CHECK_ATOL:
        raise ExportError(
            f"the exported {fmt} file differs from the model by {diff:.2e} (> {CHECK_ATOL:g}); "
            "the export is not faithful"
        )
    return diff, how
