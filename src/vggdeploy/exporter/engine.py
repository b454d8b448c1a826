"""Build TensorRT engines from a bundle's ONNX, record every choice, check the precision used.

Precision lives in the ONNX, not in builder flags: `model.onnx` (fp32), `model.fp16.onnx`
(`vggdeploy convert --precision fp16`) and `model.int8.onnx` (Q/DQ from `vggdeploy calibrate`).
Each is parsed into a *strongly typed* network, so TensorRT runs every layer in the type the
graph says. That is the only mode TensorRT 11 has (it removed the FP16/INT8 builder flags and
calibrators) and it works the same on TensorRT 10.x (`NetworkDefinitionCreationFlag.
STRONGLY_TYPED`). After the build the engine inspector reports the type each convolution really
runs in; an "fp16" engine with fp32 convolutions is a failure and no engine is written.

The engine file is TensorRT's raw serialized plan (trtexec and Polygraphy open it as is); what
it is and how it was made goes in the bundle manifest under `engine.<precision>`.
"""

from __future__ import annotations

import json
import logging
import platform
import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from vggdeploy.bundle import Bundle, atomic_path, atomic_write_bytes, sha256_file
from vggdeploy.errors import BundleError, CheckFailedError, InputError, RuntimeUnavailableError
from vggdeploy.runtimes.trt import (
    PRECISIONS,
    cuda_glue,
    engine_artifact_key,
    engine_file_name,
    import_tensorrt,
    major_version,
    make_logger,
    summarize_errors,
    version_tuple,
)

log = logging.getLogger(__name__)

#: Every `tensorrt` name this module touches; see tests/test_trt_api_names.py.
TENSORRT_API = (
    "__version__",
    "Builder",
    "create_network",
    "NetworkDefinitionCreationFlag",
    "STRONGLY_TYPED",
    "num_inputs",
    "get_input",
    "name",
    "shape",
    "OnnxParser",
    "parse_from_file",
    "num_errors",
    "get_error",
    "code",
    "desc",
    "node",
    "node_name",
    "node_operator",
    "ErrorCode",
    "UNSUPPORTED_NODE",
    "create_builder_config",
    "set_memory_pool_limit",
    "MemoryPoolType",
    "WORKSPACE",
    "builder_optimization_level",
    "create_optimization_profile",
    "set_shape",
    "add_optimization_profile",
    "create_timing_cache",
    "set_timing_cache",
    "get_timing_cache",
    "serialize",
    "hardware_compatibility_level",
    "HardwareCompatibilityLevel",
    "AMPERE_PLUS",
    "SAME_COMPUTE_CAPABILITY",
    "set_flag",
    "BuilderFlag",
    "VERSION_COMPATIBLE",
    "EXCLUDE_LEAN_RUNTIME",
    "profiling_verbosity",
    "ProfilingVerbosity",
    "DETAILED",
    "build_serialized_network",
    "Runtime",
    "engine_host_code_allowed",
    "deserialize_cuda_engine",
    "create_engine_inspector",
    "get_engine_information",
    "LayerInformationFormat",
    "JSON",
)

ONNX_ARTIFACTS = {"fp32": "onnx.fp32", "fp16": "onnx.fp16", "int8": "onnx.int8"}
ONNX_FILES = {"fp32": "model.onnx", "fp16": "model.fp16.onnx", "int8": "model.int8.onnx"}
MISSING_ONNX_HINT = {
    "fp32": "re-export the bundle with `vggdeploy export`",
    "fp16": "create it with `vggdeploy convert {root} --precision fp16`",
    "int8": (
        "an INT8 engine needs a calibrated Q/DQ model (TensorRT 11 has no calibrators): "
        "create it with `vggdeploy calibrate {root} --images DIR`"
    ),
}
HARDWARE_COMPAT = ("none", "ampere+", "same-cc")
OPT_LEVELS = range(0, 6)
_SIZE_UNITS = {
    "b": 1,
    "k": 1024,
    "kb": 1000,
    "kib": 1024,
    "m": 1024**2,
    "mb": 1000**2,
    "mib": 1024**2,
    "g": 1024**3,
    "gb": 1000**3,
    "gib": 1024**3,
    "t": 1024**4,
    "tb": 1000**4,
    "tib": 1024**4,
}
# How TensorRT and CUDA word an allocation failure during a build.
_OOM_PATTERNS = (
    "out of memory",
    "outofmemory",
    "could not be allocated",
    "cudaerrormemoryallocation",
)


