"""TensorRT: run a serialized engine from a bundle, on TensorRT 10.x and 11.x.

An engine runs only where it was built: the same TensorRT version (unless built
version-compatible) and the same GPU compute capability (unless built hardware-compatible).
TensorRT's own message for a mismatch is a cryptic serialization assertion, so before loading
this runtime compares the engine's manifest entry with the host and, on a mismatch, says what
differs and how to rebuild on this machine (`vggdeploy build BUNDLE --precision P`).

Device memory, streams and copies go through `vggdeploy.runtimes._cuda` (PyTorch CUDA tensors),
looked up at call time so the test double can stand in for it.

Besides `infer`, `TrtRuntime` implements the benchmark's `StagedRuntime` hooks (`stage_inputs`,
`enqueue_h2d`, `enqueue_compute`, `enqueue_d2h`, `record_event`, `synchronize`, `event_ms`,
`fetch_outputs`), so `vggdeploy bench` reports trtexec's split: host-to-device, compute and
device-to-host timed with CUDA events on the runtime's stream, plus end to end. As in trtexec,
H2D and D2H are the transfers between pinned host buffers and the device only: the inputs are
copied into pinned memory once per case (`stage_inputs`), outside the timed stages.
"""

from __future__ import annotations

import importlib
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from vggdeploy.bundle import Bundle
from vggdeploy.errors import BundleError, InputError, RuntimeUnavailableError
from vggdeploy.runtimes.base import Runtime, TensorSpec, format_shape

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "int8")

#: Every `tensorrt` name this module touches (module attributes, enum members, methods and
#: properties of TensorRT objects). tests/test_trt_api_names.py checks each against the names in
#: the TensorRT 10.16 and 11.4 Python bindings, and that the code uses nothing outside this list.
TENSORRT_API = (
    "__version__",
    "ILogger",
    "Severity",
    "INTERNAL_ERROR",
    "ERROR",
    "WARNING",
    "INFO",
    "VERBOSE",
    "log",
    "Runtime",
    "engine_host_code_allowed",
    "deserialize_cuda_engine",
    "num_io_tensors",
    "get_tensor_name",
    "get_tensor_mode",
    "get_tensor_dtype",
    "get_tensor_shape",
    "get_tensor_profile_shape",
    "num_optimization_profiles",
    "TensorIOMode",
    "INPUT",
    "DataType",
    "FLOAT",
    "HALF",
    "INT8",
    "INT32",
    "INT64",
    "BOOL",
    "UINT8",
    "create_execution_context",
    "set_optimization_profile_async",
    "set_input_shape",
    "set_tensor_address",
    "execute_async_v3",
)

#: What the staged hooks' H2D and D2H include (recorded by `describe()`, so in bench results).
STAGED_COPIES = {
    "h2d": (
        "pinned host -> device transfer only; the inputs are copied from NumPy into pinned host "
        "buffers once per case (stage_inputs), outside the timed stages, as trtexec fills its "
        "host buffers once"
    ),
    "d2h": (
        "device -> pinned host transfer only; the pinned -> NumPy copy is made by fetch_outputs, "
        "outside the timed stages"
    ),
}

INSTALL_HINT = (
    "install it with `pip install tensorrt` (x86_64 or SBSA Linux/Windows with an NVIDIA driver; "
    "`pip install tensorrt-cu12` or `tensorrt-cu13` to match your CUDA), or on a Jetson use the "
    "TensorRT that ships with JetPack (`sudo apt install nvidia-jetpack`, which provides "
    "python3-libnvinfer; pip wheels do not support Jetson)"
)


# -- importing TensorRT and the CUDA glue -------------------------------------------------------


