"""What is in a bundle, an ONNX file or an engine file, and can this host run it.

`inspect_path` dispatches on what it is given:

- a bundle folder: every artifact with its size and sha256 checked against the manifest
  (missing, tampered or resized files are problems), precision and shapes, and for TensorRT
  engines whether this host can run them (TensorRT importable, same version or a
  version-compatible engine, same GPU compute capability or a hardware-compatible engine);
- a bare `.onnx`: inputs, outputs, opset, metadata (`vggdeploy.*` keys), op histogram,
  Q/DQ node count and initializer dtypes;
- a bare `.engine`/`.plan`: size, sha256, and what TensorRT reports about it when TensorRT
  and a GPU are here (engine files are opaque to everything else).

Everything here is read-only. Heavy libraries (onnx, tensorrt) are imported only when a file
of that kind is inspected.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections import Counter
from pathlib import Path, PurePosixPath
from typing import Any

from vggdeploy.bundle import MANIFEST_NAME, Bundle, sha256_file
from vggdeploy.errors import InputError

ONNX_SUFFIXES = (".onnx",)
ENGINE_SUFFIXES = (".engine", ".plan", ".trt")
QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")

#: Every `tensorrt` name `read_engine_header` touches; tests/test_inspect.py checks each against
#: the TensorRT 10.16 and 11.4 Python bindings (tests/data/trt-api).
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

# Hardware compatibility levels as TensorRT names them (trt.HardwareCompatibilityLevel).
HW_NONE = "NONE"
HW_AMPERE_PLUS = "AMPERE_PLUS"
HW_SAME_CC = "SAME_COMPUTE_CAPABILITY"


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


def inspect_bundle(root: str | os.PathLike[str]) -> dict[str, Any]:
    """Every artifact of the bundle at `root`, checked; `ok` is False if any file is bad."""
    bundle = Bundle.load(root)
    manifest = bundle.manifest
    host: dict[str, Any] | None = None
    artifacts = []
    problems: list[str] = []
    for key in sorted(bundle.artifacts):
        record = bundle.artifacts[key]
        entry = check_artifact(bundle, key, record)
        if entry["status"] != "ok":
            problems.append(f"{key}: {entry['detail']}")
        if is_engine(record):
            if host is None:
                host = probe_host()
            entry["host"] = check_engine_host(record, host)
        artifacts.append(entry)
    labels = manifest.get("labels")
    if labels and not (bundle.root / labels).is_file():
        problems.append(f"labels: {labels} is listed in the manifest but missing")
    # SHA256SUMS comes with an unpacked archive (`vggdeploy pack`); it is checked on unpack.
    tracked = {bundle.artifacts[k].get("path") for k in bundle.artifacts} | {
        MANIFEST_NAME,
        labels,
        "SHA256SUMS",
    }
    untracked = sorted(
        p.relative_to(bundle.root).as_posix()
        for p in bundle.root.rglob("*")
        if p.is_file() and p.relative_to(bundle.root).as_posix() not in tracked
    )
    model = manifest.get("model", {})
    return {
        "kind": "bundle",
        "path": str(bundle.root),
        "model": {
            k: model.get(k)
            for k in ("name", "config", "batch_norm", "dense", "image_size", "num_classes")
        },
        "weights": {k: v for k, v in manifest.get("weights", {}).items() if k != "path"},
        "io": manifest.get("io", {}),
        "parity_passed": manifest.get("parity", {}).get("passed"),
        "artifacts": artifacts,
        "untracked_files": untracked,
        "host": host,
        "problems": problems,
        "ok": not problems,
    }


def check_artifact(bundle: Bundle, key: str, record: dict[str, Any]) -> dict[str, Any]:
    """Size and sha256 of one artifact against its manifest record."""
    rel = str(record.get("path", ""))
    entry: dict[str, Any] = {
        "key": key,
        "path": rel,
        "kind": record.get("kind", key.split(".")[0]),
        "precision": record.get("precision"),
        "size": None,
        "recorded_size": record.get("size"),
        "sha256": record.get("sha256"),
        "inputs": record.get("inputs") or bundle.manifest.get("io", {}).get("inputs", []),
        "outputs": record.get("outputs") or bundle.manifest.get("io", {}).get("outputs", []),
        "profiles": record.get("profiles"),
    }
    if not rel or not _is_inside(rel):
        # A manifest that points outside its bundle is tampered with or hand-edited.
        return {**entry, "status": "bad path", "detail": f"path {rel!r} is not inside the bundle"}
    path = bundle.root / rel
    if not path.is_file():
        return {**entry, "status": "missing", "detail": f"{rel} is listed but missing"}
    entry["size"] = path.stat().st_size
    if record.get("size") is not None and entry["size"] != record["size"]:
        return {
            **entry,
            "status": "tampered",
            "detail": f"{rel} is {entry['size']} bytes, the manifest says {record['size']}",
        }
    actual = sha256_file(path)
    if actual != record.get("sha256"):
        return {
            **entry,
            "status": "tampered",
            "actual_sha256": actual,
            "detail": f"{rel} has sha256 {actual[:12]}..., the manifest says "
            f"{str(record.get('sha256'))[:12]}... (modified or corrupt: re-create it)",
        }
    return {**entry, "status": "ok", "detail": "sha256 matches"}


def _is_inside(rel: str) -> bool:
    p = PurePosixPath(rel.replace("\\", "/"))
    return not p.is_absolute() and ".." not in p.parts and not (len(rel) > 1 and rel[1] == ":")


def is_engine(record: dict[str, Any]) -> bool:
    """Whether a manifest record is a TensorRT engine (`vggdeploy build` writes `tensorrt-engine`)."""
    return record.get("kind") in ("tensorrt-engine", "engine") or str(
        record.get("path", "")
    ).endswith(ENGINE_SUFFIXES)


# -- can this host run an engine --------------------------------------------------------------


def probe_host() -> dict[str, Any]:
    """TensorRT version and GPU compute capabilities of this host (cheap; no torch import)."""
    host: dict[str, Any] = {"tensorrt": None, "tensorrt_error": None, "gpus": [], "gpu_error": None}
    try:
        import tensorrt as trt

        host["tensorrt"] = str(trt.__version__)
    except Exception as exc:  # ImportError, or a broken install raising anything
        host["tensorrt_error"] = f"TensorRT is not importable ({type(exc).__name__}: {exc})"
    host["gpus"], host["gpu_error"] = _gpu_capabilities()
    return host


def _gpu_capabilities() -> tuple[list[dict[str, str]], str | None]:
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run(
                [smi, "--query-gpu=name,compute_cap", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=20,
                check=True,
            ).stdout
            gpus = []
            for line in out.splitlines():
                if "," in line:
                    name, cc = (s.strip() for s in line.rsplit(",", 1))
                    gpus.append({"name": name, "compute_capability": cc})
            if gpus:
                return gpus, None
        except (OSError, subprocess.SubprocessError) as exc:
            return [], f"nvidia-smi failed ({exc})"
    # Jetson boards have no nvidia-smi; a CUDA build of PyTorch knows the capability.
    try:
        import torch

        if torch.cuda.is_available():
            return [
                {
                    "name": torch.cuda.get_device_name(i),
                    "compute_capability": "{}.{}".format(*torch.cuda.get_device_capability(i)),
                }
                for i in range(torch.cuda.device_count())
            ], None
    except Exception:
        pass
    return [], "no NVIDIA GPU found (no nvidia-smi, and no CUDA build of PyTorch)"


_HW_NAMES = {
    "none": HW_NONE,
    "ampere+": HW_AMPERE_PLUS,
    "ampere_plus": HW_AMPERE_PLUS,
    "same-cc": HW_SAME_CC,
    "same_compute_capability": HW_SAME_CC,
}


def engine_facts(record: dict[str, Any]) -> dict[str, Any]:
    """The build facts of an engine's manifest record (as `vggdeploy build` writes them)."""
    gpu = record.get("gpu") if isinstance(record.get("gpu"), dict) else {}
    flags = record.get("flags") if isinstance(record.get("flags"), dict) else {}
    version = record.get("tensorrt_version")
    cc = gpu.get("compute_capability") or record.get("compute_capability")
    hw = flags.get("hardware_compat") or record.get("hardware_compatibility") or "none"
    hw = str(hw).split(".")[-1]
    return {
        "tensorrt_version": str(version) if version else None,
        "compute_capability": str(cc) if cc else None,
        "gpu": gpu.get("name"),
        "jetson": bool(gpu.get("jetson", False)),
        "hardware_compatibility": _HW_NAMES.get(hw.lower(), hw.upper()),
        "version_compatible": bool(
            flags.get("version_compatible", record.get("version_compatible"))
        ),
        "exclude_lean_runtime": bool(flags.get("exclude_lean_runtime", False)),
    }


