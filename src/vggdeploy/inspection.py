"""What is in a bundle, an ONNX file or an engine file, and can this host run it (data only).

`inspect_path` dispatches on what it is given:

- a bundle folder: every artifact with its size and sha256 checked against the manifest
  (missing, tampered or resized files, and paths leading out of the bundle, are problems),
  precision and shapes, and for TensorRT engines whether this host can run them
  (`vggdeploy.host.check_engine`, the one home of that rule);
- a bare `.onnx`: inputs, outputs, opset, metadata (`vggdeploy.*` keys), op histogram,
  Q/DQ node count and initializer dtypes;
- a bare `.engine`/`.plan`: size, sha256, and what TensorRT reports about it when TensorRT
  and a GPU are here (engine files are opaque to everything else).

Everything here is read-only and returns JSON-ready dicts; `vggdeploy.report.inspection` draws
them. Heavy libraries (onnx, tensorrt) are imported only when a file of that kind is inspected.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

from vggdeploy import host as H
from vggdeploy import precision as P
from vggdeploy.bundle import CACHE_NAME, LOCK_NAME, MANIFEST_NAME, Bundle, sha256_file
from vggdeploy.errors import BundleError, InputError
from vggdeploy.onnxutil import graph_io
from vggdeploy.records import ArtifactRecord, EngineRecord

ONNX_SUFFIXES = (".onnx",)
ENGINE_SUFFIXES = (".engine", ".plan", ".trt")
QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
#: the checksum list `vggdeploy pack` puts in an archive and `unpack` checks (one home: here,
#: below packaging in the layers; inspect knows it so it is not listed as an untracked file)
SUMS_NAME = "SHA256SUMS"

#: Every `tensorrt` name `read_engine_header` touches; tests/inspect/test_inspect_bundle.py
#: checks each against the TensorRT 10.16 and 11.4 Python bindings (tests/data/trt-api).
TENSORRT_API = (
    "__version__",
    "Logger",
    "ERROR",
    "Runtime",
    "deserialize_cuda_engine",
    "num_io_tensors",
    "get_tensor_name",
    "get_tensor_mode",
    "get_tensor_shape",
    "get_tensor_dtype",
    "TensorIOMode",
    "INPUT",
    "get_tensor_profile_shape",
    "num_optimization_profiles",
    "device_memory_size_v2",
    "hardware_compatibility_level",
)


def inspect_path(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Inspect a bundle folder, an `.onnx` file or an engine file; see the module docstring."""
    path = Path(path)
    if path.is_dir():
        return inspect_bundle(path)
    if not path.exists():
        raise InputError(
            f"{path} does not exist: give a bundle folder, an .onnx or an .engine file"
        )
    suffix = path.suffix.lower()
    if path.name == MANIFEST_NAME:
        return inspect_bundle(path.parent)
    if suffix in ONNX_SUFFIXES:
        return inspect_onnx(path)
    if suffix in ENGINE_SUFFIXES:
        return inspect_engine_file(path)
    raise InputError(
        f"{path} is neither a bundle folder, an .onnx file nor an engine "
        f"({', '.join(ENGINE_SUFFIXES)}): give one of those"
    )


# -- bundles ----------------------------------------------------------------------------------


def engine_view(record: EngineRecord) -> dict[str, Any]:
    """The build facts of an engine record, as the report shows them."""
    return {
        "tensorrt_version": record.tensorrt_version,
        "compute_capability": record.compute_capability,
        "gpu": record.gpu.name,
        "jetson": record.gpu.jetson,
        "hardware_compat": record.hardware_compat,
        "version_compatible": record.flags.version_compatible,
        "exclude_lean_runtime": record.flags.exclude_lean_runtime,
        "dla": _dla_view(getattr(record, "dla", None)),
    }


def _dla_view(dla: Any) -> dict[str, Any] | None:
    """The DLA choice of a `build --dla-core` engine (None: GPU only)."""
    if not isinstance(dla, dict):
        return None
    keys = ("core", "gpu_fallback", "layers_on_dla", "layers", "layers_on_gpu", "subgraphs")
    return {k: dla.get(k) for k in keys}