def import_tensorrt() -> Any:
    """The `tensorrt` module, or a one-line error saying how to install it."""
    try:
        import tensorrt as trt
    except ImportError as exc:
        reason = "" if exc.name == "tensorrt" else f" ({str(exc).splitlines()[0][:200]})"
        raise RuntimeUnavailableError(
            f"TensorRT is not installed or cannot load{reason}: {INSTALL_HINT}"
        ) from None
    except OSError as exc:  # a wheel whose libnvinfer cannot be found or loaded
        raise RuntimeUnavailableError(
            f"TensorRT's libraries cannot load ({exc}): {INSTALL_HINT}"
        ) from None
    return trt


def cuda_glue() -> Any:
    """`vggdeploy.runtimes._cuda`, resolved through sys.modules (the test double replaces it)."""
    return importlib.import_module("vggdeploy.runtimes._cuda")


def version_tuple(version: str) -> tuple[int, ...]:
    parts = []
    for piece in str(version).split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def major_version(trt: Any) -> int:
    return version_tuple(trt.__version__)[0]


# -- logging ------------------------------------------------------------------------------------


def trt_severity_for(verbosity: int) -> str:
    """CLI verbosity (-v count) -> the lowest TensorRT severity that is logged."""
    return "WARNING" if verbosity <= 0 else ("INFO" if verbosity == 1 else "VERBOSE")


def make_logger(trt: Any, verbosity: int = 0, name: str = "vggdeploy.tensorrt") -> Any:
    """A `trt.ILogger` that forwards TensorRT's messages to Python `logging`.

    Messages below the severity chosen by `verbosity` are dropped (TensorRT's INFO and VERBOSE
    output is long). Errors are also kept in `.errors` so a failure can be explained in one line.
    """
    severity = trt.ILogger.Severity
    order = [
        severity.INTERNAL_ERROR,
        severity.ERROR,
        severity.WARNING,
        severity.INFO,
        severity.VERBOSE,
    ]
    levels = {
        severity.INTERNAL_ERROR: logging.CRITICAL,
        severity.ERROR: logging.ERROR,
        severity.WARNING: logging.WARNING,
        severity.INFO: logging.INFO,
        severity.VERBOSE: logging.DEBUG,
    }
    threshold = order.index(getattr(severity, trt_severity_for(verbosity)))
    pylog = logging.getLogger(name)

    class _Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: list[str] = []
            self.warnings: list[str] = []

        def log(self, sev: Any, msg: str) -> None:
            rank = order.index(sev) if sev in order else len(order)
            if rank <= 1:
                self.errors.append(msg)
            elif rank == 2:
                self.warnings.append(msg)
            if rank <= threshold:
                pylog.log(levels.get(sev, logging.DEBUG), "TensorRT: %s", msg)

        def mark(self) -> int:
            return len(self.errors)

        def errors_since(self, mark: int) -> list[str]:
            return self.errors[mark:]

    return _Logger()


def summarize_errors(errors: list[str], limit: int = 2) -> str:
    """The last TensorRT errors, shortened for a one-line message."""
    if not errors:
        return "TensorRT logged no error"
    lines = [" ".join(e.split())[:240] for e in errors[-limit:]]
    return "; ".join(lines)


# -- data types ---------------------------------------------------------------------------------


def numpy_dtype(trt: Any, dtype: Any) -> np.dtype:
    """TensorRT DataType -> NumPy dtype (TensorRT's own `nptype` helper is pure Python and
    missing from some builds, so the table is here)."""
    table = {
        trt.DataType.FLOAT: np.float32,
        trt.DataType.HALF: np.float16,
        trt.DataType.INT8: np.int8,
        trt.DataType.INT32: np.int32,
        trt.DataType.INT64: np.int64,
        trt.DataType.BOOL: np.bool_,
        trt.DataType.UINT8: np.uint8,
    }
    if dtype not in table:
        raise RuntimeUnavailableError(
            f"engine tensor type {dtype} has no NumPy equivalent: export with float32 inputs"
        )
    return np.dtype(table[dtype])


# -- compatibility --------------------------------------------------------------------------------


def engine_artifact_key(precision: str) -> str:
    return f"engine.{precision}"


def engine_file_name(precision: str) -> str:
    return f"model.{precision}.engine"


