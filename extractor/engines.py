"""Engines for the frozen forward pass: the same pooled features as eager PyTorch, faster
(AOTInductor, or an ONNX export run by onnxruntime or openvino: ``pip install "tlx[fast]"``),
checked against eager by :class:`ForwardPass` for the whole run."""

from __future__ import annotations

import hashlib
import json
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..common.atomic import atomic_path
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
# A kernel picked by batch shape, a drifting runtime or a corrupted artefact may show up later:
# eager recomputes RECHECK_IMAGES rows of every RECHECK_EVERY-th batch (under 1% of the images,
# about 3% more time with an engine 4x faster than eager).
RECHECK_EVERY = 8
RECHECK_IMAGES = 2

# Fastest first, as measured side by side by benchmarks/engines.py (lite0, 2 cores, one intra-op
# thread each): forward 71 img/s openvino, 52 onnxruntime, 16 compile, 11 eager on a busy machine.
AUTO_ORDER = {"cpu": ("openvino", "onnxruntime", "compile", "eager"), "cuda": ("compile", "eager")}
# `auto` sets up a faster engine only for enough images to earn back its export or compile (first
# run) or its loading (later runs), plus the eager probe: break-even counts (first, later) measured
# with benchmarks/engines.py on 2 CPU cores with efficientnet_lite0. A first compile costs a minute
# or more for about 1.5x eager's rate, so it pays only on big jobs.
AUTO_MIN_IMAGES = {"onnxruntime": (64, 16), "openvino": (64, 16), "compile": (20000, 64), "eager": (0, 0)}


class EngineError(TlxError):
    """An engine that cannot run here, or that would change the feature space."""


class EngineDrift(EngineError):
    """An engine that passed its first check and failed a later one, mid-run."""


@dataclass(frozen=True)
class EngineSpec:
    """What an engine's artefact depends on, besides the engine and library versions."""

    backbone: str
    weights_sha256: str
    pooling: str
    input_size: int
    device: str = "cpu"
    precision: str = "fp32"


class Artefacts:
    """Files an engine exported or compiled, named by a hash of everything that makes them. The
    default folder is per user, not per dataset: one export serves every dataset of a backbone."""

    def __init__(self, root: Path | None = None):
        if root is None:
            env = os.environ.get("TLX_ENGINE_CACHE_DIR")
            xdg = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
            root = Path(env).expanduser() if env else Path(xdg) / "tlx" / "engines"
        self.root = Path(root)

    def path(self, engine: str, spec: EngineSpec, suffix: str, **extra) -> Path:
        from importlib.metadata import version

        from ..version import __version__

        fields = {**spec.__dict__, "engine": engine, "tlx": __version__, "torch": version("torch"), **extra}
        key = hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:16]
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in spec.backbone)
        return self.root / f"{engine}-{safe}-{spec.pooling}-{spec.input_size}-{key}{suffix}"


_ENGINES: dict[str, type[Engine]] = {}


def register_engine(cls: type[Engine]) -> type[Engine]:
    _ENGINES[cls.name] = cls
    return cls


def get_engine(name: str) -> type[Engine]:
    if name not in _ENGINES:
        raise EngineError(f"--engine must be one of {', '.join(CHOICES)}, not {name!r}")
    return _ENGINES[name]


