"""Engines for the frozen forward pass: the same pooled features, computed faster.

An engine turns a normalized float batch (N, 3, S, S) into pooled features (N, D), float32.
``eager`` is the plain PyTorch module and the reference; ``compile`` is ``torch.compile``
(inductor); ``onnxruntime`` and ``openvino`` run an ONNX export of the same module (the
optional extra ``pip install "tlx[fast]"``).

An engine is only an implementation detail if it gives the same vectors, so
:class:`ForwardPass` checks each one on its first batch against eager fp32 and refuses it
when the pooled features differ by more than :data:`TOLERANCE`, then checks a few rows of
every :data:`RECHECK_EVERY`-th batch the same way for the rest of the run. What an engine compiles or
exports is kept on disk (:class:`Artefacts`), keyed by backbone, weights, input shape,
engine and library versions, so only the first run pays for it.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import warnings
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import TlxError

if TYPE_CHECKING:  # torch is imported where it is used: `tlx extract` checks --engine before it needs torch
    import torch

ENGINES = ("eager", "compile", "onnxruntime", "openvino")
CHOICES = (*ENGINES, "auto")

# Max abs difference of pooled features against eager fp32 that keeps a cache's feature space.
# Measured: the exports differ from eager by about 1e-5 on efficientnet_lite0 (features of
# magnitude ~1-10; reordered float32 sums), 10x below it. A real bug (a wrong weight, a missed
# normalization, a quantized op) moves features by 1e-2 or more.
TOLERANCE = 1e-4
# With autocast the reference is eager at the same precision; fused kernels round differently.
REDUCED_TOLERANCE = {"fp16": 2e-2, "bf16": 1e-1}
PROBE_IMAGES = 8  # rows of the first batch that eager recomputes for the equality check
# The check goes on for the whole run, not the first batch alone: every RECHECK_EVERY-th batch,
# eager recomputes RECHECK_IMAGES of its rows (a kernel picked by batch shape, a drifting
# runtime or a corrupted artefact may show up later). 2 rows every 8 batches of 32 is under 1%
# of the images through eager: about 3% more time with an engine 4x faster than eager.
RECHECK_EVERY = 8
RECHECK_IMAGES = 2

# Fastest first, as measured side by side by benchmarks/engines.py (lite0, 2 cores, one intra-op
# thread each): forward 71 img/s openvino, 52 onnxruntime, 16 compile, 11 eager on a busy machine.
AUTO_ORDER = {"cpu": ("openvino", "onnxruntime", "compile", "eager"), "cuda": ("compile", "eager")}


class EngineError(TlxError):
    """An engine that cannot run here, or that would change the feature space."""


class EngineDrift(EngineError):
    """An engine that passed its first check and failed a later one, mid-run."""


def _spread_rows(n: int, k: int) -> list[int]:
    """``k`` rows spread over a batch of ``n`` (first and last included when k >= 2)."""
    if k <= 1:
        return [n // 2]
    return sorted({round(i * (n - 1) / (k - 1)) for i in range(k)})


@dataclass(frozen=True)
class EngineSpec:
    """What an engine's artefact depends on, besides the engine and library versions."""

    backbone: str
    weights_sha256: str
    pooling: str
    input_size: int
    device: str = "cpu"
    precision: str = "fp32"


def default_artefact_dir() -> Path:
    """``$TLX_ENGINE_CACHE_DIR``, else ``$XDG_CACHE_HOME/tlx/engines`` (``~/.cache/tlx/engines``):
    per user, not per dataset, since one export serves every dataset of a backbone."""
    if os.environ.get("TLX_ENGINE_CACHE_DIR"):
        return Path(os.environ["TLX_ENGINE_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "tlx" / "engines"


class Artefacts:
    """Files an engine exported or compiled, named by a hash of everything that makes them."""

    def __init__(self, root: Path | None = None):
        self.root = Path(root) if root is not None else default_artefact_dir()

    def path(self, engine: str, spec: EngineSpec, suffix: str, **extra) -> Path:
        from importlib.metadata import version

        from ..version import __version__

        fields = {**spec.__dict__, "engine": engine, "tlx": __version__, "torch": version("torch"), **extra}
        key = hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:16]
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in spec.backbone)
        return self.root / f"{engine}-{safe}-{spec.pooling}-{spec.input_size}-{key}{suffix}"

    def write(self, target: Path, write: Callable[[Path], object]) -> None:
        """``write(tmp)`` then rename into place, so a killed run never leaves half a file."""
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        try:
            write(tmp)
            os.replace(tmp, target)
        finally:
            for leftover in tmp.parent.glob(tmp.name + "*"):
                leftover.unlink(missing_ok=True)


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