def rebuild_hint(bundle_root: str | os.PathLike[str] | None, precision: str) -> str:
    where = str(bundle_root) if bundle_root is not None else "BUNDLE"
    return f"rebuild it on this machine with `vggdeploy build {where} --precision {precision}`"


# Across major versions, version-compatible engines run only on these (built, runtime) pairs
# of TensorRT majors (NVIDIA's TensorRT 11.4.1 support matrix, "Engine Portability").
CROSS_MAJOR_VERSION_COMPAT = {(8, 10), (10, 11)}


def version_incompatibility(record: dict[str, Any], host_version: str) -> str | None:
    """Why TensorRT `host_version` cannot deserialize the engine in `record`, or None.

    Engines run only on the TensorRT that built them, unless built version-compatible: then on
    the same or a later release of that major version, or of a supported later major.
    """
    built = str(record.get("tensorrt_version") or "")
    if not built:
        return None
    flags = record.get("flags") or {}
    built_v, host_v = version_tuple(built), version_tuple(host_version)
    if built_v == host_v:
        return None
    if not flags.get("version_compatible"):
        return (
            f"was built with TensorRT {built} but this host has {host_version}; engines run "
            "only on the TensorRT version that built them (unless built with --version-compatible)"
        )
    if host_v < built_v:
        return (
            f"was built with TensorRT {built}, newer than this host's {host_version}; "
            "version-compatible engines run on the same or later TensorRT only"
        )
    if host_v[0] != built_v[0] and (built_v[0], host_v[0]) not in CROSS_MAJOR_VERSION_COMPAT:
        return (
            f"was built version-compatible with TensorRT {built}, which TensorRT {host_version} "
            "cannot run: across major versions NVIDIA supports only 8 -> 10 and 10 -> 11"
        )
    if flags.get("exclude_lean_runtime"):
        return (
            f"was built version-compatible with TensorRT {built} but without its lean runtime "
            f"(--exclude-lean-runtime), so TensorRT {host_version} cannot run it"
        )
    return None


def gpu_incompatibility(
    record: dict[str, Any], compute_capability: str, gpu: str, *, jetson: bool = False
) -> str | None:
    """Why the engine in `record` cannot run on a GPU of `compute_capability`, or None.

    `gpu` names that GPU in the message (e.g. "GPU 0 is Tesla T4"). Engines are specific to
    the compute capability they were built on, unless built hardware-compatible (ampere+: any
    compute capability 8.0 or later, but not on Jetson).
    """
    built_gpu = record.get("gpu") or {}
    built_cc = str(built_gpu.get("compute_capability") or "")
    hardware = (record.get("flags") or {}).get("hardware_compat") or "none"
    if hardware == "ampere+":
        if version_tuple(compute_capability) < (8, 0):
            return (
                "was built hardware-compatible for Ampere and later (compute capability 8.0+), "
                f"but {gpu} (compute capability {compute_capability})"
            )
        if jetson:
            return (
                "was built hardware-compatible (ampere+), which TensorRT does not support on "
                "Jetson/JetPack"
            )
        return None
    if built_cc and str(compute_capability) != built_cc:
        return (
            f"was built for compute capability {built_cc} ({built_gpu.get('name', '?')}) but "
            f"{gpu} (compute capability {compute_capability}); engines are not portable "
            "across GPU architectures"
        )
    return None


