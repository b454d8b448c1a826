"""A test double of the `tensorrt` Python module, for the 10.x and 11.x API generations.

It implements the surface vggdeploy calls, with the real names and call shapes (checked against
the names in the real bindings by tests/test_trt_api_names.py), and rejects what the real API
rejects where vggdeploy relies on it:

- `Builder.create_network(flags)`: on 10.x the network is strongly typed only with
  `1 << int(NetworkDefinitionCreationFlag.STRONGLY_TYPED)`; on 11.x always (the flag is accepted
  and ignored; EXPLICIT_BATCH is gone). 11.x has no BuilderFlag.FP16/INT8, no
  `IBuilderConfig.int8_calibrator`, no `IInt8EntropyCalibrator2`.
- `OnnxParser.parse_from_file`: fails with `ParserError`s (code, desc, node, node_name,
  node_operator) for ops outside a supported set and for files that are not ONNX.
- `IOptimizationProfile.set_shape` raises ValueError ("Shape provided for opt is inconsistent
  with other shapes.") when ranks differ or min <= opt <= max does not hold; a build with a
  dynamic input and no profile, or a profile that disagrees with the network's static dims,
  logs an error and returns None.
- Timing caches carry the TensorRT version and GPU they were made on: `create_timing_cache`
  logs the real serialization errors ("Magic tag does not match" / "Version tag does not
  match", then "The timing cache will not be used!", as reported in NVIDIA/TensorRT#3566) for
  a corrupt blob or one from another version; `set_timing_cache(cache, False)` returns False
  for one from another GPU.
- `build_serialized_network` returns None after logging "could not be allocated" when the
  profile's largest batch does not fit the fake GPU's memory.
- `Runtime.deserialize_cuda_engine` returns None and logs TensorRT-like errors for a plan from
  another TensorRT version (unless version-compatible and older, with host code allowed) or
  another compute capability (unless hardware-compatible).
- The engine runs the embedded ONNX in ONNX Runtime on buffers addressed through
  `set_tensor_address` (see fake_cuda.MEMORY); the inspector reports each layer's precision
  from the graph: convolutions fed by DequantizeLinear -> Int8, a float16 graph -> Half (weakly
  typed 10.x networks ignore graph types: Float unless BuilderFlag.FP16), else Float; with
  ProfilingVerbosity.DETAILED in the JSON shape of the real inspector, otherwise names only.
- DLA (fake_cuda.GPU["dla_cores"], 0 by default: only Jetson Orin has DLA): `Builder.
  num_DLA_cores`, `IBuilderConfig.default_device_type` / `DLA_core` / `can_run_on_DLA(layer)`
  (False for ops outside DLA_OPS + GPU["dla_accepts"] or in GPU["dla_refuses"], and for a MaxPool between a
  DequantizeLinear and a QuantizeLinear of different scales), `BuilderFlag.GPU_FALLBACK`. A DLA
  build logs an error and returns None for a core the device lacks, a dynamic profile (min, opt,
  max differ) or a layer DLA cannot run without GPU_FALLBACK; the inspector shows each DLA
  subgraph as one opaque "{ForeignNode[first...last]}" layer. `Runtime.num_DLA_cores` and
  `Runtime.DLA_core`: deserializing a DLA engine on a host without that core fails.
  The network has one layer per ONNX node (`num_layers`, `get_layer(i)` with `name`, `type`).
"""

from __future__ import annotations

import enum
import importlib.machinery
import json
import struct
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np

from . import fake_cuda

FULL_VERSIONS = {"10.16": "10.16.1.11", "11.4": "11.4.0.106"}
_MAGIC = b"ftrt"
_CACHE_MAGIC = b"fcache"
SUPPORTED_OPS = {
    "Conv", "Relu", "MaxPool", "AveragePool", "GlobalAveragePool", "Gemm", "MatMul", "Add",
    "Mul", "Sub", "Div", "Flatten", "Reshape", "BatchNormalization", "LRN", "Dropout",
    "Identity", "QuantizeLinear", "DequantizeLinear", "Cast", "Softmax", "Constant", "Shape",
    "Gather", "Unsqueeze", "Squeeze", "Concat", "Transpose", "Slice", "ReduceMean",
    "GatherND", "GatherElements", "ScatterND", "Pad", "Resize", "Expand", "Where", "Equal",
    "Greater", "Less", "Not", "And", "Or", "Sigmoid", "Tanh", "LeakyRelu", "Clip", "Sqrt", "Pow",
    "Exp", "Log", "Neg", "Abs", "ReduceSum", "ReduceMax", "ReduceMin", "Range",
    "ConstantOfShape", "Split", "Tile", "Min", "Max", "Erf", "LayerNormalization",
    "InstanceNormalization", "ConvTranspose", "TopK", "ArgMax", "PRelu", "Elu", "Ceil", "Floor",
    "Reciprocal", "GlobalMaxPool", "DepthToSpace", "SpaceToDepth", "CumSum", "Softplus",
}  # a subset of onnx-tensorrt's supported operators; anything else fails as UNSUPPORTED_NODE  # fmt: skip
# What CUDA reports for a kernel reading freed memory (a graph replayed after its buffers went).
_ILLEGAL_ADDRESS = (
    "1: [runner.cpp::execute] Error Code 1: Cuda Runtime (an illegal memory access was encountered)"
)
#: ONNX ops whose layers the fake DLA can run (a rough model of "DLA Supported Layers").
DLA_OPS = {
    "Conv", "Relu", "Sigmoid", "Tanh", "Clip", "LeakyRelu", "MaxPool", "AveragePool",
    "GlobalAveragePool", "Gemm", "MatMul", "Add", "Mul", "Sub", "Flatten", "Reshape",
    "BatchNormalization", "LRN", "QuantizeLinear", "DequantizeLinear", "Constant", "Identity",
    "Cast", "Concat", "Dropout",
}  # fmt: skip
_LAYER_TYPES = {
    "Conv": "CONVOLUTION", "Relu": "ACTIVATION", "Sigmoid": "ACTIVATION", "Tanh": "ACTIVATION",
    "Clip": "ACTIVATION", "LeakyRelu": "ACTIVATION", "MaxPool": "POOLING",
    "AveragePool": "POOLING", "GlobalAveragePool": "POOLING", "Gemm": "MATRIX_MULTIPLY",
    "MatMul": "MATRIX_MULTIPLY", "Add": "ELEMENTWISE", "Mul": "ELEMENTWISE", "Sub": "ELEMENTWISE",
    "Div": "ELEMENTWISE", "Flatten": "SHUFFLE", "Reshape": "SHUFFLE", "Transpose": "SHUFFLE",
    "BatchNormalization": "SCALE", "LRN": "LRN", "QuantizeLinear": "QUANTIZE",
    "DequantizeLinear": "DEQUANTIZE", "Cast": "CAST", "Constant": "CONSTANT", "Softmax": "SOFTMAX",
    "Identity": "IDENTITY", "Dropout": "IDENTITY", "Concat": "CONCATENATION", "Gather": "GATHER",
}  # fmt: skip
_NP_TO_DT = {"float32": "FLOAT", "float16": "HALF", "int8": "INT8", "int32": "INT32",
             "int64": "INT64", "bool": "BOOL", "uint8": "UINT8"}  # fmt: skip