# -- options ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProfileSpec:
    """One optimization profile: (min, opt, max) batch, and for a dense bundle height/width."""

    batch: tuple[int, int, int] = (1, 8, 32)
    height: tuple[int, int, int] | None = None
    width: tuple[int, int, int] | None = None

    def describe(self) -> str:
        text = f"batch {_triple(self.batch)}"
        if self.height:
            text += f", height {_triple(self.height)}, width {_triple(self.width)}"
        return text


@dataclass
class BuildOptions:
    """What `vggdeploy build` was asked for. Sizes are validated against the bundle in
    `build_engine`; `profiles` empty means one profile from the bundle's defaults."""

    precision: str = "fp16"
    profiles: list[ProfileSpec] = field(default_factory=list)
    workspace: int | None = None  # bytes; None: TensorRT's default (the GPU's memory)
    opt_level: int | None = None  # builder_optimization_level 0..5; None: TensorRT's default (3)
    timing_cache: Path | None = None
    hardware_compat: str = "none"
    version_compatible: bool = False
    exclude_lean_runtime: bool = False
    device_id: int = 0
    verbosity: int = 0

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise InputError(
                f"precision {self.precision!r} is not supported: use {', '.join(PRECISIONS)}"
            )
        if self.workspace is not None and self.workspace <= 0:
            raise InputError(f"workspace {self.workspace} must be positive (e.g. 4GiB)")
        if self.opt_level is not None and self.opt_level not in OPT_LEVELS:
            raise InputError(
                f"--opt-level {self.opt_level} is out of range: use 0 (fastest build) to 5 "
                "(most thorough); TensorRT's default is 3"
            )
        if self.hardware_compat not in HARDWARE_COMPAT:
            raise InputError(
                f"--hardware-compat {self.hardware_compat!r} is not one of {', '.join(HARDWARE_COMPAT)}"
            )
        if self.exclude_lean_runtime and not self.version_compatible:
            raise InputError(
                "--exclude-lean-runtime only applies to version-compatible engines: add "
                "--version-compatible or drop it"
            )