@register_engine
class Engine:
    """Eager PyTorch: the reference every other engine is checked against."""

    name = "eager"
    modules: tuple[str, ...] = ()  # importable modules the engine needs (from the `fast` extra)
    devices: tuple[str, ...] = ("cpu", "cuda")
    precisions: tuple[str, ...] = ("fp32", "fp16", "bf16")
    memory_format = "channels_last"  # the torch memory format its input should have
    # Intra-op threads: every core for eager, whose forward pass is the bottleneck (the decoding
    # workers run niced in its gaps).
    cores_per_thread = 1

    def __init__(self, model: torch.nn.Module, spec: EngineSpec, artefacts: Artefacts):
        self.model = model  # FeatureExtractor, eval, on the device
        self.spec = spec
        self.artefacts = artefacts
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        self.threads = max(1, cores // self.cores_per_thread)
        self.from_cache = False  # whether prepare() found its artefact on disk

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

    def artefact(self) -> Path | None:
        """The file the engine keeps on disk between runs (None: it keeps nothing)."""
        return None

    def prepare(self) -> None:
        """Build, export or load whatever the engine runs; done once, before the first batch."""
        import torch

        torch.set_num_threads(self.threads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import torch

        from .pooling import Autocast

        with torch.inference_mode():
            return Autocast(self.model, self.spec.device, self.spec.precision)(x).float()


@register_engine
class CompiledEngine(Engine):
    """AOTInductor: ``torch.export`` with a dynamic batch axis (inside autocast at reduced
    precision), compiled once into a package later runs load in seconds. ``torch.compile``
    re-traced the model on every run despite its caches (45 s on efficientnet_lite0, 2 cores)."""

    name = "compile"
    memory_format = "contiguous_format"  # measured: AOTInductor's kernels are faster on NCHW input

    def artefact(self) -> Path:
        return self.artefacts.path(self.name, self.spec, ".pt2", aoti=1)

    def prepare(self) -> None:
        # Loading a package first compiles a test program per vector instruction set (20 s on 2
        # cores); inductor caches the answer in its folder, else a /tmp folder a reboot empties.
        os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(self.artefacts.root / "inductor"))
        import torch

        super().prepare()
        path = self.artefact()
        self.from_cache = path.is_file()
        if not self.from_cache:
            with atomic_path(path) as tmp:  # a killed run never leaves half a package
                self._compile(tmp)
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
            try:
                torch._inductor.aoti_compile_and_package(program, package_path=str(package))
                os.replace(package, tmp)
            finally:
                package.unlink(missing_ok=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import torch

        with torch.inference_mode():
            return self.package(x).float()


class OnnxEngine(Engine):
    """Shared by the engines that run an ONNX export of the module (dynamic batch axis)."""

    memory_format = "contiguous_format"  # numpy hands ONNX runtimes plain NCHW arrays
    devices = ("cpu",)
    precisions = ("fp32",)
    # Half the cores: these run the forward pass 3-4x faster than eager, so decoding becomes the
    # bottleneck and needs the rest. Measured on 2 busy cores, efficientnet_lite0, ants/bees,
    # 2 workers: 1 thread 37.5 img/s end to end, 2 threads 29.6.
    cores_per_thread = 2

    def artefact(self) -> Path:
        from importlib.metadata import version

        return self.artefacts.path("onnx", self.spec, ".onnx", onnx=version("onnx"))

    def onnx_file(self) -> Path:
        """The export, made now if no earlier run left it on disk."""
        path = OnnxEngine.artefact(self)  # openvino's own artefact is the IR made from it
        self.from_cache = path.is_file()
        if not self.from_cache:
            import torch

            example = torch.zeros(2, 3, self.spec.input_size, self.spec.input_size)
            with atomic_path(path) as tmp:
                export_onnx(self.model, example, tmp)
        return path

    def numpy_input(self, x: torch.Tensor):
        return x.detach().cpu().contiguous().numpy()


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

    def prepare(self) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Idle intra-op threads spin by default, taking the cores the decoding workers need.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(self.onnx_file()), opts, providers=["CPUExecutionProvider"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import torch

        return torch.from_numpy(self.session.run(None, {"images": self.numpy_input(x)})[0])


@register_engine
class OpenVinoEngine(OnnxEngine):
    """OpenVINO on the CPU, from the ONNX export saved once as OpenVINO IR, its compiled-kernel
    cache beside it. Precision is pinned to f32: on bf16 CPUs OpenVINO would lower it by default."""

    name = "openvino"
    modules = ("onnx", "openvino")

    def artefact(self) -> Path:
        from importlib.metadata import version

        return self.artefacts.path(self.name, self.spec, ".xml", openvino=version("openvino"))

    def prepare(self) -> None:
        import openvino as ov

        xml = self.artefact()
        core = ov.Core()
        core.set_property({"CACHE_DIR": str(xml.with_suffix(".kernels"))})
        from_ir = xml.is_file()
        model = core.read_model(str(xml if from_ir else self.onnx_file()))
        if not from_ir:
            save_ir(ov, model, xml)
        self.from_cache = from_ir  # onnx_file() said whether the export was cached, not the IR
        config = {
            "INFERENCE_NUM_THREADS": self.threads,
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_PRECISION_HINT": "f32",
        }
        self.request = core.compile_model(model, "CPU", config).create_infer_request()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import torch

        return torch.from_numpy(self.request.infer({0: self.numpy_input(x)})[0].copy())


def save_ir(ov, model, xml: Path) -> None:
    """IR is two files written under temporary names; the ``.bin`` goes into place first, so an
    ``.xml`` on disk always has its weights beside it."""
    xml.parent.mkdir(parents=True, exist_ok=True)
    tmp = xml.with_name(f".{xml.stem}.{os.getpid()}.xml")
    try:
        ov.save_model(model, str(tmp), compress_to_fp16=False)
        os.replace(tmp.with_suffix(".bin"), xml.with_suffix(".bin"))
        os.replace(tmp, xml)
    finally:
        tmp.unlink(missing_ok=True)
        tmp.with_suffix(".bin").unlink(missing_ok=True)


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
    """The forward pass behind one extraction: chooses the engine, checks it against eager on the
    first batch, then runs every batch through it. An explicit engine that cannot run or fails
    its check is an error; ``auto`` tries the installed engines of ``AUTO_ORDER`` in turn."""

    def __init__(self, model, spec: EngineSpec, choice: str, artefacts: Artefacts, note: Callable[[str], None]):
        check_engine(choice, spec.device, spec.precision)
        self.model, self.spec, self.choice, self.artefacts, self.note = model, spec, choice, artefacts, note
        self.tolerance = REDUCED_TOLERANCE.get(spec.precision, TOLERANCE)
        self.engine: Engine | None = None
        self.report: EngineReport | None = None
        self.skipped: list[str] = []  # why each engine `auto` tried before was passed over
        self.batches = 0  # batches run so far
        self.plan(None)

    def plan(self, n_images: int | None) -> list[str]:
        """The engines to try, best first, for ``n_images`` images (None: as many as it takes);
        every artefact serves any batch size."""
        self.candidates = [self.choice]
        if self.choice == "auto":
            self.candidates = [name for name in AUTO_ORDER[self.spec.device] if self._earns_back(name, n_images)]
        return self.candidates

    def _earns_back(self, name: str, n_images: int | None) -> bool:
        cls = get_engine(name)
        if cls.unusable(self.spec.device, self.spec.precision):
            return False
        cold, warm = AUTO_MIN_IMAGES[name]
        artefact = cls(self.model, self.spec, self.artefacts).artefact()
        return n_images is None or n_images >= (warm if artefact is not None and artefact.is_file() else cold)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.batches += 1
        if self.engine is None:
            return self._first_batch(x)
        out = self.engine.forward(self.engine.layout(x))
        if self.engine.name != "eager" and (self.batches - 1) % RECHECK_EVERY == 0:
            self._recheck(x, out)
        return out

    def _check(self, report: EngineReport, x: torch.Tensor, out: torch.Tensor, rows: list[int]) -> float:
        """Max abs difference of ``out[rows]`` from eager's features of ``x[rows]``, counted in ``report``."""
        reference = Engine(self.model, self.spec, self.artefacts).forward(x[rows])
        diff = float((out[rows].to(reference.device) - reference).abs().max())
        report.checks += 1
        report.probe_images += len(rows)
        report.max_abs_diff = max(report.max_abs_diff or 0.0, diff)
        return diff

    def _recheck(self, x: torch.Tensor, out: torch.Tensor) -> None:
        """A later batch against eager: an engine that drifts out of tolerance stops the run
        (the caller drops what this run wrote), so its vectors never join eager's in a cache."""
        assert self.engine is not None and self.report is not None
        k = min(RECHECK_IMAGES, len(x))
        if not k:
            return
        # k rows spread over the batch, first and last included
        rows = [len(x) // 2] if k == 1 else sorted({round(i * (len(x) - 1) / (k - 1)) for i in range(k)})
        diff = self._check(self.report, x, out, rows)
        if not diff <= self.tolerance:  # also refuses NaN
            raise EngineDrift(
                f"engine {self.engine.name} gave features up to {diff:.2e} away from eager on batch {self.batches} "
                f"(tolerance {self.tolerance:g}; its first batch passed), so its vectors would not belong to "
                f"this feature space; nothing of this run was kept: re-run with --engine eager"
            )

    def _first_batch(self, x: torch.Tensor) -> torch.Tensor:
        k = min(PROBE_IMAGES, len(x))
        for name in self.candidates:
            engine = get_engine(name)(self.model, self.spec, self.artefacts)
            started = time.perf_counter()
            try:
                engine.prepare()
                out = engine.forward(engine.layout(x))
            except Exception as exc:
                self._pass_over(f"engine {name} failed on {self.spec.backbone}: {type(exc).__name__}: {exc}", "; ")
                continue
            report = EngineReport(name, self.choice, tolerance=self.tolerance, from_cache=engine.from_cache)
            report.prepare_seconds = time.perf_counter() - started
            if name != "eager":  # eager is the reference itself
                diff = self._check(report, x, out, list(range(k))) if k else 0.0
                if not diff <= self.tolerance:  # also refuses NaN
                    precision = "fp32" if self.spec.precision == "fp32" else f"{self.spec.precision} autocast"
                    self._pass_over(
                        f"engine {name} gives features up to {diff:.2e} away from eager {precision} on {k} probe "
                        f"images (tolerance {self.tolerance:g}), so its vectors would not belong to this feature space",
                        ": ",
                    )
                    continue
            self.engine, self.report = engine, report
            report.notes = list(self.skipped)
            return out
        raise EngineError(f"no engine passed its check on {self.spec.backbone}: {'; '.join(self.skipped)}")

    def _pass_over(self, message: str, sep: str) -> None:
        """An explicit engine's failure is the run's error; `auto` notes it and tries the next one."""
        if self.choice != "auto":
            raise EngineError(f"{message}{sep}use --engine auto or eager") from None
        self.skipped.append(message)
        self.note(f"note: {message}; trying the next engine")


def check_engine(choice: str, device: str | None, precision: str = "fp32") -> None:
    """Refuse an unknown or unusable ``--engine`` before any work is done (imports no torch
    unless ``device`` is ``auto``, which must ask torch whether there is a GPU)."""
    if choice == "auto":
        return
    engine = get_engine(choice)  # an unknown name fails here, before torch is imported
    if device in (None, "auto"):
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    why = engine.unusable(str(device).split(":")[0], precision)
    if why:
        raise EngineError(f"--engine {choice} cannot run here: {why}; use --engine auto or eager")