def inspect_bundle(root: str | os.PathLike[str]) -> dict[str, Any]:
    """Every artifact of the bundle at `root`, checked; `ok` is False if any file is bad."""
    bundle = Bundle.load(root)
    manifest = bundle.manifest
    probe: H.HostProbe | None = None
    artifacts = []
    problems: list[str] = []
    for key in sorted(bundle.artifacts, key=P.artifact_order):
        record = bundle.artifacts[key]
        entry = check_artifact(bundle, key, record)
        if entry["status"] != "ok":
            problems.append(f"{key}: {entry['detail']}")
        if isinstance(record, EngineRecord):
            probe = probe or H.probe()
            entry["host"] = {**H.check_engine(record, probe).to_dict(), **engine_view(record)}
        artifacts.append(entry)
    labels = manifest.labels
    # every other file the bundle ships: inside it, its size and sha256 as recorded, and the
    # labels one UTF-8 name per class (`Bundle.shipped_file`, `Bundle.labels`)
    for rel in sorted(manifest.files):
        try:
            bundle.shipped_file(rel, f"files.{rel}")
        except BundleError as exc:
            problems.append(f"{rel}: {exc}")
    if labels:
        try:
            bundle.labels()
        except BundleError as exc:
            if f"{labels}: " + str(exc) not in problems:
                problems.append(f"labels: {exc}")
    # SHA256SUMS comes with an unpacked archive (`vggdeploy pack`); it is checked on unpack.
    tracked = {r.path for r in bundle.artifacts.values()} | {
        MANIFEST_NAME,
        LOCK_NAME,
        SUMS_NAME,
        labels,
        *manifest.files,
    }
    untracked = sorted(
        p.relative_to(bundle.root).as_posix()
        for p in bundle.root.rglob("*")
        if p.is_file()
        and p.relative_to(bundle.root).as_posix() not in tracked
        and p.relative_to(bundle.root).parts[0] != CACHE_NAME  # compiled-model caches
    )
    model = manifest.model
    return {
        "kind": "bundle",
        "path": str(bundle.root),
        "model": {
            "name": model.name,
            "config": model.config,
            "batch_norm": model.batch_norm,
            "dense": model.dense,
            "image_size": model.image_size,
            "num_classes": model.num_classes,
        },
        "weights": {k: v for k, v in manifest.weights.to_json_dict().items() if k != "path"},
        "io": manifest.io.to_json_dict(),
        "parity_passed": manifest.parity.get("passed"),
        "artifacts": artifacts,
        "untracked_files": untracked,
        "host": probe.to_dict() if probe is not None else None,
        "problems": problems,
        "ok": not problems,
    }


def check_artifact(bundle: Bundle, key: str, record: ArtifactRecord) -> dict[str, Any]:
    """Size and sha256 of one artifact against its manifest record."""
    rel = record.path
    io_ = bundle.manifest.io
    entry: dict[str, Any] = {
        "key": key,
        "path": rel,
        "kind": record.kind,
        "precision": P.split_key(key)[1] or record.precision,
        "size": None,
        "recorded_size": record.size,
        "sha256": record.sha256,
        "inputs": [t.to_json_dict() for t in io_.inputs],
        "outputs": [t.to_json_dict() for t in io_.outputs],
        "profiles": record.profiles if isinstance(record, EngineRecord) else None,
    }
    try:
        path = bundle.resolve(rel, f"artifacts.{key}.path")
    except BundleError:
        # A path that leaves the bundle (a symbolic link out of it): tampered or hand-made.
        return {**entry, "status": "bad path", "detail": f"path {rel!r} is not inside the bundle"}
    if not path.is_file():
        return {**entry, "status": "missing", "detail": f"{rel} is listed but missing"}
    entry["size"] = path.stat().st_size
    if entry["size"] != record.size:
        return {
            **entry,
            "status": "tampered",
            "detail": f"{rel} is {entry['size']} bytes, the manifest says {record.size}",
        }
    actual = sha256_file(path)
    if actual != record.sha256:
        return {
            **entry,
            "status": "tampered",
            "actual_sha256": actual,
            "detail": f"{rel} has sha256 {actual[:12]}..., the manifest says "
            f"{record.sha256[:12]}... (modified or corrupt: re-create it)",
        }
    return {**entry, "status": "ok", "detail": "sha256 matches"}


# -- bare ONNX files --------------------------------------------------------------------------


def inspect_onnx(path: str | os.PathLike[str]) -> dict[str, Any]:
    """What an ONNX file declares: io, opset, metadata, op histogram, Q/DQ count, dtypes."""
    try:
        import onnx
    except ImportError:
        raise InputError(
            "reading ONNX files needs the onnx package: " + H.install_hint("onnx")
        ) from None
    path = Path(path)
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise InputError(f"{path} is not a readable ONNX model ({exc})") from None
    graph = model.graph
    io = graph_io(model)

    def described(value: tuple[str, str, list[int | str | None]]) -> dict[str, Any]:
        name, dtype, dims = value
        return {"name": name, "shape": ["?" if d is None else d for d in dims], "dtype": dtype}

    ops: Counter[str] = Counter()
    _count_ops(graph, ops)
    dtypes: dict[str, dict[str, int]] = {}
    for tensor in graph.initializer:
        name = onnx.TensorProto.DataType.Name(tensor.data_type).lower()
        slot = dtypes.setdefault(name, {"count": 0, "elements": 0})
        slot["count"] += 1
        n = 1
        for d in tensor.dims:
            n *= d
        slot["elements"] += n
    metadata = {p.key: p.value for p in model.metadata_props}
    vgg = {}
    for key, value in metadata.items():
        if key.startswith("vggdeploy."):
            try:
                vgg[key] = json.loads(value)
            except ValueError:
                vgg[key] = value
    opsets = {imp.domain or "ai.onnx": imp.version for imp in model.opset_import}
    return {
        "kind": "onnx",
        "path": str(path),
        "size": path.stat().st_size,
        "sha256": sha256_file(path),
        "ir_version": model.ir_version,
        "opset": opsets.get("ai.onnx"),
        "opset_imports": opsets,
        "producer": f"{model.producer_name} {model.producer_version}".strip(),
        "doc_string": model.doc_string,
        "inputs": [described(v) for v in io["inputs"]],
        "outputs": [described(v) for v in io["outputs"]],
        "metadata": metadata,
        "vggdeploy_metadata": vgg,
        "nodes": sum(ops.values()),
        "op_histogram": dict(ops.most_common()),
        "qdq_nodes": sum(ops[o] for o in QDQ_OPS),
        "initializer_dtypes": dtypes,
        "external_data": any(
            t.data_location == onnx.TensorProto.EXTERNAL for t in graph.initializer
        ),
    }