def parse_size(text: str) -> int:
    """'4GiB', '512MiB', '1.5G', '2GB' -> bytes (K/M/G alone are binary, as in trtexec)."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(text))
    unit = match.group(2).lower() if match else ""
    if not match or unit not in _SIZE_UNITS:
        raise InputError(
            f"size {text!r} is not understood: use a number with a unit, e.g. 4GiB, 512MiB, 2GB"
        )
    value = int(float(match.group(1)) * _SIZE_UNITS[unit])
    if value <= 0:
        raise InputError(f"size {text!r} must be positive")
    return value


def parse_triple(text: str, what: str) -> tuple[int, int, int]:
    """'1:8:32' -> (1, 8, 32); a single number means min = opt = max."""
    try:
        parts = tuple(int(p) for p in str(text).split(":"))
    except ValueError:
        raise InputError(f"{what} {text!r} must be MIN:OPT:MAX integers, e.g. 1:8:32") from None
    if len(parts) == 1:
        parts = parts * 3
    if len(parts) != 3:
        raise InputError(f"{what} {text!r} must be MIN:OPT:MAX integers, e.g. 1:8:32")
    return parts  # type: ignore[return-value]


def parse_profile(text: str) -> ProfileSpec:
    """'batch=1:8:32' or 'b=1:8:32,h=224:320:512,w=224:320:512' -> ProfileSpec."""
    keys = {"b": "batch", "batch": "batch", "h": "height", "height": "height"}
    keys |= {"w": "width", "width": "width"}
    values: dict[str, tuple[int, int, int]] = {}
    for item in str(text).split(","):
        key, sep, value = item.partition("=")
        key = key.strip().lower()
        if not sep or key not in keys:
            raise InputError(
                f"--profile {text!r}: use b=MIN:OPT:MAX[,h=MIN:OPT:MAX,w=MIN:OPT:MAX], "
                "e.g. b=1:8:32"
            )
        values[keys[key]] = parse_triple(value, f"--profile {keys[key]}")
    if "batch" not in values:
        raise InputError(f"--profile {text!r} has no batch range (b=MIN:OPT:MAX)")
    if ("height" in values) != ("width" in values):
        raise InputError(f"--profile {text!r}: give both h= and w= or neither")
    return ProfileSpec(values["batch"], values.get("height"), values.get("width"))


def parse_hw(text: str, what: str) -> tuple[int, int]:
    """'224' or '224x320' -> (height, width)."""
    parts = str(text).lower().replace("*", "x").split("x")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise InputError(
            f"{what} {text!r} must be HxW or one number, e.g. 224x320 or 224"
        ) from None
    if len(values) == 1:
        values *= 2
    if len(values) != 2:
        raise InputError(f"{what} {text!r} must be HxW or one number, e.g. 224x320 or 224")
    return values[0], values[1]


def build_profiles(
    profiles: tuple[str, ...] | list[str],
    *,
    batch: tuple[int | None, int | None, int | None] = (None, None, None),
    size: tuple[str | None, str | None, str | None] = (None, None, None),
) -> list[ProfileSpec]:
    """Profiles from `--profile` specs or from --min/--opt/--max-batch and -size (not both).

    Unset batch values default to 1 / 8 / 32 kept in order around the ones given; unset sizes
    default to the smallest given size (224 if none).
    """
    singles = any(v is not None for v in (*batch, *size))
    if profiles and singles:
        raise InputError(
            "use either --profile (repeatable) or --min/--opt/--max-batch and -size, not both"
        )
    if profiles:
        return [parse_profile(p) for p in profiles]
    if not singles:
        return []
    lo, opt, hi = batch
    lo = lo if lo is not None else 1
    hi = hi if hi is not None else max(32, lo, opt or 0)
    opt = opt if opt is not None else min(max(8, lo), hi)
    height = width = None
    if any(v is not None for v in size):
        names = ("--min-size", "--opt-size", "--max-size")
        given = {i: parse_hw(v, names[i]) for i, v in enumerate(size) if v is not None}
        smin = given.get(0) or min(given.values())
        sopt = given.get(1) or smin
        smax = given.get(2) or max(given.values())
        height, width = (smin[0], sopt[0], smax[0]), (smin[1], sopt[1], smax[1])
    return [ProfileSpec((lo, opt, hi), height, width)]


def _triple(t: tuple[int, int, int]) -> str:
    return f"{t[0]}:{t[1]}:{t[2]}"


# -- the bundle's side ----------------------------------------------------------------------------


def source_onnx(bundle: Bundle, precision: str) -> tuple[str, Path]:
    """The artifact key and path of the ONNX that holds `precision`, with a fix if missing."""
    key = ONNX_ARTIFACTS[precision]
    if key not in bundle.artifacts:
        hint = MISSING_ONNX_HINT[precision].format(root=bundle.root)
        raise BundleError(
            f"bundle {bundle.root} has no {precision} ONNX ({ONNX_FILES[precision]}): {hint}"
        )
    return key, bundle.artifact_path(key, verify=True)


def input_profiles(
    bundle: Bundle, profiles: list[ProfileSpec]
) -> tuple[str, list[dict[str, list[int]]]]:
    """Check the asked profiles against the bundle's input; return min/opt/max shapes."""
    inputs = bundle.manifest["io"]["inputs"]
    if len(inputs) != 1:
        raise BundleError(f"bundle {bundle.root} has {len(inputs)} inputs; vggdeploy expects one")
    name, shape = inputs[0]["name"], list(inputs[0]["shape"])
    if len(shape) != 4:
        raise BundleError(f"input {name!r} has shape {shape}; expected (batch, 3, height, width)")
    dense = isinstance(shape[2], str) or isinstance(shape[3], str)
    size = int(bundle.model.get("image_size", 224))
    if not profiles:
        static_batch = shape[0] if isinstance(shape[0], int) else None
        batch = (static_batch,) * 3 if static_batch else ProfileSpec().batch
        profiles = [ProfileSpec(batch, (size,) * 3, (size,) * 3) if dense else ProfileSpec(batch)]
    result = []
    for index, wanted in enumerate(profiles):
        where = f"profile {index} ({wanted.describe()})"
        _check_range(wanted.batch, "batch", where, minimum=1)
        if isinstance(shape[0], int) and wanted.batch != (shape[0],) * 3:
            raise InputError(
                f"{where}: this bundle was exported with a fixed batch of {shape[0]}; use "
                f"--min-batch/--opt-batch/--max-batch {shape[0]} or re-export with --batch dynamic"
            )
        if dense:
            height = wanted.height or (size,) * 3
            width = wanted.width or (size,) * 3
            for what, triple in (("height", height), ("width", width)):
                _check_range(triple, what, where, minimum=224)
                if any(v % 32 for v in triple):
                    raise InputError(
                        f"{where}: every {what} must be a multiple of 32 (the model has five "
                        "2x2 pools), e.g. 224:320:512"
                    )
        else:
            if wanted.height or wanted.width:
                raise InputError(
                    f"{where}: height/width ranges need a dense bundle (`vggdeploy export "
                    f"--dense`); this one takes a fixed {shape[2]}x{shape[3]} input"
                )
            height, width = (shape[2],) * 3, (shape[3],) * 3
        result.append(
            {
                k: [wanted.batch[i], shape[1], height[i], width[i]]
                for i, k in enumerate(("min", "opt", "max"))
            }
        )
    return name, result