# --------------------------------------------------------------------------- the engines

_ENGINES: dict[str, type[Engine]] = {}


def register_engine(cls: type[Engine]) -> type[Engine]:
    _ENGINES[cls.name] = cls
    return cls


def get_engine(name: str) -> type[Engine]:
    if name not in _ENGINES:
        raise EngineError(f"--engine must be one of {', '.join(CHOICES)}, not {name!r}")
    return _ENGINES[name]


class Engine:
    """Eager PyTorch: the reference every other engine is checked against."""

    name = "eager"
    modules: tuple[str, ...] = ()  # importable modules the engine needs (from the `fast` extra)
    devices: tuple[str, ...] = ("cpu", "cuda")
    precisions: tuple[str, ...] = ("fp32", "fp16", "bf16")
    memory_format = "channels_last"  # the torch memory format its input should have

    def __init__(self, model: torch.nn.Module, spec: EngineSpec, artefacts: Artefacts, threads: int | None = None):
        self.model = model  # FeatureExtractor, eval, on the device
        self.spec = spec
        self.artefacts = artefacts
        self.threads = threads or self.default_threads(cpu_count())
        self.from_cache = False  # whether prepare() found its artefact on disk
        self.prepare_seconds = 0.0

    @staticmethod
    def default_threads(cpus: int) -> int:
        """Intra-op threads: every core, since the eager forward pass is the bottleneck and the
        decoding workers run niced in its gaps."""
        return cpus

    @classmethod
    def unusable(cls, device: str, precision: str) -> str:
        """Why this engine cannot run here ('' when it can)."""
        import importlib.util

        missing = [m for m in cls.modules if importlib.util.find_spec(m) is None]
        if missing:
            return f"{' and '.join(missing)} is not installed (pip install 'tlx[fast]')"
        if device not in cls.devices:
            return f"it runs on {' or '.join(cls.devices)}, not {device}"
        if precision not in cls.precisions:
            return f"it runs in {' or '.join(cls.precisions)} only, not --precision {precision}"
        return ""

    def layout(self, x: torch.Tensor) -> torch.Tensor:
        import torch

        return x.contiguous(memory_format=getattr(torch, self.memory_format))

    def artefact(self, batch_size: int) -> Path | None:
        """The file the engine keeps on disk between runs (None: it keeps nothing)."""
        return None

    def has_artefact(self, batch_size: int) -> bool:
        path = self.artefact(batch_size)
        return path is not None and path.is_file()

    def prepare(self, batch_size: int) -> None:
        """Build, export or load whatever the engine runs; done once, before the first batch."""
        import torch

        torch.set_num_threads(self.threads)

    def autocast(self):
        import torch

        if self.spec.precision == "fp32":
            return nullcontext()
        dtype = torch.float16 if self.spec.precision == "fp16" else torch.bfloat16
        return torch.autocast(self.spec.device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import torch

        with torch.inference_mode(), self.autocast():
            return self.model(x).float()


register_engine(Engine)


@register_engine
class CompiledEngine(Engine):
    """Inductor, ahead of time: ``torch.export`` with a dynamic batch axis, compiled by
    AOTInductor into a package (a shared library plus the weights) that later runs load in
    seconds. The package is compiled once per backbone, weights, input size, device and
    precision; the batch size is free. Reduced precision is exported inside autocast, so the
    package runs the same mixed-precision kernels as eager under ``--precision``.

    This replaces ``torch.compile``, whose caches (``save_cache_artifacts``, the FX-graph cache)
    still re-trace the model with dynamo on every run: a second run paid most of the first
    compile again (45 s on efficientnet_lite0, 2 cores), and its static shapes needed the last
    batch padded. Inductor's own cache folder (``$TORCHINDUCTOR_CACHE_DIR``) defaults to
    ``inductor/`` inside the engine cache, so everything a later run needs stays together."""

    name = "compile"
    memory_format = "contiguous_format"  # measured: AOTInductor's kernels are faster on NCHW input

    def artefact(self, batch_size: int) -> Path | None:
        return self.artefacts.path(self.name, self.spec, ".pt2", aoti=1)

    def prepare(self, batch_size: int) -> None:
        # Loading a package first checks which vector instruction sets this CPU can build, by
        # compiling a test program for each (20 s on 2 cores); inductor caches the answer in its
        # cache folder, which would otherwise be a /tmp folder that a reboot empties.
        os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(self.artefacts.root / "inductor"))
        import torch

        super().prepare(batch_size)
        path = self.artefact(batch_size)
        assert path is not None
        if path.is_file():
            self.from_cache = True
        else:
            self.artefacts.write(path, self._compile)
        self.package = torch._inductor.aoti_load_package(str(path))

    def _compile(self, tmp: Path) -> None:
        import torch

        from .pooling import Autocast

        size = self.spec.input_size
        example = torch.zeros(2, 3, size, size, device=self.spec.device)
        batch = torch.export.Dim("batch", min=1, max=65536)
        module = Autocast(self.model, self.spec.device, self.spec.precision)
        with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
            warnings.simplefilter("ignore")
            program = torch.export.export(module, (example,), dynamic_shapes=({0: batch},))
            package = tmp.with_name(tmp.name + ".pt2")  # the compiler insists on the suffix
            torch._inductor.aoti_compile_and_package(program, package_path=str(package))
        os.replace(package, tmp)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import torch

        with torch.inference_mode():
            return self.package(x).float()


