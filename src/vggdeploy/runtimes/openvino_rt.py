"""OpenVINO on an Intel CPU, GPU or NPU, from the bundle's ONNX files.

OpenVINO reads ONNX directly, Q/DQ included: its low-precision transformations turn the
QuantizeLinear/DequantizeLinear pairs of `model.int8.onnx` into int8 kernels, whatever the
placement. What this runtime pins down, each read back from the compiled model rather than
assumed (`describe()`):

- Inference precision. OpenVINO's CPU plugin runs an f32 model in bf16 by default on CPUs with
  AVX-512 BF16 or AMX ("CPU Device", Supported Model Precision / "Inference Precision":
  docs.openvino.ai/2025/openvino-workflow/running-inference/inference-devices-and-modes/
  cpu-device.html), which fails the fp32 tolerance. fp32 and int8 (the layers left in float)
  set `INFERENCE_PRECISION_HINT=f32`; fp16 asks for f16 and, on a CPU that offers bf16 in its
  place (no AVX-512 FP16 / AMX-FP16: measured here, the hint reads back bf16), runs the fp16
  model's float16 weights in f32 instead, never in a precision with fewer mantissa bits.
- Performance hint. `PERFORMANCE_HINT=LATENCY` for one caller at a time (every command, bench
  at each batch); under `bench --streams N`, `THROUGHPUT` with `NUM_STREAMS=N`, so OpenVINO
  splits the cores among its own N streams ("High-level Performance Hints", docs.openvino.ai/
  2025/openvino-workflow/running-inference/optimize-inference/high-level-performance-hints.html;
  "Performance Hints and Thread Scheduling" for NUM_STREAMS / INFERENCE_NUM_THREADS).
- Model caching. `CACHE_DIR` is the bundle's `cache/openvino/<OpenVINO build>/<DEVICE>/`:
  OpenVINO exports the compiled model there and a later load imports it instead of compiling
  ("Model Caching Overview", docs.openvino.ai/2025/openvino-workflow/running-inference/
  optimize-inference/optimizing-latency/model-caching-overview.html). `LOADED_FROM_CACHE` says
  which happened. A damaged or unwritable cache only costs a compile (OpenVINO recompiles;
  measured with OpenVINO 2026.4), so a read-only bundle still runs.

- INT8 graph. `model.int8.onnx` is read into an `ov.Model` and rewritten for OpenVINO before it
  is compiled (`vggdeploy.runtimes.openvino_qdq`), so the CPU plugin runs every pool and layer
  in u8 with no stand-alone requantization, as it does NNCF's own quantization. ReLU outputs
  go on a u8 grid over the file's own thresholds: `grid="fine"` (the default) with 256 levels,
  twice the file's resolution there, closer to fp32; `grid="file"` with the file's 128 levels,
  exactly the file's model. `describe()` says which and counts the rewrites.

Concurrent calls (`bench --streams`) each get their own infer request: one `InferRequest`
serves one inference at a time (OpenVINO's "Inference Request" / `CompiledModel` docs), while
the compiled model is shared.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from vggdeploy import precision as P
from vggdeploy.bundle import Bundle, sha256_file
from vggdeploy.errors import BundleError, InputError, RuntimeUnavailableError
from vggdeploy.host import install_hint
from vggdeploy.runtimes.base import Runtime, RuntimeDescription, TensorSpec

log = logging.getLogger(__name__)

#: the bundle's ONNX precisions OpenVINO runs
PRECISIONS = ("fp32", "fp16", "int8")
#: spec variant -> OpenVINO device name (`Core().available_devices` lists e.g. CPU, GPU.0, NPU)
DEVICES = {"cpu": "CPU", "gpu": "GPU", "npu": "NPU"}
#: precision -> the INFERENCE_PRECISION_HINT asked for
INFERENCE_PRECISION = {"fp32": "f32", "fp16": "f16", "int8": "f32"}
#: the bundle's cache folder for compiled models, under `Bundle.cache_dir`
CACHE_SUBDIR = "openvino"

# OpenVINO element type names -> NumPy dtype names
_OV_TYPES = {
    "f32": "float32",
    "f16": "float16",
    "f64": "float64",
    "i8": "int8",
    "u8": "uint8",
    "i32": "int32",
    "i64": "int64",
    "boolean": "bool",
}
#: runtime-model layer types that are convolutions / fully connected layers
_CONV = {"Convolution"}
_FC = {"FullyConnected", "MatMul", "InnerProduct"}
_INT8 = {"i8", "u8"}


class OpenVinoRuntime(Runtime):
    """An OpenVINO compiled model over one ONNX file of a bundle.

    Args:
        source: a `Bundle`, a bundle directory, or an `.onnx` file (no manifest: no sha256 to
            check, no bundle cache folder; `precision` then only chooses the inference hint).
        precision: "fp32" (`model.onnx`), "fp16" (`model.fp16.onnx`) or "int8"
            (`model.int8.onnx`, Q/DQ).
        device: "cpu", "gpu" or "npu".
        threads: `INFERENCE_NUM_THREADS` (None: OpenVINO's choice).
        streams: None or 1: one caller at a time, `PERFORMANCE_HINT=LATENCY`; N > 1:
            `THROUGHPUT` with `NUM_STREAMS=N` (for N concurrent callers).
        cache: use the bundle's cache folder for compiled models.
        rewrite: for int8, apply `openvino_qdq.rewrite_int8` to the model before compiling
            (False compiles the file as it is: for comparisons).
        grid: for int8, the ReLU outputs' grid: "fine" (u8, 256 levels on the file's [0, T])
            or "file" (the file's own 128 levels, exact).
    """

    name = "openvino"
    VARIANTS = {"cpu": {"device": "cpu"}, "gpu": {"device": "gpu"}, "npu": {"device": "npu"}}
    EXCLUSIVE_VARIANTS = ("cpu", "gpu", "npu")
    DEFAULT_VARIANT = "cpu"
    PRECISIONS = PRECISIONS
    ARTIFACT_KIND = "onnx"
    OPTIONS = ("threads", "streams")
    MODULE = "openvino"
    INSTALL_HINT = install_hint("openvino")

    @classmethod
    def available(cls, spec: Any, **options: Any) -> str | None:
        reason = super().available(spec)
        if reason is None:
            from vggdeploy.host import openvino_device_missing

            reason = openvino_device_missing(DEVICES[spec.device or cls.DEFAULT_VARIANT])
        return reason

    def __init__(
        self,
        source: Bundle | str | os.PathLike[str],
        *,
        precision: str = "fp32",
        device: str = "cpu",
        threads: int | None = None,
        streams: int | None = None,
        cache: bool = True,
        rewrite: bool = True,
        grid: str = "fine",
    ) -> None:
        super().__init__()
        if precision not in PRECISIONS:
            raise InputError(
                f"openvino precision {precision!r} is not supported: use one of "
                f"{', '.join(PRECISIONS)}"
            )
        if device not in DEVICES:
            raise InputError(
                f"openvino device {device!r} is not supported: use one of {', '.join(DEVICES)}"
            )
        for what, value in (("threads", threads), ("streams", streams)):
            if value is not None and (not isinstance(value, int) or value < 1):
                raise InputError(f"{what} {value!r} must be a positive integer")
        self.bundle: Bundle | None = None
        self.onnx_file: Path | None = None
        if isinstance(source, Bundle):
            self.bundle = source
        elif Path(source).is_file() and Path(source).suffix.lower() == ".onnx":
            self.onnx_file = Path(source)
        else:
            self.bundle = Bundle.load(source)
        if self.bundle is not None and P.onnx_key(precision) not in self.bundle.artifacts:
            have = sorted(k for k in self.bundle.artifacts if k.startswith("onnx."))
            raise BundleError(
                f"bundle {self.bundle.root} has no {precision} ONNX ({P.onnx_key(precision)}); it "
                f"has {', '.join(have) or 'none'}: create it with "
                f"`{P.make_command(P.onnx_key(precision), str(self.bundle.root))}`"
            )
        self.precision = precision
        self.device = device
        self.threads = threads
        self.streams = streams
        self.cache = cache
        self.rewrite = rewrite
        if grid not in ("fine", "file"):
            raise InputError(f"openvino int8 grid {grid!r} is not supported: use fine or file")
        self.grid = grid
        self._rewrites: dict[str, int] | None = None
        self._rewrite_note: str | None = None
        self._compiled: Any = None
        self._ports: list[Any] = []
        self._local = threading.local()
        self._path: Path | None = None
        self._sha256: str | None = None
        self._version = ""
        self._cache_dir: Path | None = None
        self._cache_note: str | None = None
        self._precision_note: str | None = None
        self._layers: dict[str, int] = {}
        self._source: Any = None  # the file's path, or the rewritten int8 ov.Model

    @property
    def label(self) -> str:
        return f"openvino[{self.device}] {self.precision}"

    @property
    def performance_hint(self) -> str:
        return "THROUGHPUT" if self.streams and self.streams > 1 else "LATENCY"

    def describe(self) -> RuntimeDescription:
        info: dict[str, Any] = {
            "requested_device": DEVICES[self.device],
            "requested_inference_precision": INFERENCE_PRECISION[self.precision],
        }
        if self.is_loaded:
            compiled = self._compiled
            info.update(
                {
                    "openvino": self._version,
                    "execution_devices": _property(compiled, "EXECUTION_DEVICES"),
                    # what the compiled model runs in, read back (not what was asked)
                    "inference_precision": _type_name(
                        _property(compiled, "INFERENCE_PRECISION_HINT")
                    ),
                    "inference_precision_note": self._precision_note,
                    "performance_hint": _property(compiled, "PERFORMANCE_HINT"),
                    "num_streams": _property(compiled, "NUM_STREAMS"),
                    "inference_num_threads": _property(compiled, "INFERENCE_NUM_THREADS"),
                    "loaded_from_cache": _property(compiled, "LOADED_FROM_CACHE"),
                    "cache_dir": str(self._cache_dir) if self._cache_dir else None,
                    "cache_note": self._cache_note,
                    "artifact": str(self._path),
                    "sha256": self._sha256,
                    "layers": self._layers,
                    # int8: the rewrites made for OpenVINO (None: the file as it is)
                    "int8_rewrites": self._rewrites,
                    "int8_grid": self._grid_note(),
                }
            )
        return RuntimeDescription(self.name, self.label, self.precision, self.device, details=info)

    # -- backend --------------------------------------------------------------------------------

    def _load(self) -> tuple[list[TensorSpec], list[TensorSpec]]:
        import openvino as ov

        self._version = ov.get_version()
        if self.bundle is not None:
            key = P.onnx_key(self.precision)
            self._path = self.bundle.artifact_path(key, verify=True)
            self._sha256 = self.bundle.artifact(key).sha256
        else:
            assert self.onnx_file is not None
            self._path = self.onnx_file
            self._sha256 = sha256_file(self.onnx_file)
        device = DEVICES[self.device]
        core = ov.Core()
        config: dict[str, Any] = {"PERFORMANCE_HINT": self.performance_hint}
        if self.streams and self.streams > 1:
            config["NUM_STREAMS"] = self.streams
        if self.threads:
            config["INFERENCE_NUM_THREADS"] = self.threads
        self._cache_dir = self._prepare_cache(device)
        if self._cache_dir is not None:
            config["CACHE_DIR"] = str(self._cache_dir)

        self._source = str(self._path)
        self._rewrites = None
        self._rewrite_note = None
        if self.precision == "int8" and self.rewrite:
            from vggdeploy.runtimes.openvino_qdq import rewrite_int8

            model = self._guarded(lambda: core.read_model(str(self._path)), device)
            try:
                self._rewrites = rewrite_int8(model, self.grid)
                self._source = model
            except Exception as exc:  # a graph the rewrites do not expect: compile it as written
                self._rewrite_note = f"not rewritten ({_first_line(exc)}): compiled as written"
                log.warning("%s: %s", self._path, self._rewrite_note)
                self._source = str(self._path)
        wanted = INFERENCE_PRECISION[self.precision]
        compiled = self._compile(core, device, {**config, "INFERENCE_PRECISION_HINT": wanted})
        got = _type_name(_property(compiled, "INFERENCE_PRECISION_HINT"))
        if wanted == "f16" and got != "f16":
            # This device offers no f16 compute (a CPU without AVX-512 FP16 gives bf16): run the
            # float16 weights in f32 rather than in a precision with fewer mantissa bits.
            compiled = self._compile(core, device, {**config, "INFERENCE_PRECISION_HINT": "f32"})
            got = _type_name(_property(compiled, "INFERENCE_PRECISION_HINT"))
            self._precision_note = (
                f"{device} offers no f16 compute here (it would run {_type_name(wanted)} as "
                f"bf16): the fp16 model's float16 weights run in {got}"
            )
        if wanted == "f32" and got not in ("f32", None):  # None: the device does not say
            raise RuntimeUnavailableError(
                f"OpenVINO {device} runs this model in {got}, not f32: {self.precision} would "
                "not be what was asked (the device does not honour INFERENCE_PRECISION_HINT=f32)"
            )
        self._compiled = compiled
        self._ports = list(compiled.outputs)
        self._layers = _count_layers(compiled)
        self._local = threading.local()
        inputs = [_spec(port) for port in compiled.inputs]
        outputs = [_spec(port) for port in compiled.outputs]
        return inputs, outputs

    def _grid_note(self) -> str | None:
        if self._rewrites is None:
            return self._rewrite_note
        if not self._rewrites["unsigned"]:
            return "file: no ReLU output to put on a u8 grid"
        if self.grid == "fine":
            return (
                f"fine: {self._rewrites['unsigned']} ReLU outputs on u8, 256 levels over the "
                "file's [0, T] (the file's int8 has 128 there): closer to fp32, not the file's "
                "model"
            )
        return f"file: {self._rewrites['unsigned']} ReLU outputs on u8 with the file's step (exact)"

    def _compile(self, core: Any, device: str, config: dict[str, Any]) -> Any:
        return self._guarded(lambda: core.compile_model(self._source, device, config), device)

    def _guarded(self, step: Any, device: str) -> Any:
        try:
            return step()
        except Exception as exc:  # OpenVINO raises RuntimeError with a multi-line log
            first = _first_line(exc)
            if self.device != "cpu":
                raise RuntimeUnavailableError(
                    f"OpenVINO could not compile {self._path} for {device}: {first}"
                ) from None
            raise BundleError(f"OpenVINO cannot load {self._path}: {first}") from None

    def _prepare_cache(self, device: str) -> Path | None:
        """The cache folder for this OpenVINO build and device, or None (with the reason in
        `_cache_note`) when there is no bundle or the folder cannot be made."""
        self._cache_note = None
        if not self.cache:
            self._cache_note = "off: caching was turned off"
            return None
        if self.bundle is None:
            self._cache_note = "off: a loose .onnx file has no bundle cache folder"
            return None
        folder = self.bundle.cache_dir(CACHE_SUBDIR, _safe_name(self._version), device)
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            self._cache_note = f"off: cannot create {folder} ({exc.strerror or exc})"
            return None
        return folder

    def _infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        request = getattr(self._local, "request", None)
        if request is None:  # one infer request per calling thread
            request = self._local.request = self._compiled.create_infer_request()
        results = request.infer(feed, share_inputs=True)
        return {spec.name: results[port] for spec, port in zip(self._outputs, self._ports)}

    def _close(self) -> None:
        self._local = threading.local()
        self._compiled = None
        self._source = None
        self._ports = []


def _property(compiled: Any, name: str) -> Any:
    try:
        value = compiled.get_property(name)
    except Exception:  # a device that does not report this property
        return None
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    return value if isinstance(value, (bool, int, float)) else str(value)


def _type_name(value: Any) -> str | None:
    """`<Type: 'float32'>` / `f32` / `float32` -> `f32`."""
    if value is None:
        return None
    text = str(value)
    m = re.search(r"'([^']+)'", text)
    text = m.group(1) if m else text
    return {"float32": "f32", "float16": "f16", "bfloat16": "bf16"}.get(text, text)


def _count_layers(compiled: Any) -> dict[str, int]:
    """Convolutions and fully connected layers of the compiled (runtime) model, and how many run
    int8 kernels (`runtimePrecision` i8/u8 in each node's runtime info)."""
    try:
        ops = compiled.get_runtime_model().get_ordered_ops()
    except Exception:
        return {}
    counts: Counter[str] = Counter()
    for op in ops:
        info = op.get_rt_info()
        layer = info["layerType"].astype(str) if "layerType" in info else ""
        prec = info["runtimePrecision"].astype(str) if "runtimePrecision" in info else ""
        kind = "convolutions" if layer in _CONV else "fully_connected" if layer in _FC else None
        if kind:
            counts[kind] += 1
            if prec.lower() in _INT8:
                counts[f"int8_{kind}"] += 1
    return {
        k: counts[k]
        for k in ("convolutions", "int8_convolutions", "fully_connected", "int8_fully_connected")
    }


def _spec(port: Any) -> TensorSpec:
    shape = port.get_partial_shape()
    dims = tuple(d.get_length() if d.is_static else "?" for d in shape)
    type_name = port.get_element_type().get_type_name()
    return TensorSpec(port.get_any_name(), dims, _OV_TYPES.get(type_name, type_name))


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)


def _first_line(exc: BaseException) -> str:
    """The first line of OpenVINO's message that says something: it starts with a stack of
    `Exception from src/...cpp:N:` lines."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    told = [ln for ln in lines if not ln.startswith("Exception from ")]
    return ((told or lines or [type(exc).__name__])[0])[:300]