def _check_range(triple: tuple[int, int, int], what: str, where: str, minimum: int) -> None:
    lo, opt, hi = triple
    if lo < minimum:
        raise InputError(f"{where}: minimum {what} {lo} must be at least {minimum}")
    if not lo <= opt <= hi:
        raise InputError(f"{where}: {what} must satisfy min <= opt <= max, got {lo}:{opt}:{hi}")


def onnx_conv_facts(path: Path) -> dict[str, Any]:
    """The precision each Conv node of the ONNX asks for: int8 when its input comes from a
    DequantizeLinear (Q/DQ), else the type of its weights (fp16 / fp32)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    producers = {out: node for node in model.graph.node for out in node.output}
    weights = {init.name: init.data_type for init in model.graph.initializer}
    float_names = {onnx.TensorProto.FLOAT: "fp32", onnx.TensorProto.FLOAT16: "fp16"}
    float_names[onnx.TensorProto.BFLOAT16] = "bf16"
    by_precision: dict[str, int] = {}
    for node in model.graph.node:
        if node.op_type != "Conv":
            continue
        source = producers.get(node.input[0])
        if source is not None and source.op_type == "DequantizeLinear":
            kind = "int8"
        elif node.input[1] in weights:
            kind = float_names.get(weights[node.input[1]], "unknown")
        else:
            cast = producers.get(node.input[1])
            to = [a.i for a in cast.attribute if a.name == "to"] if cast is not None else []
            kind = float_names.get(to[0], "unknown") if to else "unknown"
        by_precision[kind] = by_precision.get(kind, 0) + 1
    return {"convolutions": sum(by_precision.values()), "by_precision": by_precision}


# -- the precision check --------------------------------------------------------------------------


def layer_precision(datatype: str) -> str:
    """The inspector's 'Format/Datatype' text -> fp32/fp16/int8/...: it is terse ("Half") or
    long ("Channel major FP16 format where channel % 8 == 0") depending on the TensorRT
    version and whether a context is bound."""
    text = datatype.lower()
    for token, precision in (
        ("int8", "int8"),
        ("fp8", "fp8"),
        ("bf16", "bf16"),
        ("fp16", "fp16"),
        ("half", "fp16"),
        ("fp32", "fp32"),
        ("float", "fp32"),
    ):
        if token in text:
            return precision
    return "unknown"


def check_precision(
    layer_json: str, precision: str, onnx_facts: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Check from the engine inspector's JSON that convolutions run in `precision`.

    `onnx_facts` (from `onnx_conv_facts`) says how many Conv nodes the graph types as each
    precision: at least that many engine convolutions must run in `precision` (layers the
    graph keeps in fp32 on purpose may stay there). Without it, every convolution must.
    Raises `CheckFailedError` naming the offending layers; returns a summary for the manifest.
    """
    try:
        info = json.loads(layer_json)
    except ValueError as exc:
        raise CheckFailedError(f"the engine inspector returned invalid JSON ({exc})") from None
    layers = info.get("Layers", [])
    if layers and not all(isinstance(layer, dict) for layer in layers):
        raise CheckFailedError(
            "the engine inspector reported layer names only: the engine was not built with "
            "ProfilingVerbosity.DETAILED, so its precision cannot be checked"
        )
    convs = [
        layer
        for layer in layers
        if "conv" in str(layer.get("LayerType", "")).lower()
        or str(layer.get("ParameterType", "")) == "Convolution"
    ]
    if not convs:
        raise CheckFailedError(
            f"the engine inspector reported no convolution layers among {len(layers)} layers, "
            f"so the {precision} precision cannot be confirmed"
        )
    found: dict[str, list[str]] = {}
    for layer in convs:
        inputs = layer.get("Inputs") or [{}]
        kind = layer_precision(str(inputs[0].get("Format/Datatype", "")))
        found.setdefault(kind, []).append(str(layer.get("Name", "?")))
    counts = {k: len(v) for k, v in sorted(found.items())}
    summary = {"expected": precision, "convolutions": len(convs), "by_precision": counts}
    # TensorRT may lower the classifier's FC layers to convolutions too, and a conversion may
    # keep some layers in fp32 on purpose (fp16 overflow, unquantized layers): so every Conv the
    # ONNX types as `precision` must run in it; other conv-like layers may differ.
    facts_by = (onnx_facts or {}).get("by_precision")
    need = facts_by.get(precision, 0) if facts_by is not None else len(convs)
    if need == 0:
        fix = MISSING_ONNX_HINT[precision].format(root="BUNDLE")
        raise CheckFailedError(
            f"{ONNX_FILES[precision]} has no {precision} convolutions "
            f"({_counts_text(facts_by or {})}), so TensorRT cannot build a {precision} engine "
            f"from it: {fix}"
        )
    summary["onnx_convolutions"] = facts_by
    ok = counts.get(precision, 0) >= need
    summary["passed"] = ok
    if not ok:
        wrong = {k: v for k, v in found.items() if k != precision}
        examples = "; ".join(f"{k}: {', '.join(v[:3])}" for k, v in sorted(wrong.items()))
        raise CheckFailedError(
            f"precision check failed: the {precision} engine runs "
            f"{sum(len(v) for v in wrong.values())} of {len(convs)} convolutions in "
            f"{'/'.join(sorted(wrong))} ({examples}) although {ONNX_FILES[precision]} types "
            f"{need} as {precision}; TensorRT did not build what the graph says, so no engine "
            "was written"
        )
    return summary


