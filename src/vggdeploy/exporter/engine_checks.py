"""Which precision an engine really runs in: the Conv precisions the ONNX asks for, and the
check of the engine inspector's layer report against them (no TensorRT import here).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vggdeploy import precision as P
from vggdeploy.errors import CheckFailedError

#: engine precision -> the artifact key and file name of the ONNX it is built from
ONNX_ARTIFACTS = {p: P.onnx_key(p) for p in P.ENGINE_NAMES}
ONNX_FILES = {p: P.onnx_file(p) for p in P.ENGINE_NAMES}
MISSING_ONNX_HINT = {
    "fp32": "re-export the bundle with `vggdeploy export`",
    "fp16": "create it with `vggdeploy convert {root} --precision fp16`",
    "int8": (
        "an INT8 engine needs a calibrated Q/DQ model (TensorRT 11 has no calibrators): "
        "create it with `vggdeploy calibrate {root} --images DIR`"
    ),
}


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


def tensor_format(entry: Any) -> str:
    """The inspector's type-and-format text of one layer input or output, in either form:
    TensorRT 10.x writes one "Format/Datatype" field, TensorRT 11 splits it into "Datatype"
    and "Format" (read as Polygraphy 0.53.6 reads both, Datatype first:
    polygraphy/tools/inspect/subtool/model/extractors/_trt.py)."""
    if not isinstance(entry, dict):
        return ""
    if "Format/Datatype" in entry:
        return str(entry["Format/Datatype"])
    return " ".join(str(entry[k]) for k in ("Datatype", "Format") if entry.get(k))


def is_opaque(layer: dict[str, Any]) -> bool:
    """A fused region whose convolutions the inspector does not list one by one: a Myelin or
    kgen layer (a "{ForeignNode[first...last]}" on a GPU build). Assumed from the layer names
    TensorRT prints, not from a recorded inspector file (none of NVIDIA's examples has one)."""
    kind = str(layer.get("LayerType", "")).lower()
    return kind in ("myelin", "kgen") or str(layer.get("Name", "")).startswith("{ForeignNode[")


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
    opaque = [layer for layer in layers if is_opaque(layer)]
    if not convs and not opaque:
        raise CheckFailedError(
            f"the engine inspector reported no convolution layers among {len(layers)} layers, "
            f"so the {precision} precision cannot be confirmed"
        )
    found: dict[str, list[str]] = {}
    for layer in convs:
        inputs = layer.get("Inputs") or [{}]
        kind = layer_precision(tensor_format(inputs[0]))
        found.setdefault(kind, []).append(str(layer.get("Name", "?")))
    counts = {k: len(v) for k, v in sorted(found.items())}
    summary = {"expected": precision, "convolutions": len(convs), "by_precision": counts}
    if opaque:
        summary["unattributed_layers"] = len(opaque)
        summary["note"] = f"cannot attribute {len(opaque)} layers (Myelin)"
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
    # Convolutions fused into a Myelin/kgen region are not listed: what is listed must still
    # run in a type the graph gives it (no more of each than the ONNX has), the rest is
    # reported as not attributable rather than refused.
    wrong = {
        k: v
        for k, v in found.items()
        if k != precision and (facts_by is None or len(v) > facts_by.get(k, 0))
    }
    if not ok and opaque and not wrong:
        ok = True
    summary["passed"] = ok
    if not ok:
        wrong = wrong or {k: v for k, v in found.items() if k != precision}
        examples = "; ".join(f"{k}: {', '.join(v[:3])}" for k, v in sorted(wrong.items()))
        raise CheckFailedError(
            f"precision check failed: the {precision} engine runs "
            f"{sum(len(v) for v in wrong.values())} of {len(convs)} convolutions in "
            f"{'/'.join(sorted(wrong))} ({examples}) although {ONNX_FILES[precision]} types "
            f"{need} as {precision}; TensorRT did not build what the graph says, so no engine "
            "was written"
        )
    return summary


def _counts_text(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "no Conv nodes"