def check_engine_host(record: dict[str, Any], host: dict[str, Any]) -> dict[str, Any]:
    """Whether `host` (from `probe_host`) can deserialize the engine in `record`, and why not.

    The rules are the TensorRT runtime's own (`version_incompatibility`, `gpu_incompatibility`),
    so `inspect` and `TrtRuntime` never disagree; the engine is runnable when some GPU of the
    host can run it.
    """
    from vggdeploy.runtimes.trt import gpu_incompatibility, version_incompatibility

    facts = engine_facts(record)
    reasons: list[str] = []
    if host.get("tensorrt") is None:
        reasons.append(host.get("tensorrt_error") or "TensorRT is not installed")
    elif why := version_incompatibility(record, host["tensorrt"]):
        reasons.append(f"{why}: rebuild with `vggdeploy build` here")
    gpus = host.get("gpus") or []
    if not gpus:
        reasons.append(host.get("gpu_error") or "no NVIDIA GPU found")
    else:
        why_not = [
            gpu_incompatibility(
                record, g["compute_capability"], f"this host's GPU is {g['name']}", jetson=False
            )
            for g in gpus
        ]
        if all(why_not):
            reasons.append(f"{why_not[0]}: rebuild with `vggdeploy build` on this GPU")
    return {"runnable": not reasons, "reasons": reasons, **facts}