# -- building -------------------------------------------------------------------------------------


def network_creation_flags(trt: Any) -> int:
    """Creation flags for a strongly typed network on this TensorRT.

    TensorRT 11 networks are always strongly typed (its STRONGLY_TYPED flag is accepted and
    ignored), so nothing is passed there; 10.x needs the flag, which 10.0 already has.
    """
    if major_version(trt) >= 11:
        return 0
    creation = trt.NetworkDefinitionCreationFlag
    if not hasattr(creation, "STRONGLY_TYPED"):
        raise RuntimeUnavailableError(
            f"TensorRT {trt.__version__} cannot build strongly typed networks: install "
            "TensorRT 10.x or 11.x"
        )
    return 1 << int(creation.STRONGLY_TYPED)


def parse_onnx(trt: Any, network: Any, logger: Any, path: Path) -> None:
    """Parse `path` into `network`; a parser failure lists every failing node in one line."""
    parser = trt.OnnxParser(network, logger)
    if parser.parse_from_file(str(path)):
        return
    problems, unsupported = [], []
    for index in range(parser.num_errors):
        error = parser.get_error(index)
        code = error.code()
        node_name, op = error.node_name() or f"#{error.node()}", error.node_operator()
        desc = " ".join(str(error.desc()).split())[:200]
        if code == trt.ErrorCode.UNSUPPORTED_NODE:
            unsupported.append(op or "?")
        label = getattr(code, "name", str(code))
        where = f"node {node_name} ({op})" if op else "graph"
        problems.append(f"{where}: {label}: {desc}")
    if not problems:
        problems = [summarize_errors(logger.errors)]
    lead = (
        f"TensorRT {trt.__version__} does not support op {', '.join(sorted(set(unsupported)))} in "
        if unsupported
        else f"TensorRT {trt.__version__}'s ONNX parser failed on "
    )
    raise InputError(f"{lead}{path.name}: " + "; ".join(problems[:6]))