def build_module(version: str) -> types.ModuleType:
    """A fresh `tensorrt` module for "10.16" or "11.4"."""
    full = FULL_VERSIONS[version]
    major = int(full.split(".")[0])
    mod = types.ModuleType("tensorrt")
    # An imported module has a spec; `importlib.util.find_spec("tensorrt")` returns it (and
    # raises ValueError for a module in sys.modules without one).
    mod.__spec__ = importlib.machinery.ModuleSpec("tensorrt", None, origin="trt_double")
    mod.__version__ = full

    # -- enums (pybind11 enums: members with .name, int(), and exported into the parent scope) --
    class Severity(enum.IntEnum):
        INTERNAL_ERROR = 0
        ERROR = 1
        WARNING = 2
        INFO = 3
        VERBOSE = 4

    class DataType(enum.IntEnum):
        FLOAT = 0
        HALF = 1
        INT8 = 2
        INT32 = 3
        BOOL = 4
        UINT8 = 5
        FP8 = 6
        BF16 = 7
        INT64 = 8

    class TensorIOMode(enum.IntEnum):
        NONE = 0
        INPUT = 1
        OUTPUT = 2

    class DeviceType(enum.IntEnum):
        GPU = 0
        DLA = 1

    LayerType = enum.IntEnum("LayerType", sorted(set(_LAYER_TYPES.values())) + ["UNARY"])

    creation_members = {"STRONGLY_TYPED": 1} if major >= 11 else {"EXPLICIT_BATCH": 0}
    if major < 11:
        creation_members["STRONGLY_TYPED"] = 1
    NetworkDefinitionCreationFlag = enum.IntEnum("NetworkDefinitionCreationFlag", creation_members)

    flag_members = {"GPU_FALLBACK": 3, "TF32": 7, "VERSION_COMPATIBLE": 13}
    flag_members["EXCLUDE_LEAN_RUNTIME"] = 14
    if major < 11:
        flag_members |= {"FP16": 0, "INT8": 1}
    BuilderFlag = enum.IntEnum("BuilderFlag", flag_members)

    class MemoryPoolType(enum.IntEnum):
        WORKSPACE = 0
        TACTIC_SHARED_MEMORY = 4

    class HardwareCompatibilityLevel(enum.IntEnum):
        NONE = 0
        AMPERE_PLUS = 1
        SAME_COMPUTE_CAPABILITY = 2

    class ProfilingVerbosity(enum.IntEnum):
        LAYER_NAMES_ONLY = 0
        NONE = 1
        DETAILED = 2

    class LayerInformationFormat(enum.IntEnum):
        ONELINE = 0
        JSON = 1

    error_members = [
        "SUCCESS", "INTERNAL_ERROR", "MODEL_DESERIALIZE_FAILED", "INVALID_VALUE", "INVALID_GRAPH",
        "INVALID_NODE", "UNSUPPORTED_GRAPH", "UNSUPPORTED_NODE", "UNSUPPORTED_NODE_ATTR",
        "UNSUPPORTED_NODE_INPUT", "UNSUPPORTED_NODE_DATATYPE", "UNSUPPORTED_NODE_DYNAMIC",
        "UNSUPPORTED_NODE_SHAPE", "REFIT_FAILED",
    ]  # fmt: skip
    if major < 11:
        error_members.insert(2, "MEM_ALLOC_FAILED")
    ErrorCode = enum.IntEnum("ErrorCode", error_members, start=0)
    # nvonnxparser::OnnxParserFlag as in the 10.16 C API reference (namespacenvonnxparser.html);
    # the 11.4 DLA guide (dla-onnx-parser.html) names the same three DLA flags.
    OnnxParserFlag = enum.IntEnum(
        "OnnxParserFlag",
        ["NATIVE_INSTANCENORM", "ENABLE_UINT8_AND_ASYMMETRIC_QUANTIZATION_DLA",
         "REPORT_CAPABILITY_DLA", "ENABLE_PLUGIN_OVERRIDE", "ADJUST_FOR_DLA"],
        start=0,
    )  # fmt: skip

    # -- logging ---------------------------------------------------------------------------------
    class ILogger:
        def __init__(self) -> None:
            pass

        def log(self, severity: Any, msg: str) -> None:
            raise NotImplementedError("ILogger.log is pure virtual")

    ILogger.Severity = Severity
    for member in Severity:
        setattr(ILogger, member.name, member)

    class Logger(ILogger):
        def __init__(self, min_severity: Any = Severity.WARNING) -> None:
            super().__init__()
            self.min_severity = min_severity

        def log(self, severity: Any, msg: str) -> None:
            if severity <= self.min_severity:
                print(f"[TRT] [{severity.name[0]}] {msg}", file=sys.stderr)

    # -- shapes, memory ---------------------------------------------------------------------------
    class Dims(tuple):
        pass

    class IHostMemory(bytes):
        @property
        def nbytes(self) -> int:
            return len(self)

        @property
        def dtype(self) -> Any:
            return DataType.UINT8

        # Polygraphy writes a timing cache with `with timing_cache.serialize() as buffer`
        # (backend/trt/loader.py, EngineBytesFromNetwork): the bindings' IHostMemory is a
        # context manager.
        def __enter__(self) -> IHostMemory:
            return self

        def __exit__(self, *exc: Any) -> None:
            return None

    # -- network and parser -----------------------------------------------------------------------
    class ITensor:
        def __init__(self, name: str, shape: tuple[int, ...], dtype: Any) -> None:
            self.name, self.shape, self.dtype = name, Dims(shape), dtype
            # Polygraphy's Profile.to_trt asks (backend/trt/profile.py)
            self.is_shape_tensor = False

    class ILayer:
        def __init__(self, name: str, op: str, dla: bool) -> None:
            self.name = name
            self.type = getattr(LayerType, _LAYER_TYPES.get(op, "UNARY"))
            self._op, self._dla = op, dla

    class INetworkDefinition:
        def __init__(self, flags: int, logger: Any) -> None:
            self._flags, self._logger = flags, logger
            self._inputs: list[ITensor] = []
            self._layers: list[ILayer] = []
            self._onnx: bytes | None = None
            if major >= 11:
                self._strongly_typed = True
            else:
                self._strongly_typed = bool(
                    flags & (1 << int(NetworkDefinitionCreationFlag.STRONGLY_TYPED))
                )

        @property
        def num_inputs(self) -> int:
            return len(self._inputs)

        def get_input(self, index: int) -> ITensor:
            return self._inputs[index]

        @property
        def num_layers(self) -> int:
            return len(self._layers)

        def get_layer(self, index: int) -> ILayer:
            return self._layers[index]

        # Polygraphy iterates a network (`for layer in network`, backend/trt/config.py) and
        # asks `get_flag` (backend/trt/util.py str_from_config): the bindings give both.
        def __len__(self) -> int:
            return len(self._layers)

        def __getitem__(self, index: int) -> ILayer:
            if not 0 <= index < len(self._layers):
                raise IndexError(index)
            return self._layers[index]

        def get_flag(self, flag: Any) -> bool:
            if major >= 11 and flag == NetworkDefinitionCreationFlag.STRONGLY_TYPED:
                return True
            return bool(self._flags & (1 << int(flag)))

        @property
        def name(self) -> str:
            return "Unnamed Network 0"

    class ParserError:
        def __init__(self, code: Any, desc: str, node: int = -1, name: str = "", op: str = ""):
            self._code, self._desc, self._node, self._name, self._op = code, desc, node, name, op

        def code(self) -> Any:
            return self._code

        def desc(self) -> str:
            return self._desc

        def node(self) -> int:
            return self._node

        def node_name(self) -> str:
            return self._name

        def node_operator(self) -> str:
            return self._op

        def file(self) -> str:
            return "ModelImporter.cpp"

        def line(self) -> int:
            return 0

        def func(self) -> str:
            return "parseGraph"

        def local_function_stack(self) -> list[str]:
            return []

    class OnnxParser:
        def __init__(self, network: INetworkDefinition, logger: Any) -> None:
            self._network, self._logger = network, logger
            self._errors: list[ParserError] = []
            # NATIVE_INSTANCENORM is on by default (IParser::getFlags in the C API reference)
            self.flags = 1 << int(OnnxParserFlag.NATIVE_INSTANCENORM)

        def set_flag(self, flag: Any) -> None:
            self.flags |= 1 << int(flag)

        def clear_flag(self, flag: Any) -> None:
            self.flags &= ~(1 << int(flag))

        def get_flag(self, flag: Any) -> bool:
            return bool(self.flags & (1 << int(flag)))

        @property
        def num_errors(self) -> int:
            return len(self._errors)

        def get_error(self, index: int) -> ParserError:
            return self._errors[index]

        def clear_errors(self) -> None:
            self._errors.clear()

        def supports_operator(self, op_name: str) -> bool:
            return op_name in SUPPORTED_OPS

        def parse_from_file(self, model: str) -> bool:
            try:
                data = Path(model).read_bytes()
            except OSError:
                self._fail(ErrorCode.MODEL_DESERIALIZE_FAILED, f"Failed to open file: {model}")
                return False
            return self.parse(data, model)

        def parse(self, model: bytes, path: str | None = None) -> bool:
            import onnx

            try:
                proto = onnx.load_from_string(bytes(model))
            except Exception:
                self._fail(
                    ErrorCode.MODEL_DESERIALIZE_FAILED, "Failed to parse ONNX model from file"
                )
                return False
            for index, node in enumerate(proto.graph.node):
                if node.op_type not in SUPPORTED_OPS:
                    self._errors.append(
                        ParserError(
                            ErrorCode.UNSUPPORTED_NODE,
                            f"No importer registered for op: {node.op_type}. Attempting to "
                            "import as plugin.",
                            index,
                            node.name,
                            node.op_type,
                        )
                    )
            if self._errors:
                self._logger.log(Severity.ERROR, f"ModelImporter.cpp: {self._errors[0].desc()}")
                return False
            inits = {i.name for i in proto.graph.initializer}
            for value in proto.graph.input:
                if value.name in inits:
                    continue
                tt = value.type.tensor_type
                shape = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in tt.shape.dim)
                dtype = getattr(
                    DataType, _NP_TO_DT[onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type).name]
                )
                self._network._inputs.append(ITensor(value.name, shape, dtype))
            self._network._onnx = bytes(model)
            self._network._layers = [
                ILayer(node.name or f"node_{i}", node.op_type, ok)
                for i, (node, ok) in enumerate(zip(proto.graph.node, _dla_runnable(proto.graph)))
            ]
            return True

        def _fail(self, code: Any, desc: str) -> None:
            self._errors.append(ParserError(code, desc))
            self._logger.log(Severity.ERROR, desc)

    # -- builder config, profiles, timing cache ---------------------------------------------------
    class IOptimizationProfile:
        def __init__(self) -> None:
            self._shapes: dict[str, tuple[Dims, Dims, Dims]] = {}

        def set_shape(self, input: str, min: Any, opt: Any, max: Any) -> None:  # noqa: A002
            lo, mid, hi = Dims(min), Dims(opt), Dims(max)
            if len(mid) != len(lo) or any(o < m for o, m in zip(mid, lo)):
                raise ValueError("Shape provided for opt is inconsistent with other shapes.")
            if len(hi) != len(lo) or any(x < o for x, o in zip(hi, mid)):
                raise ValueError("Shape provided for max is inconsistent with other shapes.")
            if any(d < 0 for d in lo):
                raise ValueError("Shape provided for min is inconsistent with other shapes.")
            self._shapes[input] = (lo, mid, hi)

        def get_shape(self, input: str) -> list[Dims]:  # noqa: A002
            return list(self._shapes.get(input, ()))

        def __bool__(self) -> bool:
            # Polygraphy's check_profile (backend/trt/util.py) refuses a profile that is falsy.
            return bool(self._shapes)

    class ITimingCache:
        def __init__(self, header: dict[str, Any], entries: dict[str, str]) -> None:
            self._header, self._entries = header, dict(entries)

        def serialize(self) -> IHostMemory:
            body = json.dumps({"header": self._header, "entries": self._entries}).encode()
            return IHostMemory(_CACHE_MAGIC + body)

        def combine(self, input_cache: ITimingCache, ignore_mismatch: bool) -> bool:
            if input_cache._header != self._header and not ignore_mismatch:
                return False
            for key, value in input_cache._entries.items():
                self._entries.setdefault(key, value)
            return True

        def reset(self) -> bool:
            self._entries.clear()
            return True

    def _device_header() -> dict[str, Any]:
        gpu = fake_cuda.device_info(fake_cuda.CURRENT["device"])
        return {"tensorrt": full, "gpu": gpu.name, "cc": gpu.compute_capability}

    class IBuilderConfig:
        def __init__(self, logger: Any) -> None:
            self._logger = logger
            self._pools: dict[Any, int] = {}
            self._flags: set[Any] = {BuilderFlag.TF32}
            self._profiles: list[IOptimizationProfile] = []
            self._cache: ITimingCache | None = None
            self._opt_level = 3
            self.hardware_compatibility_level = HardwareCompatibilityLevel.NONE
            self.profiling_verbosity = ProfilingVerbosity.LAYER_NAMES_ONLY
            self.default_device_type = DeviceType.GPU
            self.DLA_core = -1

        def can_run_on_DLA(self, layer: ILayer) -> bool:
            if layer._op in fake_cuda.GPU.get("dla_refuses", []):
                return False
            return layer._dla or layer._op in fake_cuda.GPU.get("dla_accepts", [])

        @property
        def builder_optimization_level(self) -> int:
            return self._opt_level

        @builder_optimization_level.setter
        def builder_optimization_level(self, value: int) -> None:
            if not 0 <= int(value) <= 5:
                raise ValueError("Builder optimization level must be in range [0, 5]")
            self._opt_level = int(value)

        def set_memory_pool_limit(self, pool: Any, pool_size: int) -> None:
            if not isinstance(pool, MemoryPoolType) or int(pool_size) < 0:
                raise TypeError("set_memory_pool_limit(): incompatible function arguments")
            self._pools[pool] = int(pool_size)

        def get_memory_pool_limit(self, pool: Any) -> int:
            return self._pools.get(pool, fake_cuda.GPU["total_memory"])

        def set_flag(self, flag: Any) -> None:
            if not isinstance(flag, BuilderFlag):
                raise TypeError("set_flag(): incompatible function arguments")
            self._flags.add(flag)

        def clear_flag(self, flag: Any) -> None:
            self._flags.discard(flag)

        def get_flag(self, flag: Any) -> bool:
            return flag in self._flags

        @property
        def num_optimization_profiles(self) -> int:
            return len(self._profiles)

        def add_optimization_profile(self, profile: IOptimizationProfile) -> int:
            if not profile._shapes:
                self._logger.log(
                    Severity.ERROR, "Optimization profile is not valid (no shapes set)."
                )
                return -1
            self._profiles.append(profile)
            return len(self._profiles) - 1

        def create_timing_cache(self, serialized_timing_cache: bytes) -> ITimingCache:
            blob = bytes(serialized_timing_cache)
            if not blob:
                return ITimingCache(_device_header(), {})
            try:
                assert blob.startswith(_CACHE_MAGIC)
                data = json.loads(blob[len(_CACHE_MAGIC) :])
                header, entries = data["header"], data["entries"]
            except Exception:
                self._logger.log(
                    Severity.ERROR,
                    "1: [stdArchiveReader.cpp::StdArchiveReaderInitCommon] Error Code 1: "
                    "Serialization (Serialization assertion magicTagRead == kMAGIC_TAG failed."
                    "Magic tag does not match)",
                )
                self._logger.log(Severity.ERROR, "4: The timing cache will not be used!")
                return ITimingCache(_device_header(), {})
            if header.get("tensorrt") != full:
                self._logger.log(
                    Severity.ERROR,
                    "1: [stdArchiveReader.cpp::StdArchiveReaderInitCommon] Error Code 1: "
                    "Serialization (Serialization assertion stdVersionRead == "
                    "kSERIALIZATION_VERSION failed.Version tag does not match. Note: Current "
                    f"Version: {full}, Serialized Engine Version: {header.get('tensorrt')})",
                )
                self._logger.log(Severity.ERROR, "4: The timing cache will not be used!")
                return ITimingCache(_device_header(), {})
            return ITimingCache(header, entries)

        def set_timing_cache(self, cache: ITimingCache, ignore_mismatch: bool) -> bool:
            if cache._header != _device_header() and not ignore_mismatch:
                self._logger.log(
                    Severity.ERROR,
                    "Timing cache was created on a different device "
                    f"({cache._header.get('gpu')}, compute {cache._header.get('cc')})",
                )
                return False
            self._cache = cache
            return True

        def get_timing_cache(self) -> ITimingCache | None:
            return self._cache

    class Builder:
        def __init__(self, logger: Any) -> None:
            self.logger = logger

        @property
        def num_DLA_cores(self) -> int:
            return int(fake_cuda.GPU.get("dla_cores", 0))

        def create_network(self, flags: int = 0) -> INetworkDefinition:
            known = sum(1 << int(f) for f in NetworkDefinitionCreationFlag)
            if flags & ~known:
                raise TypeError(f"create_network(): unknown creation flags {flags}")
            return INetworkDefinition(flags, self.logger)

        def create_builder_config(self) -> IBuilderConfig:
            return IBuilderConfig(self.logger)

        def create_optimization_profile(self) -> IOptimizationProfile:
            return IOptimizationProfile()

        def build_serialized_network(
            self, network: INetworkDefinition, config: IBuilderConfig
        ) -> IHostMemory | None:
            return _build(self.logger, network, config)

    if major < 11:  # removed in 11.x: weak typing's precision switches

        @property
        def platform_has_fast_fp16(self) -> bool:
            return True

        def _get_calibrator(self) -> Any:
            return getattr(self, "_calibrator", None)

        def _set_calibrator(self, value: Any) -> None:
            self._calibrator = value

        Builder.platform_has_fast_fp16 = platform_has_fast_fp16
        IBuilderConfig.int8_calibrator = property(_get_calibrator, _set_calibrator)

    def _build(logger: Any, network: INetworkDefinition, config: IBuilderConfig) -> Any:
        if network._onnx is None:
            logger.log(Severity.ERROR, "Network must have at least one output")
            return None
        profiles = []
        for index, profile in enumerate(config._profiles):
            entry = {}
            for tensor in network._inputs:
                if tensor.name not in profile._shapes:
                    logger.log(
                        Severity.ERROR,
                        f"4: [network.cpp::validate] Error Code 4: Internal Error ({tensor.name}: "
                        f"dynamic input is missing dimensions in profile {index}.)",
                    )
                    return None
                lo, opt, hi = profile._shapes[tensor.name]
                if len(lo) != len(tensor.shape) or any(
                    d >= 0 and not (a == o == b == d)
                    for d, a, o, b in zip(tensor.shape, lo, opt, hi)
                ):
                    logger.log(
                        Severity.ERROR,
                        f"4: [network.cpp::validate] Error Code 4: Internal Error ({tensor.name}: "
                        f"profile {index} dimensions do not match the network's {tuple(tensor.shape)})",
                    )
                    return None
                entry[tensor.name] = [list(lo), list(opt), list(hi)]
            profiles.append(entry)
        dynamic = any(d < 0 for t in network._inputs for d in t.shape)
        if dynamic and not profiles:
            logger.log(
                Severity.ERROR,
                "4: Network has dynamic or shape inputs, but no optimization profile has been defined.",
            )
            return None
        if not profiles:
            profiles = [{t.name: [list(t.shape)] * 3 for t in network._inputs}]
        # Activation memory: a crude but monotonic estimate, enough to exercise the OOM path.
        need = 0
        for entry in profiles:
            for hi in (s[2] for s in entry.values()):
                need = max(need, int(np.prod(hi)) * 4 * 64)
        workspace = config._pools.get(MemoryPoolType.WORKSPACE)
        if need > fake_cuda.GPU["total_memory"]:
            logger.log(
                Severity.WARNING,
                f"Requested amount of GPU memory ({need} bytes) could not be allocated. There may "
                "not be enough free memory for allocation to succeed.",
            )
            logger.log(
                Severity.ERROR,
                "2: [globWriter.cpp::makeResizableGpuMemory] Error Code 2: OutOfMemory "
                "(no further information)",
            )
            return None
        weak_fp16 = major < 11 and BuilderFlag.FP16 in config._flags
        layers, outputs = _layers(network._onnx, network._strongly_typed, weak_fp16)
        dla_core = None
        if config.default_device_type == DeviceType.DLA:
            if not 0 <= config.DLA_core < fake_cuda.GPU.get("dla_cores", 0):
                logger.log(Severity.ERROR, f"DLA core {config.DLA_core} is not available.")
                return None
            if any(len({tuple(s) for s in shapes}) > 1 for e in profiles for shapes in e.values()):
                logger.log(Severity.ERROR, "DLA does not support dynamic shapes: min != max.")
                return None
            on_dla = {layer.name for layer in network._layers if config.can_run_on_DLA(layer)}
            refused = [layer.name for layer in network._layers if layer.name not in on_dla]
            if refused and BuilderFlag.GPU_FALLBACK not in config._flags:
                logger.log(
                    Severity.ERROR,
                    f"{refused[0]} cannot run on DLA and GPU fallback is not enabled.",
                )
                return None
            layers, dla_core = _foreign_nodes(layers, on_dla), config.DLA_core
        if config._cache is not None:
            key_gpu = fake_cuda.GPU["name"]
            for layer in layers:
                if layer["LayerType"] == "CaskConvolution":
                    config._cache._entries.setdefault(
                        f"{layer['Name']}|{layer['Inputs'][0]['Format/Datatype']}|{key_gpu}",
                        layer["TacticName"],
                    )
        layers = [_inspector_form(layer, major) for layer in layers]
        gpu = fake_cuda.device_info(fake_cuda.CURRENT["device"])
        header = {
            "tensorrt": full,
            "gpu": gpu.name,
            "cc": gpu.compute_capability,
            "tf32": BuilderFlag.TF32 in config._flags,
            "hardware": int(config.hardware_compatibility_level),
            "version_compatible": BuilderFlag.VERSION_COMPATIBLE in config._flags,
            "exclude_lean": BuilderFlag.EXCLUDE_LEAN_RUNTIME in config._flags,
            "verbosity": int(config.profiling_verbosity),
            "workspace": workspace,
            "opt_level": config._opt_level,
            "inputs": [
                {"name": t.name, "shape": list(t.shape), "dtype": int(t.dtype)}
                for t in network._inputs
            ],
            "outputs": outputs,
            "profiles": profiles,
            "layers": layers,
            "dla_core": dla_core,
        }
        body = json.dumps(header).encode()
        return IHostMemory(_MAGIC + struct.pack("<I", len(body)) + body + network._onnx)

    # -- runtime and engine -----------------------------------------------------------------------
    class Runtime:
        def __init__(self, logger: Any) -> None:
            self.logger = logger
            self.engine_host_code_allowed = False
            self.DLA_core = -1

        @property
        def num_DLA_cores(self) -> int:
            return int(fake_cuda.GPU.get("dla_cores", 0))

        def deserialize_cuda_engine(self, serialized_engine: Any) -> ICudaEngine | None:
            data = bytes(serialized_engine)
            if not data.startswith(_MAGIC):
                self.logger.log(
                    Severity.ERROR,
                    "1: [runtime.cpp::parsePlan] Error Code 1: Serialization (Serialization "
                    "assertion plan->header.magicTag == rt::kPLAN_MAGIC_TAG failed.)",
                )
                return None
            (size,) = struct.unpack("<I", data[4:8])
            header = json.loads(data[8 : 8 + size])
            onnx_bytes = data[8 + size :]
            built = tuple(int(p) for p in header["tensorrt"].split("."))
            here = tuple(int(p) for p in full.split("."))
            if built != here:
                if not header["version_compatible"] or here < built:
                    self.logger.log(
                        Severity.ERROR,
                        "1: [stdArchiveReader.cpp::StdArchiveReaderInitCommon] Error Code 1: "
                        "Serialization (Serialization assertion stdVersionRead == "
                        "kSERIALIZATION_VERSION failed.Version tag does not match.)",
                    )
                    return None
                if header["exclude_lean"]:
                    self.logger.log(
                        Severity.ERROR,
                        "Engine was built without a lean runtime: load one with load_runtime().",
                    )
                    return None
            if (
                header["version_compatible"]
                and not header["exclude_lean"]
                and not self.engine_host_code_allowed
            ):
                self.logger.log(
                    Severity.ERROR,
                    "1: [runtime.cpp::deserializeCudaEngine] Error Code 1: Serialization "
                    "(Cannot deserialize engine with lean runtime. engine_host_code_allowed must "
                    "be set to true.)",
                )
                return None
            if header.get("dla_core") is not None and not (0 <= self.DLA_core < self.num_DLA_cores):
                self.logger.log(
                    Severity.ERROR,
                    "1: [runtime.cpp::deserializeCudaEngine] Error Code 1: Internal Error (DLA "
                    f"core {self.DLA_core} is not available: this device has "
                    f"{self.num_DLA_cores} DLA cores; the engine uses DLA)",
                )
                return None
            gpu = fake_cuda.device_info(fake_cuda.CURRENT["device"])
            hw = header["hardware"]
            cc_ok = (
                gpu.compute_capability == header["cc"]
                if hw != int(HardwareCompatibilityLevel.AMPERE_PLUS)
                else tuple(int(p) for p in gpu.compute_capability.split(".")) >= (8, 0)
            )
            if not cc_ok:
                self.logger.log(
                    Severity.ERROR,
                    "6: The engine plan file is generated on an incompatible device, expecting "
                    f"compute {header['cc']} got compute {gpu.compute_capability}, please rebuild.",
                )
                return None
            return ICudaEngine(header, onnx_bytes, self.logger)

    class ICudaEngine:
        def __init__(self, header: dict[str, Any], onnx_bytes: bytes, logger: Any) -> None:
            self._header, self._onnx, self._logger = header, onnx_bytes, logger
            self._tensors = [(t["name"], TensorIOMode.INPUT, t) for t in header["inputs"]] + [
                (t["name"], TensorIOMode.OUTPUT, t) for t in header["outputs"]
            ]
            self._session: Any = None

        @property
        def num_io_tensors(self) -> int:
            return len(self._tensors)

        @property
        def num_optimization_profiles(self) -> int:
            return len(self._header["profiles"])

        @property
        def num_layers(self) -> int:
            return len(self._header["layers"])

        def get_tensor_name(self, index: int) -> str:
            return self._tensors[index][0]

        def _find(self, name: str) -> tuple[Any, dict[str, Any]]:
            for tname, mode, info in self._tensors:
                if tname == name:
                    return mode, info
            raise RuntimeError(f"Could not get tensor '{name}'. Is the tensor name correct?")

        def get_tensor_mode(self, name: str) -> Any:
            return self._find(name)[0]

        def get_tensor_dtype(self, name: str) -> Any:
            return DataType(self._find(name)[1]["dtype"])

        def get_tensor_shape(self, name: str) -> Dims:
            return Dims(self._find(name)[1]["shape"])

        def get_tensor_profile_shape(self, name: str, profile_index: int) -> list[Dims]:
            if self.get_tensor_mode(name) != TensorIOMode.INPUT:
                raise RuntimeError(f"Could not get tensor '{name}' profile shape: not an input")
            return [Dims(s) for s in self._header["profiles"][profile_index][name]]

        def create_execution_context(self) -> IExecutionContext:
            return IExecutionContext(self)

        def create_engine_inspector(self) -> EngineInspector:
            return EngineInspector(self)

        def _run(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            import onnxruntime as ort

            if self._session is None:
                options = ort.SessionOptions()
                options.log_severity_level = 3
                self._session = ort.InferenceSession(
                    self._onnx, options, providers=["CPUExecutionProvider"]
                )
            names = [o.name for o in self._session.get_outputs()]
            return dict(zip(names, self._session.run(names, feed)))

    class IExecutionContext:
        def __init__(self, engine: ICudaEngine) -> None:
            self.engine = engine
            self._profile = 0
            self._shapes: dict[str, tuple[int, ...]] = {}
            self._addresses: dict[str, int] = {}

        @property
        def active_optimization_profile(self) -> int:
            return self._profile

        def set_optimization_profile_async(self, profile_index: int, stream_handle: int) -> bool:
            if not 0 <= profile_index < self.engine.num_optimization_profiles or not isinstance(
                stream_handle, int
            ):
                raise RuntimeError("Error in set optimization profile async.")
            self._profile = profile_index
            self._shapes.clear()
            return True

        def set_input_shape(self, name: str, shape: Any) -> bool:
            if self.engine.get_tensor_mode(name) != TensorIOMode.INPUT:
                self.engine._logger.log(Severity.ERROR, f"3: {name} is not an input tensor")
                return False
            lo, _opt, hi = self.engine._header["profiles"][self._profile][name]
            shape = tuple(int(d) for d in shape)
            if len(shape) != len(lo) or not all(a <= d <= b for d, a, b in zip(shape, lo, hi)):
                self.engine._logger.log(
                    Severity.ERROR,
                    f"3: [executionContext.cpp::setInputShape] Error Code 3: API Usage Error "
                    f"(Parameter check failed, condition: satisfyProfile. Set dimension "
                    f"{list(shape)} for tensor {name} does not satisfy any optimization profiles. "
                    f"Valid range for profile {self._profile}: {lo}..{hi}.)",
                )
                return False
            self._shapes[name] = shape
            return True

        def get_tensor_shape(self, name: str) -> Dims:
            mode, info = self.engine._find(name)
            if mode == TensorIOMode.INPUT:
                return Dims(self._shapes.get(name, info["shape"]))
            if len(self._shapes) < len(self.engine._header["inputs"]):
                return Dims(info["shape"])
            zeros = {
                t["name"]: np.zeros(self._shapes[t["name"]], _np_dtype(DataType(t["dtype"])))
                for t in self.engine._header["inputs"]
            }
            return Dims(self.engine._run(zeros)[name].shape)

        def set_tensor_address(self, name: str, memory: int) -> bool:
            self.engine._find(name)
            self._addresses[name] = int(memory)
            return True

        def execute_async_v3(self, stream_handle: int) -> bool:
            if not isinstance(stream_handle, int):
                raise TypeError("execute_async_v3(): incompatible function arguments")
            shapes, addresses = dict(self._shapes), dict(self._addresses)
            graph = fake_cuda._capturing()
            if graph is None:
                return self._enqueue(shapes, addresses)
            # Under stream capture the kernels are recorded, not run: a replay uses the shapes
            # and addresses bound now, whatever the context is bound to by then.
            if not self._enqueue(shapes, addresses, check_only=True):
                return False
            graph._record(lambda: self._enqueue(shapes, addresses))
            return True

        def _enqueue(
            self, shapes: dict[str, Any], addresses: dict[str, int], check_only: bool = False
        ) -> bool:
            feed = {}
            for t in self.engine._header["inputs"]:
                name = t["name"]
                if name not in shapes or name not in addresses:
                    self.engine._logger.log(
                        Severity.ERROR,
                        f"3: [executionContext.cpp::enqueueV3] Error Code 3: API Usage Error "
                        f"(input {name}: shape or address not set)",
                    )
                    return False
                if addresses[name] not in fake_cuda.MEMORY:
                    self.engine._logger.log(Severity.ERROR, _ILLEGAL_ADDRESS)
                    return False
                buf = fake_cuda.MEMORY[addresses[name]]
                want = _np_dtype(DataType(t["dtype"]))
                if buf.dtype != want or buf.size < int(np.prod(shapes[name])):
                    self.engine._logger.log(Severity.ERROR, f"bad buffer for {name}")
                    return False
                feed[name] = buf.reshape(-1)[: int(np.prod(shapes[name]))].reshape(shapes[name])
            for t in self.engine._header["outputs"]:
                if t["name"] not in addresses:
                    self.engine._logger.log(Severity.ERROR, f"output {t['name']}: address not set")
                    return False
                if addresses[t["name"]] not in fake_cuda.MEMORY:
                    self.engine._logger.log(Severity.ERROR, _ILLEGAL_ADDRESS)
                    return False
            if check_only:
                return True
            results = self.engine._run(feed)
            fake_cuda._run_kernels(
                len(self.engine._header["layers"]), sum(int(a.size) for a in feed.values())
            )
            for t in self.engine._header["outputs"]:
                name = t["name"]
                out = fake_cuda.MEMORY[addresses[name]]
                value = results[name]
                if out.size < value.size or out.dtype != value.dtype:
                    self.engine._logger.log(Severity.ERROR, f"output buffer {name} is too small")
                    return False
                out.reshape(-1)[: value.size] = value.reshape(-1)
            return True

    class EngineInspector:
        def __init__(self, engine: ICudaEngine) -> None:
            self.engine = engine
            self.execution_context = None

        def get_layer_information(self, layer_index: int, format: Any) -> str:  # noqa: A002
            return json.dumps(self._layers()[layer_index])

        def get_engine_information(self, format: Any) -> str:  # noqa: A002
            layers = self._layers()
            if format == LayerInformationFormat.ONELINE:
                return "\n".join(
                    layer if isinstance(layer, str) else layer["Name"] for layer in layers
                )
            bindings = [t[0] for t in self.engine._tensors]
            return json.dumps({"Layers": layers, "Bindings": bindings}, indent=2)

        def _layers(self) -> list[Any]:
            verbosity = ProfilingVerbosity(self.engine._header["verbosity"])
            layers = self.engine._header["layers"]
            if verbosity == ProfilingVerbosity.DETAILED:
                return layers
            if verbosity == ProfilingVerbosity.NONE:
                return []
            return [layer["Name"] for layer in layers]

    # -- 10.x only --------------------------------------------------------------------------------
    exported: dict[str, Any] = {}
    if major < 11:

        class IInt8Calibrator:
            def get_batch_size(self) -> int:
                raise NotImplementedError

        class IInt8EntropyCalibrator2(IInt8Calibrator):
            pass

        exported |= {
            "IInt8Calibrator": IInt8Calibrator,
            "IInt8EntropyCalibrator2": IInt8EntropyCalibrator2,
        }

    def init_libnvinfer_plugins(logger: Any, namespace: str) -> bool:
        """Polygraphy calls this before every parse and deserialize (backend/trt/loader.py);
        the double has no plugins to register."""
        return True

    exported |= {
        "init_libnvinfer_plugins": init_libnvinfer_plugins,
        "OnnxParserFlag": OnnxParserFlag,
        "ILogger": ILogger,
        "Logger": Logger,
        "Dims": Dims,
        "IHostMemory": IHostMemory,
        "DataType": DataType,
        "TensorIOMode": TensorIOMode,
        "DeviceType": DeviceType,
        "LayerType": LayerType,
        "ILayer": ILayer,
        "NetworkDefinitionCreationFlag": NetworkDefinitionCreationFlag,
        "BuilderFlag": BuilderFlag,
        "MemoryPoolType": MemoryPoolType,
        "HardwareCompatibilityLevel": HardwareCompatibilityLevel,
        "ProfilingVerbosity": ProfilingVerbosity,
        "LayerInformationFormat": LayerInformationFormat,
        "ErrorCode": ErrorCode,
        "ITensor": ITensor,
        "INetworkDefinition": INetworkDefinition,
        "ParserError": ParserError,
        "OnnxParser": OnnxParser,
        "IOptimizationProfile": IOptimizationProfile,
        "ITimingCache": ITimingCache,
        "IBuilderConfig": IBuilderConfig,
        "Builder": Builder,
        "Runtime": Runtime,
        "ICudaEngine": ICudaEngine,
        "IExecutionContext": IExecutionContext,
        "EngineInspector": EngineInspector,
    }
    for name, value in exported.items():
        if isinstance(value, type):
            value.__module__ = "tensorrt"
            value.__qualname__ = name
        setattr(mod, name, value)
    return mod


# -- graph analysis for layers and outputs (private helpers) --------------------------------------


def _np_dtype(dt: Any) -> np.dtype:
    return np.dtype(
        {
            "FLOAT": np.float32,
            "HALF": np.float16,
            "INT8": np.int8,
            "INT32": np.int32,
            "INT64": np.int64,
            "BOOL": np.bool_,
            "UINT8": np.uint8,
        }[dt.name]  # fmt: skip
    )


def _onnx_nodes(onnx_bytes: bytes) -> list[Any]:
    import onnx

    return list(onnx.load_from_string(onnx_bytes).graph.node)


def _layers(onnx_bytes: bytes, strongly_typed: bool, weak_fp16: bool) -> tuple[list, list]:
    """Inspector records for a graph, as TensorRT would report them after fusion."""
    import onnx

    model = onnx.shape_inference.infer_shapes(onnx.load_from_string(onnx_bytes))
    graph = model.graph
    types_ = {}
    for value in list(graph.input) + list(graph.value_info) + list(graph.output):
        tt = value.type.tensor_type
        types_[value.name] = (
            tt.elem_type,
            [d.dim_value if d.HasField("dim_value") else -1 for d in tt.shape.dim],
        )
    for init in graph.initializer:
        types_[init.name] = (init.data_type, list(init.dims))
    producers = {out: node for node in graph.node for out in node.output}
    names = {1: "Float", 10: "Half", 3: "Int8", 6: "Int32", 7: "Int64"}

    def precision_of(node: Any) -> str:
        src = producers.get(node.input[0])
        if src is not None and src.op_type == "DequantizeLinear":
            return "Int8"
        if not strongly_typed:
            return "Half" if weak_fp16 else "Float"
        return names.get(types_.get(node.input[0], (1, []))[0], "Float")

    layers = []
    for index, node in enumerate(graph.node):
        if node.op_type in ("QuantizeLinear", "DequantizeLinear", "Constant", "Identity"):
            continue
        name = node.name or f"node_{index}"
        dtype = precision_of(node) if node.op_type in ("Conv", "Gemm", "MatMul") else None
        in_t = types_.get(node.input[0], (1, []))
        out_t = types_.get(node.output[0], (1, []))
        record: dict[str, Any] = {
            "Name": name,
            "LayerType": {
                "Conv": "CaskConvolution",
                "Gemm": "CaskGemmConvolution",
                "MatMul": "CaskGemmConvolution",
                "MaxPool": "CaskPooling",
                "AveragePool": "CaskPooling",
                "Relu": "PointWiseV2",
            }.get(node.op_type, node.op_type),
            "Inputs": [
                {
                    "Name": node.input[0],
                    "Location": "Device",
                    "Dimensions": in_t[1],
                    "Format/Datatype": dtype or names.get(in_t[0], "Float"),
                }
            ],
            "Outputs": [
                {
                    "Name": node.output[0],
                    "Location": "Device",
                    "Dimensions": out_t[1],
                    "Format/Datatype": dtype or names.get(out_t[0], "Float"),
                }
            ],
            "Metadata": f"[ONNX Layer: {name}]",
            "TacticName": f"sm80_xmma_fake_{(dtype or 'Float').lower()}_{index}",
            "StreamId": 0,
        }
        if node.op_type in ("Conv", "Gemm", "MatMul"):
            record["ParameterType"] = "Convolution"
            weight = types_.get(node.input[1], (1, []))
            record["Weights"] = {"Type": dtype, "Count": int(np.prod(weight[1] or [0]))}
        layers.append(record)
    outputs = []
    for value in graph.output:
        tt = value.type.tensor_type
        np_name = onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type).name
        outputs.append(
            {
                "name": value.name,
                "shape": [d.dim_value if d.HasField("dim_value") else -1 for d in tt.shape.dim],
                "dtype": {"float32": 0, "float16": 1, "int8": 2, "int32": 3, "int64": 8}[np_name],
            }
        )
    return layers, outputs