# -- bare ONNX files --------------------------------------------------------------------------


def inspect_onnx(path: str | os.PathLike[str]) -> dict[str, Any]:
    """What an ONNX file declares: io, opset, metadata, op histogram, Q/DQ count, dtypes."""
    try:
        import onnx
    except ImportError:
        raise InputError("reading ONNX files needs the onnx package: pip install onnx") from None
    path = Path(path)
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise InputError(f"{path} is not a readable ONNX model ({exc})") from None
    graph = model.graph
    init_names = {t.name for t in graph.initializer}

    def describe(value: Any) -> dict[str, Any]:
        tt = value.type.tensor_type
        dims = [
            d.dim_param or (d.dim_value if d.HasField("dim_value") else "?") for d in tt.shape.dim
        ]
        try:
            dtype = onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type).name
        except Exception:
            dtype = onnx.TensorProto.DataType.Name(tt.elem_type).lower()
        return {"name": value.name, "shape": dims, "dtype": dtype}

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
        "inputs": [describe(v) for v in graph.input if v.name not in init_names],
        "outputs": [describe(v) for v in graph.output],
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
    record = _record_from_bundle(path)
    host = probe_host()
    info["host"] = host
    if record is not None:
        info["manifest_record"] = {
            "key": record[0],
            "sha256_matches": record[1].get("sha256") == info["sha256"],
            **engine_facts(record[1]),
        }
        info["host_check"] = check_engine_host(record[1], host)
    if host["tensorrt"] is None:
        info["tensorrt"] = {
            "read": False,
            "why": (host["tensorrt_error"] or "TensorRT is not installed")
            + ": engine files are opaque without TensorRT, only size and sha256 are shown",
        }
    elif not host["gpus"]:
        info["tensorrt"] = {
            "read": False,
            "why": f"TensorRT {host['tensorrt']} is here but {host['gpu_error']}: "
            "deserializing an engine needs a GPU",
        }
    else:
        info["tensorrt"] = read_engine_header(path)
    return info


def _record_from_bundle(path: Path) -> tuple[str, dict[str, Any]] | None:
    manifest = path.parent / MANIFEST_NAME
    if not manifest.is_file():
        return None
    try:
        artifacts = json.loads(manifest.read_text("utf-8")).get("artifacts", {})
    except (OSError, ValueError):
        return None
    for key, record in artifacts.items():
        if record.get("path") == path.name:
            return key, record
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


# -- text output ------------------------------------------------------------------------------


def _human(n: int | None) -> str:
    if n is None:
        return "-"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return str(n)


def _shape(spec: dict[str, Any]) -> str:
    return f"{spec['name']} [{', '.join(str(d) for d in spec['shape'])}] {spec.get('dtype', '')}"