def build_engine(bundle: Bundle, options: BuildOptions) -> dict[str, Any]:
    """Build `model.<precision>.engine` into `bundle`, check it, and record it in the manifest.

    Returns the manifest record. Raises `VggDeployError` subclasses for everything the user can
    fix; nothing is written unless the engine was built and passed the precision check.
    """
    precision = options.precision
    onnx_key, onnx_path = source_onnx(bundle, precision)
    input_name, shapes = input_profiles(bundle, options.profiles)
    trt = import_tensorrt()
    cuda = cuda_glue()
    device = cuda.device_info(options.device_id)
    _check_hardware_option(options.hardware_compat, device)
    cuda.use_device(options.device_id)
    logger = make_logger(trt, options.verbosity)
    log.info(
        "building %s engine from %s with TensorRT %s on %s (compute capability %s)",
        precision,
        onnx_path.name,
        trt.__version__,
        device.name,
        device.compute_capability,
    )

    builder = trt.Builder(logger)
    creation_flags = network_creation_flags(trt)
    network = builder.create_network(creation_flags)
    parse_onnx(trt, network, logger, onnx_path)

    config = builder.create_builder_config()
    if options.workspace is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace)
    if options.opt_level is not None:
        config.builder_optimization_level = options.opt_level
    # Layer precisions in the inspector need detailed profiling information.
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    if options.hardware_compat == "ampere+":
        config.hardware_compatibility_level = trt.HardwareCompatibilityLevel.AMPERE_PLUS
    elif options.hardware_compat == "same-cc":
        config.hardware_compatibility_level = trt.HardwareCompatibilityLevel.SAME_COMPUTE_CAPABILITY
    if options.version_compatible:
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
        if options.exclude_lean_runtime:
            config.set_flag(trt.BuilderFlag.EXCLUDE_LEAN_RUNTIME)
    _add_profiles(trt, builder, network, config, input_name, shapes, logger)
    cache_record = _load_timing_cache(config, logger, options.timing_cache)

    started = time.perf_counter()
    mark, warn_mark = logger.mark(), len(logger.warnings)
    try:
        serialized = builder.build_serialized_network(network, config)
    except MemoryError:
        serialized = None
        logger.errors.append("out of memory")
    seconds = time.perf_counter() - started
    if serialized is None:
        # TensorRT reports a failed allocation as a warning and the failed build as an error.
        raise _build_failure(trt, logger.errors_since(mark), logger.warnings[warn_mark:], options)
    plan = bytes(memoryview(serialized))
    log.info("built in %.1f s (%.1f MB)", seconds, len(plan) / 1e6)

    # Check what TensorRT really chose before anything is written.
    runtime = trt.Runtime(logger)
    if options.version_compatible and not options.exclude_lean_runtime:
        runtime.engine_host_code_allowed = True
    engine = runtime.deserialize_cuda_engine(plan)
    if engine is None:
        raise RuntimeUnavailableError(
            f"TensorRT could not load the engine it just built ({summarize_errors(logger.errors)})"
        )
    inspector = engine.create_engine_inspector()
    layer_json = inspector.get_engine_information(trt.LayerInformationFormat.JSON)
    check = check_precision(layer_json, precision, onnx_conv_facts(onnx_path))

    if options.timing_cache is not None:
        cache_blob = bytes(memoryview(config.get_timing_cache().serialize()))
        try:
            atomic_write_bytes(options.timing_cache, cache_blob)
        except OSError as exc:
            raise InputError(
                f"cannot write timing cache {options.timing_cache} ({exc.strerror}): choose a "
                "writable --timing-cache path"
            ) from None
        cache_record["saved_size"] = len(cache_blob)
    engine_path = bundle.root / engine_file_name(precision)
    with atomic_path(engine_path) as tmp:
        tmp.write_bytes(plan)

    record = bundle.add_artifact(
        engine_artifact_key(precision),
        engine_path,
        kind="tensorrt-engine",
        precision=precision,
        tensorrt_version=trt.__version__,
        gpu={
            "name": device.name,
            "compute_capability": device.compute_capability,
            "jetson": bool(device.jetson),
        },
        cuda_version=device.cuda_version,
        source_onnx={
            "artifact": onnx_key,
            "path": bundle.artifacts[onnx_key]["path"],
            "sha256": sha256_file(onnx_path),
        },
        profiles=[{input_name: s} for s in shapes],
        flags={
            "strongly_typed": True,
            "network_creation_flags": creation_flags,
            "workspace_bytes": options.workspace,
            "builder_optimization_level": options.opt_level,
            "hardware_compat": options.hardware_compat,
            "version_compatible": options.version_compatible,
            "exclude_lean_runtime": options.exclude_lean_runtime,
            "profiling_verbosity": "detailed",
        },
        timing_cache=cache_record or None,
        precision_check=check,
        build_seconds=round(seconds, 2),
        built_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        host={"machine": platform.machine(), "python": platform.python_version()},
    )
    bundle.save()
    return record