class OnnxEngine(Engine):
    """Shared by the engines that run an ONNX export of the module (dynamic batch axis)."""

    memory_format = "contiguous_format"  # numpy hands ONNX runtimes plain NCHW arrays

    @staticmethod
    def default_threads(cpus: int) -> int:
        """Half the cores: these engines run the forward pass 3-4x faster than eager, so decoding
        becomes the bottleneck and needs the rest. Measured on 2 busy cores, efficientnet_lite0,
        ants/bees, 2 workers: 1 thread 37.5 img/s end to end, 2 threads 29.6."""
        return max(1, cpus // 2)

    def onnx_path(self) -> Path:
        from importlib.metadata import version

        return self.artefacts.path("onnx", self.spec, ".onnx", onnx=version("onnx"))

    def artefact(self, batch_size: int) -> Path | None:
        return self.onnx_path()

    def onnx_file(self) -> Path:
        """The export, made now if no earlier run left it on disk."""
        path = self.onnx_path()
        if path.is_file():
            self.from_cache = True
            return path
        import torch

        example = torch.zeros(2, 3, self.spec.input_size, self.spec.input_size)
        self.artefacts.write(path, lambda tmp: export_onnx(self.model, example, tmp))
        return path


def export_onnx(model: torch.nn.Module, example: torch.Tensor, path: Path) -> None:
    """The TorchScript-based exporter: one self-contained graph, weights inside, dynamic batch."""
    import torch

    # The caller may be inside inference_mode, whose tensors the tracing exporter cannot use.
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")  # its deprecation notice
        torch.onnx.export(
            model,
            (example,),
            str(path),
            dynamo=False,
            input_names=["images"],
            output_names=["features"],
            dynamic_axes={"images": {0: "batch"}, "features": {0: "batch"}},
            opset_version=17,
            do_constant_folding=True,
        )


@register_engine
class OnnxRuntimeEngine(OnnxEngine):
    name = "onnxruntime"
    modules = ("onnx", "onnxruntime")
    devices = ("cpu",)
    precisions = ("fp32",)

    def prepare(self, batch_size: int) -> None:
        import onnxruntime as ort

        path = self.onnx_file()
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Idle intra-op threads spin by default; here they would take the cores the decoding
        # workers need between batches.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import torch

        arr = x.detach().cpu().contiguous().numpy()
        return torch.from_numpy(self.session.run(None, {"images": arr})[0])


@register_engine
class OpenVinoEngine(OnnxEngine):
    """OpenVINO on the CPU, from the ONNX export saved once as OpenVINO IR; its compiled-kernel
    cache (``CACHE_DIR``) sits beside the IR. Inference precision is pinned to f32: on CPUs with
    bf16 support OpenVINO would otherwise lower it by default."""

    name = "openvino"
    modules = ("onnx", "openvino")
    devices = ("cpu",)
    precisions = ("fp32",)

    def artefact(self, batch_size: int) -> Path | None:
        from importlib.metadata import version

        return self.artefacts.path(self.name, self.spec, ".xml", openvino=version("openvino"))

    def prepare(self, batch_size: int) -> None:
        import openvino as ov

        xml = self.artefact(batch_size)
        assert xml is not None
        core = ov.Core()
        core.set_property({"CACHE_DIR": str(xml.with_suffix(".kernels"))})
        if xml.is_file():
            self.from_cache = True
            model = core.read_model(str(xml))
        else:
            model = core.read_model(str(self.onnx_file()))
            save_ir(ov, model, xml)
            self.from_cache = False
        config = {
            "INFERENCE_NUM_THREADS": self.threads,
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_PRECISION_HINT": "f32",
        }
        self.request = core.compile_model(model, "CPU", config).create_infer_request()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import torch

        arr = x.detach().cpu().contiguous().numpy()
        return torch.from_numpy(self.request.infer({0: arr})[0].copy())


def save_ir(ov, model, xml: Path) -> None:
    """IR is two files, ``.xml`` and ``.bin``, written under temporary names; the ``.bin`` goes
    into place first, so an ``.xml`` on disk always has its weights beside it."""
    xml.parent.mkdir(parents=True, exist_ok=True)
    tmp = xml.with_name(f".{xml.stem}.{os.getpid()}.xml")
    try:
        ov.save_model(model, str(tmp), compress_to_fp16=False)
        os.replace(tmp.with_suffix(".bin"), xml.with_suffix(".bin"))
        os.replace(tmp, xml)
    finally:
        tmp.unlink(missing_ok=True)
        tmp.with_suffix(".bin").unlink(missing_ok=True)


# --------------------------------------------------------------------------- choosing and checking

# `auto` only sets up a faster engine when the images to extract earn its set-up back: the
# export or compile on a first run (nothing on disk yet), loading it on a later one, plus the
# eager probe. Break-even image counts (first run, later run), measured with
# benchmarks/engines.py on 2 CPU cores with efficientnet_lite0.
AUTO_MIN_IMAGES: dict[str, tuple[int, int]] = {
    "onnxruntime": (64, 16),
    "openvino": (64, 16),
    # A first compile costs a minute or more (efficientnet_lite0, 2 cores) for about 1.5x eager's
    # forward rate, so it pays only on big jobs; loading the compiled package takes 0.1 s.
    "compile": (20000, 64),
    "eager": (0, 0),
}


@dataclass
class EngineReport:
    """Which engine ran and what its check found; ``--json`` carries it."""

    engine: str
    requested: str
    max_abs_diff: float | None = None  # None for eager, the reference itself; the worst of every check
    tolerance: float = TOLERANCE
    probe_images: int = 0  # rows recomputed by eager over the whole run
    checks: int = 0  # batches checked against eager (the first one, then every RECHECK_EVERY-th)
    from_cache: bool = False
    prepare_seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def describe(self) -> str:
        if self.max_abs_diff is None:
            return f"engine {self.engine}"
        cached = "from cache" if self.from_cache else "built"
        return (
            f"engine {self.engine} ({cached} in {self.prepare_seconds:.1f} s; max |diff| vs eager "
            f"{self.max_abs_diff:.1e} on {self.probe_images} images in {self.checks} batches, "
            f"tolerance {self.tolerance:g})"
        )


class ForwardPass:
    """The forward pass behind one extraction: chooses the engine, prepares it and checks it
    against eager on the first batch, then runs every batch through it.

    An explicit engine that cannot run or fails its check is an error; ``auto`` tries the
    engines of ``AUTO_ORDER`` that are installed, in turn, and keeps the first that passes."""

    def __init__(
        self,
        model: torch.nn.Module,
        spec: EngineSpec,
        choice: str = "auto",
        artefacts: Artefacts | None = None,
        threads: int | None = None,
        note: Callable[[str], None] | None = None,
    ):
        check_engine(choice, spec.device, spec.precision)
        self.model, self.spec, self.choice = model, spec, choice
        self.artefacts = artefacts or Artefacts()
        self.threads = threads
        self.note = note or (lambda _msg: None)
        self.engine: Engine | None = None
        self.report: EngineReport | None = None
        self.batches = 0  # batches run so far
        self.plan(None, 32)

    @property
    def tolerance(self) -> float:
        return REDUCED_TOLERANCE.get(self.spec.precision, TOLERANCE)

    def plan(self, n_images: int | None, batch_size: int) -> list[str]:
        """The engines to try, best first, for ``n_images`` images (None: as many as it takes)."""
        self.batch_size = batch_size
        if self.choice != "auto":
            self.candidates = [self.choice]
            return self.candidates
        self.candidates = []
        for name in AUTO_ORDER[self.spec.device]:
            cls = get_engine(name)
            if cls.unusable(self.spec.device, self.spec.precision):
                continue
            cold, warm = AUTO_MIN_IMAGES[name]
            probe = cls(self.model, self.spec, self.artefacts, self.threads)
            needed = warm if probe.has_artefact(batch_size) else cold
            if n_images is None or n_images >= needed:
                self.candidates.append(name)
        return self.candidates

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.engine is None:
            self.batches = 1
            return self._first_batch(x)
        out = self.engine.forward(self.engine.layout(x))
        self.batches += 1
        if self.engine.name != "eager" and (self.batches - 1) % RECHECK_EVERY == 0:
            self._recheck(x, out)
        return out

    def _recheck(self, x: torch.Tensor, out: torch.Tensor) -> None:
        """A later batch against eager: an engine that drifts out of tolerance stops the run
        (the caller drops what this run wrote), so its vectors never join eager's in a cache."""
        assert self.engine is not None and self.report is not None
        k = min(RECHECK_IMAGES, len(x))
        if not k:
            return
        rows = _spread_rows(len(x), k)
        reference = Engine(self.model, self.spec, self.artefacts, self.threads).forward(x[rows])
        diff = float((out[rows].to(reference.device) - reference).abs().max())
        report = self.report
        report.checks += 1
        report.probe_images += k
        report.max_abs_diff = max(report.max_abs_diff or 0.0, diff)
        if not diff <= self.tolerance:  # also refuses NaN
            raise EngineDrift(
                f"engine {self.engine.name} gave features up to {diff:.2e} away from eager on batch {self.batches} "
                f"(tolerance {self.tolerance:g}; its first batch passed), so its vectors would not belong to "
                f"this feature space; nothing of this run was kept: re-run with --engine eager"
            )

    def _first_batch(self, x: torch.Tensor) -> torch.Tensor:
        k = min(PROBE_IMAGES, len(x))
        reference = None
        for name in self.candidates:
            engine = get_engine(name)(self.model, self.spec, self.artefacts, self.threads)
            started = time.perf_counter()
            try:
                engine.prepare(self.batch_size)
                out = engine.forward(engine.layout(x))
            except Exception as exc:
                message = f"engine {name} failed on {self.spec.backbone}: {type(exc).__name__}: {exc}"
                if self.choice != "auto":
                    raise EngineError(f"{message}; use --engine auto or eager") from None
                self._skip(message)
                continue
            engine.prepare_seconds = time.perf_counter() - started
            report = EngineReport(name, self.choice, tolerance=self.tolerance, from_cache=engine.from_cache)
            report.prepare_seconds = engine.prepare_seconds
            if name != "eager":  # eager is the reference itself
                if reference is None:
                    reference = Engine(self.model, self.spec, self.artefacts, self.threads).forward(x[:k])
                diff = float((out[:k].to(reference.device) - reference).abs().max()) if k else 0.0
                report.max_abs_diff, report.probe_images = diff, k
                if not diff <= self.tolerance:  # also refuses NaN
                    self._refuse(name, diff, k)
                    continue
            self.engine, self.report = engine, report
            report.checks = 1 if name != "eager" else 0
            report.notes = list(getattr(self, "skipped", []))
            return out
        raise EngineError(f"no engine passed its check on {self.spec.backbone}: {'; '.join(self.skipped)}")

    def _skip(self, message: str) -> None:
        self.skipped = [*getattr(self, "skipped", []), message]
        self.note(f"note: {message}; trying the next engine")

    def _refuse(self, name: str, diff: float, k: int) -> None:
        precision = "fp32" if self.spec.precision == "fp32" else f"{self.spec.precision} autocast"
        message = (
            f"engine {name} gives features up to {diff:.2e} away from eager {precision} on {k} probe images "
            f"(tolerance {self.tolerance:g}), so its vectors would not belong to this feature space"
        )
        if self.choice != "auto":
            raise EngineError(f"{message}: use --engine auto or eager")
        self._skip(message)


def check_engine(choice: str, device: str | None, precision: str = "fp32") -> None:
    """Refuse an unknown or unusable ``--engine`` before any work is done (imports no torch
    unless ``device`` is ``auto``, which must ask torch whether there is a GPU)."""
    if choice not in CHOICES:
        raise EngineError(f"--engine must be one of {', '.join(CHOICES)}, not {choice!r}")
    if choice == "auto":
        return
    if device in (None, "auto"):
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    why = get_engine(choice).unusable(str(device).split(":")[0], precision)
    if why:
        raise EngineError(f"--engine {choice} cannot run here: {why}; use --engine auto or eager")