def format_report(info: dict[str, Any]) -> str:
    """Human-readable text for `vggdeploy inspect`."""
    from vggdeploy.cli import format_table

    lines: list[str] = []
    if info["kind"] == "bundle":
        m = info["model"]
        lines.append(
            f"bundle {info['path']}: {m.get('name')} (config {m.get('config')}"
            f"{', batch norm' if m.get('batch_norm') else ''}{', dense' if m.get('dense') else ''}),"
            f" {m.get('image_size')}px, {m.get('num_classes')} classes; weights "
            f"{info['weights'].get('source')}; export parity "
            f"{'passed' if info['parity_passed'] else 'FAILED' if info['parity_passed'] is False else 'not recorded'}"
        )
        for spec in info["io"].get("inputs", []):
            lines.append(f"  input  {_shape(spec)}")
        for spec in info["io"].get("outputs", []):
            lines.append(f"  output {_shape(spec)}")
        rows = [
            [
                a["key"],
                a["path"],
                a["precision"] or "-",
                _human(a["size"] if a["size"] is not None else a["recorded_size"]),
                a["status"],
                _host_cell(a),
            ]
            for a in info["artifacts"]
        ]
        lines += [
            "",
            format_table(
                ["artifact", "file", "precision", "size", "sha256", "this host"], rows, "lllrll"
            ),
        ]
        for a in info["artifacts"]:
            for i, profile in enumerate(a.get("profiles") or []):
                for name, shapes in profile.items():
                    if isinstance(shapes, dict):
                        lines.append(
                            f"  {a['key']} profile {i}: {name} min {shapes.get('min')} "
                            f"opt {shapes.get('opt')} max {shapes.get('max')}"
                        )
            if a.get("host"):
                h = a["host"]
                lines.append(
                    f"  {a['key']}: built with TensorRT {h['tensorrt_version'] or '?'} on "
                    f"{h['gpu'] or '?'} (compute capability {h['compute_capability'] or '?'}), "
                    f"hardware compatibility {h['hardware_compatibility']}, version compatible "
                    f"{'yes' if h['version_compatible'] else 'no'}"
                )
            if a.get("host") and not a["host"]["runnable"]:
                lines.append(f"  {a['key']} cannot run here:")
                lines += [f"    - {r}" for r in a["host"]["reasons"]]
        if info["untracked_files"]:
            lines.append(
                f"\nother files (not artifacts, not checked): {', '.join(info['untracked_files'])}"
            )
        if info["problems"]:
            lines.append(f"\n{len(info['problems'])} problem(s):")
            lines += [f"  [x] {p}" for p in info["problems"]]
        else:
            lines.append("\nall artifacts match their sha256 in the manifest")
        return "\n".join(lines)
    if info["kind"] == "onnx":
        lines.append(
            f"ONNX {info['path']}: {_human(info['size'])}, sha256 {info['sha256'][:16]}..., "
            f"opset {info['opset']}, IR {info['ir_version']}, producer {info['producer'] or '-'}"
        )
        for spec in info["inputs"]:
            lines.append(f"  input  {_shape(spec)}")
        for spec in info["outputs"]:
            lines.append(f"  output {_shape(spec)}")
        if info["metadata"]:
            lines.append("metadata:")
            for key, value in info["metadata"].items():
                lines.append(f"  {key} = {value if len(value) < 120 else value[:117] + '...'}")
        ops = ", ".join(f"{op} {n}" for op, n in info["op_histogram"].items())
        lines.append(f"{info['nodes']} nodes: {ops}")
        lines.append(f"Q/DQ nodes: {info['qdq_nodes']}")
        dts = ", ".join(
            f"{d} ({v['count']} tensors, {v['elements']:,} values)"
            for d, v in info["initializer_dtypes"].items()
        )
        lines.append(f"initializers: {dts or 'none'}")
        return "\n".join(lines)
    lines.append(f"engine {info['path']}: {_human(info['size'])}, sha256 {info['sha256']}")
    rec = info.get("manifest_record")
    if rec:
        lines.append(
            f"  listed in its bundle as {rec['key']} (sha256 "
            f"{'matches' if rec['sha256_matches'] else 'DOES NOT match'}): TensorRT "
            f"{rec['tensorrt_version'] or '?'}, compute capability {rec['compute_capability'] or '?'}, "
            f"hardware compatibility {rec['hardware_compatibility']}, version compatible "
            f"{'yes' if rec['version_compatible'] else 'no'}"
        )
        check = info.get("host_check", {})
        if check and not check["runnable"]:
            lines += [f"  cannot run here: {r}" for r in check["reasons"]]
    trt_info = info["tensorrt"]
    if not trt_info["read"]:
        lines.append(f"  {trt_info['why']}")
    else:
        lines.append(
            f"  TensorRT {trt_info['tensorrt_version']}: {trt_info['optimization_profiles']} "
            f"profile(s), device memory {_human(trt_info['device_memory_bytes'])}"
        )
        for t in trt_info["tensors"]:
            prof = f" profiles {t['profiles']}" if t.get("profiles") else ""
            lines.append(f"  {t['mode'].lower():6} {t['name']} {t['shape']} {t['dtype']}{prof}")
    return "\n".join(lines)


def _host_cell(entry: dict[str, Any]) -> str:
    host = entry.get("host")
    if not host:
        return "-"
    return "yes" if host["runnable"] else "no (see below)"