def _count_ops(graph: Any, ops: Counter[str]) -> None:
    for node in graph.node:
        ops[node.op_type if not node.domain else f"{node.domain}.{node.op_type}"] += 1
        for attr in node.attribute:
            if attr.g.node:
                _count_ops(attr.g, ops)
            for sub in attr.graphs:
                _count_ops(sub, ops)


# -- bare engine files ------------------------------------------------------------------------


def inspect_engine_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Size and sha256 of an engine; what TensorRT reads from it where TensorRT and a GPU are.

    If the engine sits in a bundle whose manifest lists it, the build facts recorded there
    (TensorRT version, compute capability, compatibility flags) are shown and checked too.
    """
    path = Path(path)
    info: dict[str, Any] = {
        "kind": "engine",
        "path": str(path),
        "size": path.stat().st_size,
        "sha256": sha256_file(path),
        "manifest_record": None,
        "tensorrt": None,
    }
    found = _record_from_bundle(path)
    probe = H.probe()
    info["host"] = probe.to_dict()
    if found is not None:
        key, record = found
        info["manifest_record"] = {
            "key": key,
            "sha256_matches": record.sha256 == info["sha256"],
            **engine_view(record),
        }
        info["host_check"] = H.check_engine(record, probe).to_dict()
    if probe.tensorrt is None:
        info["tensorrt"] = {
            "read": False,
            "why": (probe.tensorrt_error or "TensorRT is not installed")
            + ": engine files are opaque without TensorRT, only size and sha256 are shown",
        }
    elif not probe.gpus:
        info["tensorrt"] = {
            "read": False,
            "why": f"TensorRT {probe.tensorrt} is here but {probe.gpu_error}: "
            "deserializing an engine needs a GPU",
        }
    else:
        info["tensorrt"] = read_engine_header(path)
    return info


def _record_from_bundle(path: Path) -> tuple[str, EngineRecord] | None:
    """The engine record of the bundle `path` sits in that names this very file, if any."""
    if not (path.parent / MANIFEST_NAME).is_file():
        return None
    try:
        bundle = Bundle.load(path.parent)
    except BundleError:
        return None
    for key, record in bundle.manifest.engines().items():
        try:
            if bundle.resolve(record.path, f"artifacts.{key}.path").resolve() == path.resolve():
                return key, record
        except BundleError:
            continue
    return None


def read_engine_header(path: Path) -> dict[str, Any]:
    """Deserialize the engine with TensorRT and list its tensors, profiles and flags."""
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.ERROR)
    runtime = trt.Runtime(logger)
    engine = runtime.deserialize_cuda_engine(path.read_bytes())
    if engine is None:
        return {
            "read": False,
            "why": f"TensorRT {trt.__version__} could not deserialize it (built by another "
            "TensorRT version or for another GPU?)",
        }
    tensors = []
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        entry = {
            "name": name,
            "mode": str(engine.get_tensor_mode(name)).split(".")[-1],
            "shape": list(engine.get_tensor_shape(name)),
            "dtype": str(engine.get_tensor_dtype(name)).split(".")[-1],
        }
        if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
            entry["profiles"] = [
                [list(s) for s in engine.get_tensor_profile_shape(name, p)]
                for p in range(engine.num_optimization_profiles)
            ]
        tensors.append(entry)
    facts: dict[str, Any] = {
        "read": True,
        "tensorrt_version": trt.__version__,
        "tensors": tensors,
        "optimization_profiles": engine.num_optimization_profiles,
        "device_memory_bytes": int(getattr(engine, "device_memory_size_v2", 0) or 0),
    }
    level = getattr(engine, "hardware_compatibility_level", None)
    if level is not None:
        facts["hardware_compatibility"] = str(level).split(".")[-1]
    return facts
