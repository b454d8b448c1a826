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

import importlib
import logging
import platform
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from vggdeploy import precision as P
from vggdeploy.bundle import Bundle, atomic_path, sha256_file
from vggdeploy.errors import BundleError, InputError, RuntimeUnavailableError
from vggdeploy.exporter import dla
from vggdeploy.exporter.engine_checks import (
    MISSING_ONNX_HINT,
    ONNX_ARTIFACTS,
    ONNX_FILES,
    check_precision,
    layer_precision,
    onnx_conv_facts,
)
from vggdeploy.exporter.profiles import (
    ProfileSpec,
    build_profiles,
    input_profiles,
    parse_hw,
    parse_profile,
    parse_size,
    parse_triple,
)
from vggdeploy.host import install_hint, version_tuple
from vggdeploy.records import EngineRecord
from vggdeploy.runtimes._trt import (
    cuda_glue,
    import_tensorrt,
    major_version,
    summarize_errors,
    trt_logger,
)

PRECISIONS = P.ENGINE_NAMES

__all__ = [
    "MISSING_ONNX_HINT",
    "ONNX_ARTIFACTS",
    "ONNX_FILES",
    "PRECISIONS",
    "BuildOptions",
    "ProfileSpec",
    "build_engine",
    "build_profiles",
    "check_precision",
    "input_profiles",
    "layer_precision",
    "onnx_conv_facts",
    "parse_hw",
    "parse_profile",
    "parse_size",
    "parse_triple",
    "source_onnx",
]

log = logging.getLogger(__name__)

#: Every `tensorrt` name this module touches; see tests/runtimes/test_trt_api_names.py.
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
    "MemoryPoolType",
    "WORKSPACE",
    "builder_optimization_level",
    "create_optimization_profile",
    "set_shape",
    "create_timing_cache",
    "set_timing_cache",
    "HardwareCompatibilityLevel",
    "AMPERE_PLUS",
    "SAME_COMPUTE_CAPABILITY",
    "profiling_verbosity",
    "ProfilingVerbosity",
    "DETAILED",
    "Runtime",
    "engine_host_code_allowed",
    "deserialize_cuda_engine",
    "create_engine_inspector",
    "get_engine_information",
    "LayerInformationFormat",
    "JSON",
    "DLA_core",
    "OnnxParserFlag",
    "NATIVE_INSTANCENORM",
    "ADJUST_FOR_DLA",
)

HARDWARE_COMPAT = ("none", "ampere+", "same-cc")
OPT_LEVELS = range(0, 6)
# How TensorRT and CUDA word an allocation failure during a build.
_OOM_PATTERNS = (
    "out of memory",
    "outofmemory",
    "could not be allocated",
    "cudaerrormemoryallocation",
)


# -- options ------------------------------------------------------------------------------------


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
    dla_core: int | None = None  # build for this DLA core (Jetson Orin); see exporter/dla.py
    gpu_fallback: bool = False  # with dla_core: let layers DLA cannot run go to the GPU
    tf32: bool = False  # let fp32 layers use TF32 (TensorRT's default; cleared unless asked)

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise InputError(
                f"precision {self.precision!r} is not supported: use {', '.join(PRECISIONS)}"
            )
        dla.check_request(self.precision, self.dla_core, self.gpu_fallback)
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


def import_polygraphy() -> tuple[Any, type[Exception], Any]:
    """Polygraphy's TensorRT backend, its exception type and its logger; a one-line error
    saying how to install it."""
    try:
        poly = importlib.import_module("polygraphy.backend.trt")
        from polygraphy.exception import PolygraphyException
        from polygraphy.logger import G_LOGGER
    except ImportError:
        raise RuntimeUnavailableError(
            "Polygraphy is not installed: vggdeploy builds engines through its TensorRT "
            "loaders; " + install_hint("polygraphy")
        ) from None
    return poly, PolygraphyException, G_LOGGER


def _polygraphy_version() -> str:
    import polygraphy

    return str(getattr(polygraphy, "__version__", "?"))