def check_compatibility(
    record: dict[str, Any],
    host_trt_version: str,
    device: Any,
    *,
    bundle_root: str | os.PathLike[str] | None = None,
    precision: str = "fp16",
) -> None:
    """Refuse an engine that cannot run here, saying what differs and where to rebuild.

    `record` is the engine's manifest entry (see `vggdeploy.exporter.engine`); `device` is a
    `_cuda.DeviceInfo` for the GPU it would run on.
    """
    hint = rebuild_hint(bundle_root, precision)
    name = record.get("path", engine_file_name(precision))
    reason = version_incompatibility(record, host_trt_version)
    if reason is None:
        reason = gpu_incompatibility(
            record,
            str(device.compute_capability),
            f"GPU {device.index} is {device.name}",
            jetson=bool(getattr(device, "jetson", False)),
        )
    if reason is not None:
        raise RuntimeUnavailableError(f"{name} {reason}: {hint}")
    built_gpu = (record.get("gpu") or {}).get("name")
    hardware = (record.get("flags") or {}).get("hardware_compat", "none")
    if hardware == "none" and built_gpu and built_gpu != device.name:
        log.warning(
            "%s was built on %s and runs on %s (same compute capability %s): it loads, but its "
            "kernels were tuned for the other GPU; rebuild here for best speed",
            name,
            built_gpu,
            device.name,
            device.compute_capability,
        )


# -- the runtime ----------------------------------------------------------------------------------