def _counts_text(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "no Conv nodes"


def _check_hardware_option(level: str, device: Any) -> None:
    if level == "none":
        return
    if device.jetson:
        raise InputError(
            f"--hardware-compat {level} is not supported on Jetson/JetPack: build on each "
            "device without it"
        )
    if level == "ampere+" and version_tuple(device.compute_capability) < (8, 0):
        raise InputError(
            f"--hardware-compat ampere+ needs an Ampere or later GPU (compute capability 8.0+) "
            f"to build on; {device.name} is {device.compute_capability}"
        )


def _add_profiles(
    trt: Any,
    builder: Any,
    network: Any,
    config: Any,
    input_name: str,
    shapes: list[dict[str, list[int]]],
    logger: Any,
) -> None:
    names = [network.get_input(i).name for i in range(network.num_inputs)]
    if input_name not in names:
        raise BundleError(
            f"the ONNX network's inputs are {names}, the manifest says {input_name!r}: "
            "re-export the bundle"
        )
    rank = len(network.get_input(names.index(input_name)).shape)
    for index, shape in enumerate(shapes):
        if len(shape["min"]) != rank:
            raise BundleError(
                f"input {input_name!r} has rank {rank} in the ONNX but {len(shape['min'])} in "
                "the manifest: re-export the bundle"
            )
        profile = builder.create_optimization_profile()
        try:
            profile.set_shape(input_name, shape["min"], shape["opt"], shape["max"])
        except (ValueError, RuntimeError, TypeError) as exc:
            raise InputError(f"TensorRT rejected optimization profile {index}: {exc}") from None
        if config.add_optimization_profile(profile) < 0:
            raise InputError(
                f"TensorRT rejected optimization profile {index} "
                f"(min {shape['min']}, opt {shape['opt']}, max {shape['max']}): "
                f"{summarize_errors(logger.errors)}"
            )


def _load_timing_cache(config: Any, logger: Any, path: Path | None) -> dict[str, Any]:
    """Attach a timing cache (loaded from `path` when it exists); a rejected one is an error."""
    if path is None:
        return {}
    path = Path(path)
    blob = path.read_bytes() if path.is_file() else b""
    mark = logger.mark()
    cache = config.create_timing_cache(blob)
    rejected = logger.errors_since(mark)
    if cache is None or rejected or not config.set_timing_cache(cache, False):
        reason = summarize_errors(logger.errors_since(mark))
        raise InputError(
            f"timing cache {path} was rejected by TensorRT ({reason}): it was made by another "
            "GPU or TensorRT version; delete it or choose another --timing-cache file"
        )
    if blob:
        log.info("timing cache %s loaded (%d bytes)", path, len(blob))
    return {"path": str(path), "loaded": bool(blob), "loaded_size": len(blob)}


def _build_failure(
    trt: Any, errors: list[str], warnings: list[str], options: BuildOptions
) -> Exception:
    text = " ".join(errors + warnings).lower()
    if any(p in text for p in _OOM_PATTERNS):
        workspace = (
            f"a smaller --workspace than {options.workspace / 2**30:.1f}GiB"
            if options.workspace
            else "a --workspace limit (e.g. --workspace 1GiB)"
        )
        return RuntimeUnavailableError(
            f"the GPU ran out of memory while TensorRT built the engine: try {workspace} or a "
            "smaller --max-batch (and close other GPU programs)"
        )
    return RuntimeUnavailableError(
        f"TensorRT {trt.__version__} failed to build the engine ({summarize_errors(errors)}); "
        "run with -vv for TensorRT's full log"
    )