def _dla_runnable(graph: Any) -> list[bool]:
    """Per node: can the fake DLA run its layer (op in DLA_OPS; a MaxPool between Q/DQ of
    different scales cannot: DLA runs INT8 pooling with one scale on both sides)."""
    from onnx import numpy_helper

    values = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    producers = {out: node for node in graph.node for out in node.output}
    result = []
    for node in graph.node:
        ok = node.op_type in DLA_OPS
        if ok and node.op_type == "MaxPool":
            src = producers.get(node.input[0])
            before = (
                values.get(src.input[1])
                if src is not None and src.op_type == "DequantizeLinear"
                else None
            )
            after = [
                values.get(n.input[1])
                for n in graph.node
                if n.op_type == "QuantizeLinear" and n.input[0] == node.output[0]
            ]
            ok = before is None or all(a is None or np.array_equal(a, before) for a in after)
        result.append(ok)
    return result


def _foreign_nodes(layers: list[dict[str, Any]], on_dla: set[str]) -> list[dict[str, Any]]:
    """Inspector records of a DLA build: each run of DLA layers becomes one opaque layer."""
    out: list[dict[str, Any]] = []
    run: list[dict[str, Any]] = []

    def flush() -> None:
        if run:
            name = f"{{ForeignNode[{run[0]['Name']}...{run[-1]['Name']}]}}"
            out.append({**run[0], "Name": name, "LayerType": "DLA", "Outputs": run[-1]["Outputs"]})
            out[-1].pop("ParameterType", None)
            out[-1].pop("Weights", None)
            run.clear()

    for layer in layers:
        if layer["Name"] in on_dla:
            run.append(layer)
        else:
            flush()
            out.append(layer)
    flush()
    return out


