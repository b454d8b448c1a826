"""Text for `vggdeploy inspect`: draws what `vggdeploy.inspection` returns."""

from __future__ import annotations

from typing import Any

from vggdeploy.report.escape import report_lines
from vggdeploy.report.tables import mib, text_table


def _shape(spec: dict[str, Any]) -> str:
    return f"{spec['name']} [{', '.join(str(d) for d in spec['shape'])}] {spec.get('dtype', '')}"


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def format_report(info: dict[str, Any]) -> str:
    """Human-readable text for `vggdeploy inspect` (a bundle, an ONNX file or an engine)."""
    if info["kind"] == "bundle":
        return format_bundle(info)
    if info["kind"] == "onnx":
        return format_onnx(info)
    return format_engine(info)


def _parity(passed: bool | None) -> str:
    return "passed" if passed else "FAILED" if passed is False else "not recorded"


def format_bundle(info: dict[str, Any]) -> str:
    m = info["model"]
    lines = [
        f"bundle {info['path']}: {m.get('name')} (config {m.get('config')}"
        f"{', batch norm' if m.get('batch_norm') else ''}{', dense' if m.get('dense') else ''}),"
        f" {m.get('image_size')}px, {m.get('num_classes')} classes; weights "
        f"{info['weights'].get('source')}; export parity {_parity(info['parity_passed'])}"
    ]
    lines += [f"  input  {_shape(spec)}" for spec in info["io"].get("inputs", [])]
    lines += [f"  output {_shape(spec)}" for spec in info["io"].get("outputs", [])]
    rows = [
        [
            a["key"],
            a["path"],
            a["precision"] or "-",
            mib(a["size"] if a["size"] is not None else a["recorded_size"]),
            a["status"],
            _host_cell(a),
        ]
        for a in info["artifacts"]
    ]
    headers = ["artifact", "file", "precision", "size", "sha256", "this host"]
    lines += ["", text_table(headers, rows, "lllrll")]
    for a in info["artifacts"]:
        for i, profile in enumerate(a.get("profiles") or []):
            for name, shapes in profile.items():
                if isinstance(shapes, dict):
                    lines.append(
                        f"  {a['key']} profile {i}: {name} min {shapes.get('min')} "
                        f"opt {shapes.get('opt')} max {shapes.get('max')}"
                    )
        h = a.get("host")
        if h:
            lines.append(
                f"  {a['key']}: built with TensorRT {h['tensorrt_version'] or '?'} on "
                f"{h['gpu'] or '?'} (compute capability {h['compute_capability'] or '?'}), "
                f"hardware compatibility {h['hardware_compat']}, version compatible "
                f"{_yes(h['version_compatible'])}"
            )
            if h.get("dla"):
                lines.append(f"  {a['key']}: {_dla_text(h['dla'])}")
            if not h["runnable"]:
                lines.append(f"  {a['key']} cannot run here:")
                lines += [f"    - {r}" for r in h["reasons"]]
    if info["untracked_files"]:
        lines += [
            "",
            f"other files (not artifacts, not checked): {', '.join(info['untracked_files'])}",
        ]
    if info["problems"]:
        lines += ["", f"{len(info['problems'])} problem(s):"]
        lines += [f"  [x] {p}" for p in info["problems"]]
    else:
        lines += ["", "all artifacts match their sha256 in the manifest"]
    return report_lines(lines)


def format_onnx(info: dict[str, Any]) -> str:
    lines = [
        f"ONNX {info['path']}: {mib(info['size'])}, sha256 {info['sha256'][:16]}..., "
        f"opset {info['opset']}, IR {info['ir_version']}, producer {info['producer'] or '-'}"
    ]
    lines += [f"  input  {_shape(spec)}" for spec in info["inputs"]]
    lines += [f"  output {_shape(spec)}" for spec in info["outputs"]]
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
    return report_lines(lines)


def format_engine(info: dict[str, Any]) -> str:
    lines = [f"engine {info['path']}: {mib(info['size'])}, sha256 {info['sha256']}"]
    rec = info.get("manifest_record")
    if rec:
        lines.append(
            f"  listed in its bundle as {rec['key']} (sha256 "
            f"{'matches' if rec['sha256_matches'] else 'DOES NOT match'}): TensorRT "
            f"{rec['tensorrt_version'] or '?'}, compute capability "
            f"{rec['compute_capability'] or '?'}, hardware compatibility {rec['hardware_compat']}, "
            f"version compatible {_yes(rec['version_compatible'])}"
        )
        if rec.get("dla"):
            lines.append(f"  {_dla_text(rec['dla'])}")
        check = info.get("host_check") or {}
        if check and not check["runnable"]:
            lines += [f"  cannot run here: {r}" for r in check["reasons"]]
    trt_info = info["tensorrt"]
    if not trt_info["read"]:
        lines.append(f"  {trt_info['why']}")
    else:
        lines.append(
            f"  TensorRT {trt_info['tensorrt_version']}: {trt_info['optimization_profiles']} "
            f"profile(s), device memory {mib(trt_info['device_memory_bytes'])}"
        )
        for t in trt_info["tensors"]:
            prof = f" profiles {t['profiles']}" if t.get("profiles") else ""
            lines.append(f"  {t['mode'].lower():6} {t['name']} {t['shape']} {t['dtype']}{prof}")
    return report_lines(lines)


def _host_cell(entry: dict[str, Any]) -> str:
    host = entry.get("host")
    if not host:
        return "-"
    return "yes" if host["runnable"] else "no (see below)"


def _dla_text(dla: dict[str, Any]) -> str:
    gpu = [e["name"] for e in dla.get("layers_on_gpu") or []]
    return (
        f"DLA core {dla['core']}: {dla['layers_on_dla']} of {dla['layers']} layers on DLA in "
        f"{dla['subgraphs']} subgraph(s), GPU fallback {_yes(dla['gpu_fallback'])}"
        + (f" ({len(gpu)} on the GPU: {', '.join(gpu[:8])})" if gpu else "")
    )
