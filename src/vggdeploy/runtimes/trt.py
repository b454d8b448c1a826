"""TensorRT: run a serialized engine from a bundle, on TensorRT 10.x and 11.x.

An engine runs only where it was built: the same TensorRT version (unless built
version-compatible) and the same GPU compute capability (unless built hardware-compatible).
TensorRT's own message for a mismatch is a cryptic serialization assertion, so before loading
this runtime compares the engine's manifest entry with the host and, on a mismatch, says what
differs and how to rebuild on this machine (`vggdeploy build BUNDLE --precision P`).

Device memory, streams and copies go through `vggdeploy.runtimes._cuda` (PyTorch CUDA tensors),
looked up at call time so the test double can stand in for it. DLA engines: see `_trt.use_dla`.

Besides `infer`, `TrtRuntime` implements the benchmark's `StagedRuntime` hooks (`stage_inputs`,
`enqueue_h2d`, `enqueue_compute`, `enqueue_d2h`, `record_event`, `synchronize`, `event_ms`,
`fetch_outputs`), so `vggdeploy bench` reports trtexec's split: host-to-device, compute and
device-to-host timed with CUDA events on the runtime's stream, plus end to end. As in trtexec,
H2D and D2H are the transfers between pinned host buffers and the device only: the inputs are
copied into pinned memory once per case (`stage_inputs`), outside the timed stages.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from vggdeploy import precision as P
from vggdeploy.bundle import Bundle
from vggdeploy.errors import BundleError, InputError, RuntimeUnavailableError
from vggdeploy.records import EngineRecord
from vggdeploy.runtimes._trt import (
    INSTALL_HINT,
    check_compatibility,
    cuda_glue,
    dla_host_reason,
    import_tensorrt,
    make_logger,
    numpy_dtype,
    rebuild_hint,
    summarize_errors,
    trt_logger,
    use_dla,
)
from vggdeploy.runtimes.base import Runtime, RuntimeDescription, TensorSpec, format_shape
from vggdeploy.runtimes.trt_staged import StagedHooks

log = logging.getLogger(__name__)

PRECISIONS = P.ENGINE_NAMES

__all__ = [
    "INSTALL_HINT", "PRECISIONS", "STAGED_COPIES", "TrtRuntime", "check_compatibility",
    "cuda_glue", "import_tensorrt", "make_logger",
]  # fmt: skip

#: Every `tensorrt` name this module touches (attributes, enum members, methods, properties);
#: tests/runtimes/test_trt_api_names.py checks each against the TensorRT 10.16 and 11.4 names.
TENSORRT_API = (
    "__version__",
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


# -- the runtime ----------------------------------------------------------------------------------


class TrtRuntime(StagedHooks, Runtime):
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
    VARIANTS = {"cuda-graphs": {"cuda_graphs": True}}
    PRECISIONS = PRECISIONS
    ARTIFACT_KIND = "engine"
    OPTIONS = ("verbosity",)
    MODULE = "tensorrt"
    INSTALL_HINT = INSTALL_HINT

    @classmethod
    def artifact_unavailable(cls, bundle: Any, spec: Any) -> str | None:
        reason = super().artifact_unavailable(bundle, spec)
        if reason is not None:
            return reason
        # The same rules the runtime applies on load (vggdeploy.host), against the GPU the
        # runtime's own CUDA glue sees: can this host deserialize the engine?
        from vggdeploy import host

        version, error = host.tensorrt_version()
        if version is None:
            return error
        try:
            device = cuda_glue().device_info(0)
        except RuntimeUnavailableError as exc:
            return str(exc)
        record = bundle.artifact(P.engine_key(spec.precision))
        why = host.engine_incompatibility(
            record,
            version,
            str(device.compute_capability),
            f"GPU 0 is {device.name}",
            jetson=bool(getattr(device, "jetson", False)),
        )
        if why:
            return f"{record.path} {why}: rebuild it here with `vggdeploy build BUNDLE --precision {spec.precision}`"
        return dla_host_reason(record)  # a DLA engine needs its DLA core here

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
        self.record: EngineRecord | None = None
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
        key = P.engine_key(self.precision)
        if key not in self.bundle.artifacts:
            raise BundleError(
                f"bundle {self.bundle.root} has no {self.precision} TensorRT engine: build it on "
                f"this machine with `vggdeploy build {self.bundle.root} --precision "
                f"{self.precision}`"
            )
        record = self.bundle.artifact(key)
        if not isinstance(record, EngineRecord):
            raise BundleError(f"{self.bundle.root}: artifact {key} is not a TensorRT engine")
        self.record = record
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
        logger = trt_logger(trt, self.verbosity)
        runtime = trt.Runtime(logger)
        use_dla(runtime, self.record)  # refuses a DLA engine without its core; sets DLA_core
        flags = self.record.flags if self.record is not None else None
        if flags is not None and flags.version_compatible and not flags.exclude_lean_runtime:
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
        io = self.bundle.manifest.io if self.bundle else None
        axis_names = {t.name: list(t.shape) for t in (io.inputs + io.outputs if io else [])}
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
    def artifact(self) -> str:
        return str(self.engine_path) if self.engine_path else "the TensorRT engine"

    @property
    def label(self) -> str:
        return f"tensorrt {self.precision}"

    def describe(self) -> RuntimeDescription:
        info: dict[str, Any] = {
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
                "tensorrt_version": self.record.tensorrt_version,
                "gpu": self.record.gpu.name,
                "flags": self.record.flags.to_json_dict(),
            }
        device = f"cuda:{self.device_id}"
        return RuntimeDescription(self.name, self.label, self.precision, device, details=info)

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


def _record_beside(engine_path: Path) -> EngineRecord | None:
    """The manifest entry of an engine file inside a bundle directory, if any."""
    try:
        bundle = Bundle.load(engine_path.parent)
    except BundleError:
        return None
    for record in bundle.manifest.engines().values():
        if record.path == engine_path.name:
            return record
    return None