def _load_network(
    trt: Any,
    poly: Any,
    poly_error: type[Exception],
    logger: Any,
    path: Path,
    dla_parser: bool,
) -> tuple[Any, Any, Any, int]:
    """(builder, network, parser, creation flags) from Polygraphy's NetworkFromOnnxPath,
    strongly typed where the release needs the flag (10.x; 11.x networks always are).

    For DLA the parser also gets ADJUST_FOR_DLA where the release has it (OnnxParserFlag 4 in
    the 10.16 C API reference; kADJUST_FOR_DLA in the 11.4 DLA guide, dla-onnx-parser.html),
    beside the default NATIVE_INSTANCENORM, which Polygraphy's flag list would otherwise clear.
    On a parse failure Polygraphy logs each error and raises "Could not parse ONNX correctly"
    without the parser (backend/trt/util.py, check_onnx_parser_errors): the file is parsed
    once more with a fresh parser so that the one-line error can name every failing node.
    """
    creation_flags = network_creation_flags(trt)
    flags = None
    parser_flags = getattr(trt, "OnnxParserFlag", None)
    if dla_parser and parser_flags is not None and hasattr(parser_flags, "ADJUST_FOR_DLA"):
        flags = [trt.OnnxParserFlag.NATIVE_INSTANCENORM, trt.OnnxParserFlag.ADJUST_FOR_DLA]
    load = poly.NetworkFromOnnxPath(str(path), strongly_typed=creation_flags != 0, flags=flags)
    try:
        builder, network, parser = load()
    except poly_error:
        network = trt.Builder(logger).create_network(creation_flags)
        parse_onnx(trt, network, logger, path)
        raise InputError(
            f"TensorRT {trt.__version__}'s ONNX parser failed on {path.name}: "
            f"{summarize_errors(logger.errors)}"
        ) from None
    return builder, network, parser, creation_flags


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


def build_engine(bundle: Bundle, options: BuildOptions) -> EngineRecord:
    """Build `model.<precision>.engine` into `bundle`, check it, and record it in the manifest.

    Returns the manifest record. Raises `VggDeployError` subclasses for everything the user can
    fix; nothing is written unless the engine was built and passed the precision check.
    """
    precision = options.precision
    onnx_key, onnx_path = source_onnx(bundle, precision)
    core, profiles = options.dla_core, options.profiles
    if core is not None:  # DLA: static shapes, one INT8 scale around each pool (before TensorRT)
        batch = bundle.manifest.io.inputs[0].shape[0] if bundle.manifest.io.inputs else None
        profiles = dla.static_profiles(profiles, batch if isinstance(batch, int) else None)
        if precision == "int8":
            dla.check_pool_scales(onnx_path)
    input_name, shapes = input_profiles(bundle, profiles)
    trt = import_tensorrt()
    cuda = cuda_glue()
    device = cuda.device_info(options.device_id)
    _check_hardware_option(options.hardware_compat, device)
    cuda.use_device(options.device_id)
    poly, poly_error, G_LOGGER = import_polygraphy()
    logger = trt_logger(trt, options.verbosity)
    # Polygraphy's loaders log to its own process-wide TensorRT logger: hand it ours, so that
    # TensorRT has one logger (backend/trt/util.py: get_trt_logger returns TRT_LOGGER).
    poly_util = importlib.import_module("polygraphy.backend.trt.util")
    poly_util.TRT_LOGGER = logger
    log.info(
        "building %s engine from %s with TensorRT %s on %s (compute capability %s)",
        precision,
        onnx_path.name,
        trt.__version__,
        device.name,
        device.compute_capability,
    )
    quiet = G_LOGGER.INFO if options.verbosity >= 2 else G_LOGGER.CRITICAL + 1
    with G_LOGGER.verbosity(quiet):
        builder, network, parser, creation_flags = _load_network(
            trt, poly, poly_error, logger, onnx_path, dla_parser=core is not None
        )
        if core is not None:
            dla.check_host(trt, builder, core)
        _check_profiles(trt, builder, network, input_name, shapes)
        config = _create_config(
            trt, poly, poly_error, builder, network, options, input_name, shapes
        )
        dla_report = None
        if core is not None:
            dla.configure(trt, config, core, options.gpu_fallback)
            dla_report = dla.readiness(network, config, core, options.gpu_fallback)
        cache_record = _load_timing_cache(config, logger, options.timing_cache)

        if options.timing_cache is not None:
            _make_parent(Path(options.timing_cache))
        started = time.perf_counter()
        mark, warn_mark = logger.mark(), len(logger.warnings)
        # Polygraphy saves the timing cache under a lock file, merged (`combine`) with what is
        # on disk by then (backend/trt/loader.py, EngineBytesFromNetwork).
        build = poly.EngineBytesFromNetwork(
            (builder, network, parser),
            config=config,
            save_timing_cache=str(options.timing_cache) if options.timing_cache else None,
        )
        try:
            serialized = build()
        except MemoryError:
            serialized = None
            logger.errors.append("out of memory")
        except poly_error:
            serialized = None
        except OSError as exc:
            raise InputError(
                f"cannot write timing cache {options.timing_cache} ({exc.strerror}): choose a "
                "writable --timing-cache path"
            ) from None
    seconds = time.perf_counter() - started
    if serialized is None:
        # TensorRT reports a failed allocation as a warning and the failed build as an error.
        raise _build_failure(trt, logger.errors_since(mark), logger.warnings[warn_mark:], options)
    plan = bytes(memoryview(serialized))
    log.info("built in %.1f s (%.1f MB)", seconds, len(plan) / 1e6)

    # Check what TensorRT really chose before anything is written.
    runtime = trt.Runtime(logger)
    if core is not None:
        runtime.DLA_core = core  # a DLA engine deserializes only with its core set
    if options.version_compatible and not options.exclude_lean_runtime:
        runtime.engine_host_code_allowed = True
    engine = runtime.deserialize_cuda_engine(plan)
    if engine is None:
        raise RuntimeUnavailableError(
            f"TensorRT could not load the engine it just built ({summarize_errors(logger.errors)})"
        )
    inspector = engine.create_engine_inspector()
    layer_json = inspector.get_engine_information(trt.LayerInformationFormat.JSON)
    facts = onnx_conv_facts(onnx_path)
    if dla_report is not None:
        check = dla.precision_summary(layer_json, precision, facts, dla_report)
    else:
        check = check_precision(layer_json, precision, facts)

    if options.timing_cache is not None:
        cache_record["saved_size"] = Path(options.timing_cache).stat().st_size
    engine_path = bundle.root / P.engine_file(precision)
    with bundle.writing(engine_path.name):
        with atomic_path(engine_path) as tmp:
            tmp.write_bytes(plan)

        record = bundle.add_artifact(
            P.engine_key(precision),
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
                "path": bundle.artifacts[onnx_key].path,
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
                "tf32": options.tf32,
                "built_with": f"polygraphy {_polygraphy_version()}",
            },
            timing_cache=cache_record or None,
            precision_check=check,
            build_seconds=round(seconds, 2),
            built_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            host={"machine": platform.machine(), "python": platform.python_version()},
            **({"dla": dla_report} if dla_report is not None else {}),
        )
    return record