#: The double's type names -> the combined text NVIDIA's recorded A100 engines show
#: (tests/data/trt-engine-json: resnet-a100-fp32/fp16/qat.json).
_FORMATS = {
    "Float": ("FP32", "Row major linear FP32"),
    "Half": ("FP16", "Channel major FP16 format where channel % 8 == 0"),
    "Int8": ("Int8", "Thirty-two wide channel vectorized row major Int8 format"),
}


def _inspector_form(layer: dict[str, Any], major: int) -> dict[str, Any]:
    """One layer record in the field form of the API generation: 10.x one "Format/Datatype"
    text (as NVIDIA's recorded engines), 11.x split "Datatype" + "Format" (as Polygraphy
    0.53.6 reads them: polygraphy/tools/inspect/subtool/model/extractors/_trt.py). The exact
    11.x texts are assumed: no recorded 11.x inspector output is public."""
    out = dict(layer)
    for key in ("Inputs", "Outputs"):
        entries = []
        for entry in layer.get(key, []):
            entry = dict(entry)
            dtype, text = _FORMATS.get(
                entry.get("Format/Datatype"), ("FP32", "Row major linear FP32")
            )
            if major >= 11:
                entry.pop("Format/Datatype", None)
                entry["Datatype"] = dtype
                entry["Format"] = text.replace(f" {dtype}", "").replace(f"{dtype} ", "")
            else:
                entry["Format/Datatype"] = text
            entries.append(entry)
        out[key] = entries
    return out