class TrtRuntime(Runtime):
    """A TensorRT engine of a bundle, run on one GPU.

    Args:
        source: a `Bundle`, a bundle directory, or an `.engine` file. From a bundle the engine
            is `engine.<precision>` (`model.<precision>.engine`), its sha256 is verified, and
            its manifest entry is checked against this host before TensorRT sees it. A bare
            engine file is checked against the manifest beside it when there is one.
        precision: "fp32", "fp16" or "int8": which engine of the bundle.
        device_id: the CUDA device to run on.
        cuda_graphs: capture TensorRT's enqueue in a CUDA graph per input shape and replay it
            (fewer launches; what `trtexec --useCudaGraph` measures). A new shape costs one
            ordinary run and one capture.
    """

    name = "tensorrt"

    def __init__(
        self,
        source: Bundle | str | os.PathLike[str],
        *,
        precision: str = "fp16",
        device_id: int = 0,
        cuda_graphs: bool = False,
        verbosity: int = 0,
    ) -> None:
        super().__init__()
        if precision not in PRECISIONS:
            raise InputError(
                f"TensorRT precision {precision!r} is not supported: use {', '.join(PRECISIONS)}"
            )
        if not isinstance(device_id, int) or device_id < 0:
            raise InputError(f"device id {device_id!r} must be a non-negative integer")
        self.precision = precision
        self.device_id = device_id
        self.cuda_graphs = bool(cuda_graphs)
        self.verbosity = verbosity
        self._source = source
        self.bundle: Bundle | None = None
        self.engine_path: Path | None = None
        self.record: dict[str, Any] | None = None
        self._trt: Any = None
        self._cuda: Any = None
        self._device: Any = None
        self._logger: Any = None
        self._runtime: Any = None
        self._engine: Any = None
        self._context: Any = None
        self._stream: Any = None
        self._profiles: list[dict[str, tuple[tuple[int, ...], ...]]] = []
        self._active_profile = 0
        self._buffers: dict[str, Any] = {}
        self._graph: Any = None
        self._graph_key: tuple[Any, ...] | None = None
        # What the context is bound to (shapes and addresses), for the staged hooks.
        self._bound_key: tuple[Any, ...] | None = None
        self._out_buffers: dict[str, Any] = {}
        self._host: dict[str, Any] = {}  # pinned host buffers of the staged hooks, by tensor
        self._staged_shapes: tuple[Any, ...] | None = None  # the shape key of the staged inputs

    # -- loading ----------------------------------------------------------------------------------

    def _resolve(self) -> None:
        source = self._source
        if isinstance(source, Bundle):
            self.bundle = source
        else:
            path = Path(source)
            if path.is_dir():
                self.bundle = Bundle.load(path)
            elif path.is_file():
                self.engine_path = path
                self.record = _record_beside(path)
                return
            else:
                raise BundleError(
                    f"{path} does not exist: give a bundle directory or an .engine file"
                )
        key = engine_artifact_key(self.precision)
        if key not in self.bundle.artifacts:
            raise BundleError(
                f"bundle {self.bundle.root} has no {self.precision} TensorRT engine: build it on "
                f"this machine with `vggdeploy build {self.bundle.root} --precision "
                f"{self.precision}`"
            )
        self.record = self.bundle.artifact(key)
        self.engine_path = self.bundle.artifact_path(key, verify=True)

    def _load(self) -> tuple[list[TensorSpec], list[TensorSpec]]:
        self._resolve()
        trt = import_tensorrt()
        cuda = cuda_glue()
        device = cuda.device_info(self.device_id)
        root = self.bundle.root if self.bundle else None
        if self.record is not None:
            check_compatibility(
                self.record, trt.__version__, device, bundle_root=root, precision=self.precision
            )
        else:
            log.warning(
                "%s has no manifest entry: its TensorRT version and GPU cannot be checked "
                "before loading",
                self.engine_path,
            )
        cuda.use_device(self.device_id)
        logger = make_logger(trt, self.verbosity)
        runtime = trt.Runtime(logger)
        flags = (self.record or {}).get("flags") or {}
        if flags.get("version_compatible") and not flags.get("exclude_lean_runtime"):
            # A version-compatible engine carries its own lean runtime, which is host code.
            runtime.engine_host_code_allowed = True
        data = self.engine_path.read_bytes()
        engine = runtime.deserialize_cuda_engine(data)
        if engine is None:
            raise RuntimeUnavailableError(
                f"TensorRT {trt.__version__} could not load {self.engine_path} "
                f"({summarize_errors(logger.errors)}): {rebuild_hint(root, self.precision)}"
            )
        context = engine.create_execution_context()
        if context is None:
            raise RuntimeUnavailableError(
                f"TensorRT could not create an execution context for {self.engine_path} "
                f"({summarize_errors(logger.errors)}): free GPU memory or build with a smaller "
                "--max-batch"
            )
        self._trt, self._cuda, self._device, self._logger = trt, cuda, device, logger
        self._runtime, self._engine, self._context = runtime, engine, context
        self._stream = cuda.Stream(self.device_id)
        self._active_profile = 0
        return self._describe_io()

    def _describe_io(self) -> tuple[list[TensorSpec], list[TensorSpec]]:
        trt, engine = self._trt, self._engine
        io = (self.bundle.manifest.get("io") if self.bundle else None) or {}
        axis_names = {
            t["name"]: t.get("shape", []) for t in io.get("inputs", []) + io.get("outputs", [])
        }
        inputs, outputs = [], []
        for index in range(engine.num_io_tensors):
            name = engine.get_tensor_name(index)
            dtype = numpy_dtype(trt, engine.get_tensor_dtype(name))
            dims = tuple(int(d) for d in engine.get_tensor_shape(name))
            known = axis_names.get(name, [])
            shape = tuple(
                d
                if d >= 0
                else (
                    known[axis]
                    if axis < len(known) and isinstance(known[axis], str)
                    else f"dim{axis}"
                )
                for axis, d in enumerate(dims)
            )
            spec = TensorSpec(name, shape, dtype.name)
            if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                inputs.append(spec)
            else:
                outputs.append(spec)
        self._profiles = []
        for profile in range(engine.num_optimization_profiles):
            self._profiles.append(
                {
                    spec.name: tuple(
                        tuple(int(d) for d in shape)
                        for shape in engine.get_tensor_profile_shape(spec.name, profile)
                    )
                    for spec in inputs
                    if any(isinstance(d, str) for d in spec.shape)
                }
            )
        return inputs, outputs

    def _close(self) -> None:
        if self._stream is not None:
            self._stream.synchronize()
        self._buffers.clear()
        self._out_buffers.clear()
        self._host.clear()
        self._graph = self._graph_key = self._bound_key = self._staged_shapes = None
        self._context = self._engine = self._runtime = self._stream = None

    # -- description ------------------------------------------------------------------------------

    @property
    def label(self) -> str:
        return f"tensorrt {self.precision}"

    def describe(self) -> dict[str, Any]:
        info: dict[str, Any] = {
            "runtime": self.name,
            "precision": self.precision,
            "engine": str(self.engine_path) if self.engine_path else None,
            "device_id": self.device_id,
            "cuda_graphs": self.cuda_graphs,
            "staged_copies": dict(STAGED_COPIES),
        }
        if self._trt is not None:
            info["tensorrt_version"] = self._trt.__version__
        if self._device is not None:
            info["gpu"] = self._device.name
            info["compute_capability"] = self._device.compute_capability
        if self._profiles:
            info["profiles"] = [
                {name: {"min": s[0], "opt": s[1], "max": s[2]} for name, s in p.items()}
                for p in self._profiles
            ]
        if self.record is not None:
            info["built_with"] = {
                "tensorrt_version": self.record.get("tensorrt_version"),
                "gpu": (self.record.get("gpu") or {}).get("name"),
                "flags": self.record.get("flags"),
            }
        return info

    # -- inference --------------------------------------------------------------------------------

    def _choose_profile(self, feed: dict[str, np.ndarray]) -> int:
        if not self._profiles or not any(self._profiles):
            return 0
        for index, ranges in enumerate(self._profiles):
            if all(_within(feed[name].shape, shapes) for name, shapes in ranges.items()):
                return index
        raise InputError(self._range_message(feed))

    def _range_message(self, feed: dict[str, np.ndarray]) -> str:
        spec = {s.name: s for s in self._inputs}
        parts = []
        for index, ranges in enumerate(self._profiles):
            for name, (lo, _opt, hi) in ranges.items():
                axes = [
                    f"{_axis_name(spec[name].shape, axis)} {lo[axis]}..{hi[axis]}"
                    for axis in range(len(lo))
                    if lo[axis] != hi[axis] or feed[name].shape[axis] != lo[axis]
                ]
                parts.append(f"profile {index}: {', '.join(axes) or format_shape(lo)}")
        name = next(iter(self._profiles[0]))
        what = ", ".join(
            f"{_axis_name(spec[name].shape, axis)} {feed[name].shape[axis]}"
            for axis in range(feed[name].ndim)
            if isinstance(spec[name].shape[axis], str)
        )
        root = self.bundle.root if self.bundle else "BUNDLE"
        return (
            f"input {name!r} shape {tuple(feed[name].shape)} ({what}) is outside the engine's "
            f"optimization profiles ({'; '.join(parts)}): use a size in range, or rebuild with "
            f"`vggdeploy build {root} --precision {self.precision} --max-batch N` "
            "(and --min-size/--max-size for a dense bundle)"
        )

    def _infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        stream = self._stream
        key = self._shape_key(feed)
        if self.cuda_graphs and key == self._graph_key:
            # Same shapes, so the same buffers: refresh the inputs and replay the graph.
            for spec in self._inputs:
                self._buffers[spec.name].copy_from_host(feed[spec.name], stream)
            self._graph.replay(stream)
            return {s.name: self._buffers[s.name].copy_to_host(stream) for s in self._outputs}
        out_buffers = self._bind(feed, key)
        for spec in self._inputs:
            array = np.ascontiguousarray(feed[spec.name])
            self._buffers[spec.name].copy_from_host(array, stream)
        self._execute()
        outputs = {name: buffer.copy_to_host(stream) for name, buffer in out_buffers.items()}
        if self.cuda_graphs:
            self._capture(key)
        return outputs

    def _shape_key(self, feed: dict[str, np.ndarray]) -> tuple[Any, ...]:
        """(profile, input shapes...): what a binding and a captured graph depend on."""
        profile = self._choose_profile(feed)
        return (profile, *(tuple(feed[s.name].shape) for s in self._inputs))

    def _bind(self, feed: dict[str, np.ndarray], key: tuple[Any, ...]) -> dict[str, Any]:
        """Select the profile, set the input shapes and point TensorRT at device buffers of the
        right size (allocated when the shapes change); return the output buffers."""
        context, stream = self._context, self._stream
        if key != self._graph_key:
            # A graph holds the addresses of the buffers it was captured with, which may be
            # reallocated below: it is replayed only for its own shapes, so drop it now.
            self._graph = self._graph_key = None
        profile = key[0]
        if profile != self._active_profile:
            context.set_optimization_profile_async(profile, stream.handle)
            self._active_profile = profile
        for spec in self._inputs:
            shape = tuple(feed[spec.name].shape)
            if not context.set_input_shape(spec.name, shape):
                raise InputError(
                    f"TensorRT rejected shape {shape} for input {spec.name!r} "
                    f"({summarize_errors(self._logger.errors)})"
                )
            buffer = self._buffer(spec.name, shape, feed[spec.name].dtype)
            context.set_tensor_address(spec.name, buffer.ptr)
        out_buffers = {}
        for spec in self._outputs:
            shape = tuple(int(d) for d in context.get_tensor_shape(spec.name))
            if any(d < 0 for d in shape):
                raise RuntimeUnavailableError(
                    f"TensorRT could not infer the shape of output {spec.name!r} ({shape})"
                )
            buffer = self._buffer(spec.name, shape, np.dtype(spec.dtype))
            context.set_tensor_address(spec.name, buffer.ptr)
            out_buffers[spec.name] = buffer
        self._bound_key, self._out_buffers = key, out_buffers
        return out_buffers

    def _execute(self) -> None:
        mark = self._logger.mark()
        if not self._context.execute_async_v3(self._stream.handle):
            raise RuntimeUnavailableError(
                f"TensorRT failed to run {self.engine_path} "
                f"({summarize_errors(self._logger.errors_since(mark))})"
            )

    # -- staged execution: trtexec's H2D / compute / D2H split (benchmark.StagedRuntime) ------
    #
    # `vggdeploy bench` times these with CUDA events recorded between them, as trtexec does:
    # `stage_inputs` (once per case, outside the timed stages) binds the shapes and fills pinned
    # host buffers from the caller's NumPy arrays; then each timed iteration enqueues only the
    # pinned->device copy (H2D), the engine (compute) and the device->pinned copy (D2H). The
    # pinned->NumPy copy happens in `fetch_outputs`, when a caller wants the results. The feed is
    # checked once by the caller (`check_feed`), as `_infer` relies on `infer`.

    def stage_inputs(self, feed: dict[str, np.ndarray]) -> None:
        """Bind `feed`'s shapes and copy its arrays into the pinned input buffers that every
        following `enqueue_h2d` sends to the device; allocates the pinned outputs too. Waits
        for the stream first: a copy in flight may still be reading the pinned memory."""
        self._require_loaded()
        self._staged_shapes = None  # until the new inputs are in place
        key = self._shape_key(feed)
        self._stream.synchronize()
        if key != self._bound_key:
            self._bind(feed, key)
        for spec in self._inputs:
            array = feed[spec.name]
            host = self._host_buffer(spec.name, tuple(array.shape), np.dtype(spec.dtype))
            host.fill(array)
        for name, buffer in self._out_buffers.items():
            self._host_buffer(name, buffer.shape, buffer.dtype)
        self._staged_shapes = key

    def enqueue_h2d(self) -> None:
        """Enqueue the copy of the staged pinned inputs to the device (the transfer only).

        Rebinds the staged shapes first if `infer` ran other shapes since `stage_inputs`."""
        self._require_loaded()
        if self._staged_shapes is None:
            raise RuntimeError("stage_inputs(feed) must come first: no inputs are staged")
        if self._staged_shapes != self._bound_key:
            self._bind(
                {s.name: self._host[s.name].array for s in self._inputs}, self._staged_shapes
            )
        stream = self._stream
        for spec in self._inputs:
            self._buffers[spec.name].copy_from_host_async(self._host[spec.name], stream)

    def enqueue_compute(self) -> None:
        """Enqueue the engine (with CUDA graphs: replay the graph of these shapes, capturing
        it after one ordinary run the first time)."""
        key = self._staged_key()
        if self.cuda_graphs and key == self._graph_key:
            self._graph.replay(self._stream)
            return
        self._execute()
        if self.cuda_graphs:
            self._capture(key)

    def enqueue_d2h(self) -> None:
        """Enqueue the copy of every output into its pinned host buffer (the transfer only;
        `fetch_outputs` makes the NumPy copies)."""
        self._staged_key()
        for name, buffer in self._out_buffers.items():
            host = self._host_buffer(name, buffer.shape, buffer.dtype)
            buffer.copy_to_host_async(host, self._stream)

    def fetch_outputs(self) -> dict[str, np.ndarray]:
        """NumPy copies of the outputs of the last `enqueue_d2h` (waits for the stream first)."""
        self._staged_key()
        self._stream.synchronize()
        return {name: self._host[name].read() for name in self._out_buffers}

    def record_event(self) -> Any:
        """A timing event recorded now on the runtime's stream."""
        self._require_loaded()
        event = self._cuda.Event()
        event.record(self._stream)
        return event

    def synchronize(self) -> None:
        self._require_loaded()
        self._stream.synchronize()

    def event_ms(self, start: Any, end: Any) -> float:
        """Device milliseconds between two recorded events (after they completed)."""
        return float(start.elapsed_ms(end))

    def _staged_key(self) -> tuple[Any, ...]:
        self._require_loaded()
        if self._bound_key is None:
            raise RuntimeError(
                "stage_inputs(feed) and enqueue_h2d() must come first: no input shapes are bound"
            )
        return self._bound_key

    def _host_buffer(self, name: str, shape: tuple[int, ...], dtype: np.dtype) -> Any:
        host = self._host.get(name)
        if host is None or host.shape != shape or host.dtype != np.dtype(dtype):
            host = self._cuda.allocate_host(shape, np.dtype(dtype))
            self._host[name] = host
        return host

    def _capture(self, key: tuple[Any, ...]) -> None:
        """Capture the enqueue for these shapes (after the ordinary run TensorRT needs first)."""
        context, stream = self._context, self._stream
        graph = self._cuda.Graph(self.device_id)
        mark = self._logger.mark()
        try:
            ok = graph.capture(lambda: context.execute_async_v3(stream.handle), stream)
        except RuntimeError as exc:
            ok, why = False, str(exc).splitlines()[0][:200]
        else:
            why = summarize_errors(self._logger.errors_since(mark))
        if not ok:
            raise RuntimeUnavailableError(
                f"could not capture {self.engine_path} in a CUDA graph ({why}): run without "
                "CUDA graphs"
            )
        self._graph, self._graph_key = graph, key

    def _buffer(self, name: str, shape: tuple[int, ...], dtype: np.dtype) -> Any:
        buffer = self._buffers.get(name)
        if buffer is None or buffer.shape != shape or buffer.dtype != np.dtype(dtype):
            buffer = self._cuda.allocate(shape, np.dtype(dtype), self.device_id)
            self._buffers[name] = buffer
        return buffer


def _within(shape: tuple[int, ...], shapes: tuple[tuple[int, ...], ...]) -> bool:
    lo, _opt, hi = shapes
    return len(shape) == len(lo) and all(a <= d <= b for d, a, b in zip(shape, lo, hi))


def _axis_name(shape: tuple[int | str, ...], axis: int) -> str:
    dim = shape[axis]
    return dim if isinstance(dim, str) else f"axis {axis}"


def _record_beside(engine_path: Path) -> dict[str, Any] | None:
    """The manifest entry of an engine file inside a bundle directory, if any."""
    try:
        bundle = Bundle.load(engine_path.parent)
    except BundleError:
        return None
    for record in bundle.artifacts.values():
        if record.get("kind") == "tensorrt-engine" and record.get("path") == engine_path.name:
            return record
    return None