def _make_parent(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(
            f"cannot write timing cache {path} ({exc.strerror}): choose a writable "
            "--timing-cache path"
        ) from None


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


def _check_profiles(
    trt: Any,
    builder: Any,
    network: Any,
    input_name: str,
    shapes: list[dict[str, list[int]]],
) -> None:
    """Refuse, in one line each, what Polygraphy's Profile.to_trt would raise or log without
    naming the profile (backend/trt/profile.py): an input the network lacks, a wrong rank, a
    range TensorRT rejects."""
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


def _create_config(
    trt: Any,
    poly: Any,
    poly_error: type[Exception],
    builder: Any,
    network: Any,
    options: BuildOptions,
    input_name: str,
    shapes: list[dict[str, list[int]]],
) -> Any:
    """The builder config from Polygraphy's CreateConfig (backend/trt/config.py): TF32 cleared
    unless `options.tf32`, detailed profiling, our profiles, pool limit, optimization and
    compatibility levels. The timing cache is attached by `_load_timing_cache` (CreateConfig
    does not check that TensorRT accepted it)."""
    levels = {
        "ampere+": trt.HardwareCompatibilityLevel.AMPERE_PLUS,
        "same-cc": trt.HardwareCompatibilityLevel.SAME_COMPUTE_CAPABILITY,
    }
    profiles = [poly.Profile().add(input_name, s["min"], s["opt"], s["max"]) for s in shapes]
    create = poly.CreateConfig(
        tf32=options.tf32,
        profiles=profiles,
        memory_pool_limits=(
            {trt.MemoryPoolType.WORKSPACE: options.workspace} if options.workspace else None
        ),
        builder_optimization_level=options.opt_level,
        hardware_compatibility_level=levels.get(options.hardware_compat),
        version_compatible=options.version_compatible or None,
        exclude_lean_runtime=options.exclude_lean_runtime or None,
        profiling_verbosity=trt.ProfilingVerbosity.DETAILED,
    )
    try:
        return create(builder, network)
    except poly_error as exc:
        raise InputError(f"TensorRT rejected the builder configuration: {exc}") from None


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
