"""Write a calibrated model in ONNX Q/DQ form, and check it against TensorRT's Q/DQ rules.

One INT8 file, `model.int8.onnx` (artifact `onnx.int8`), in the placement NVIDIA ModelOpt's ONNX
PTQ writes for a VGG (recorded from ModelOpt 0.47 by `benchmarks/modelopt_reference.py` in
`tests/data/modelopt_vgg11_placement.json`, compared node by node in
`tests/calibration/test_modelopt_placement.py`):

- Q/DQ on the activation input of every weighted op (Conv, Gemm, MatMul): per tensor, int8,
  symmetric (zero point 0), the only activation form TensorRT's explicit quantization accepts.
  Weights are int8 initializers behind a per-channel DequantizeLinear (symmetric, zero point 0,
  range [-127, 127] or [-63, 63] with 7-bit weights, axis = output channels); biases stay fp32.
- A MaxPool whose output feeds a quantized op also gets a Q/DQ pair on its input, with the
  same scale as its output's (`placement.pool_inputs`), so the pool runs on int8 values.
- No Q/DQ on any Conv/Gemm output: the ReLU stays float in the file and TensorRT fuses
  Conv + ReLU + the next op's Q into one INT8 kernel (TensorRT's "Q/DQ layer-placement
  recommendations": quantize the inputs of weighted ops, do not simulate the fusions).
- Where we differ from ModelOpt on purpose: ModelOpt keeps every Gemm float at batch 1 (its
  GEMV rule, `graph_utils.find_nodes_from_matmul_to_exclude`); vggdeploy quantizes the FC
  layers (measured faster on ONNX Runtime's CPU; `--keep-float classifier.0,...` keeps them
  float), and the manifest records the choice per target. ModelOpt stores fp32 weights behind a
  QuantizeLinear; we store the int8 values (a quarter of the size; the same arithmetic).

ONNX Runtime runs this form slowly as it is (a float ReLU between DQ and Q, no Q after the
Conv, so no QLinearConv): vggdeploy's ONNX Runtime CPU runtime rewrites it on load into its
integer form, bit for bit the same outputs (`vggdeploy.onnxutil.cpu_int8_form`).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from vggdeploy import precision as P
from vggdeploy.calibration.calibrators import QUANTIZABLE_OPS, TensorRange
from vggdeploy.calibration.placement import (
    node_id,
    pool_inputs,
    quantizable_nodes,
    resolve_keep_float,
)
from vggdeploy.errors import InputError
from vggdeploy.onnxutil import opset_of

__all__ = [
    "KEEP_FLOAT_METADATA",
    "TARGETS",
    "get_target",
    "quantizable_nodes",
    "quantize_model",
    "resolve_keep_float",
    "verify_qdq",
]

MIN_OPSET = 13  # per-channel (axis) Q/DQ
WEIGHT_QMAX = 127  # TensorRT wants int8 weights in [-127, 127]
WEIGHT_BITS = (8, 7)  # 7: "reduce range" weights in [-63, 63] for CPUs without VNNI
KEEP_FLOAT_METADATA = "vggdeploy.keep_float"


@dataclass(frozen=True)
class QdqTarget:
    """Where a Q/DQ model is meant to run, the file it is written to and its artifact key."""

    name: str
    artifact_key: str
    filename: str
    activation_dtype: str  # "int8"
    description: str


TARGETS: dict[str, QdqTarget] = {
    "tensorrt": QdqTarget(
        "tensorrt",
        P.onnx_key("int8"),
        P.onnx_file("int8"),
        "int8",
        "int8 symmetric activations (zero point 0): TensorRT's explicit quantization; ONNX "
        "Runtime's CPU runtime rewrites it into integer kernels on load",
    ),
}


def get_target(name: str) -> QdqTarget:
    if name not in TARGETS:
        raise InputError(f"unknown Q/DQ target {name!r}: use one of {', '.join(TARGETS)}")
    return TARGETS[name]


# -- quantization parameters -------------------------------------------------------------------


def activation_qparams(rng: TensorRange, target: str) -> tuple[np.float32, int]:
    """(scale, zero point) for one activation range on `target`: symmetric int8."""
    get_target(target)
    amax = max(abs(rng.low), abs(rng.high))
    scale = amax / 127.0 if amax > 0 else 1.0
    return np.float32(scale), 0


def quantize_weight(weight: np.ndarray, axis: int, bits: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel symmetric int8: (int8 values in [-qmax, qmax], float32 scale per channel),
    qmax = 127 for 8-bit weights, 63 for 7-bit ("reduce range") weights."""
    qmax = weight_qmax(bits)
    w = np.asarray(weight, dtype=np.float32)
    reduce_axes = tuple(i for i in range(w.ndim) if i != axis)
    amax = np.max(np.abs(w), axis=reduce_axes) if reduce_axes else np.abs(w)
    scale = np.where(amax > 0, amax / qmax, 1.0).astype(np.float32)
    shape = [1] * w.ndim
    shape[axis] = -1
    q = np.clip(np.round(w / scale.reshape(shape)), -qmax, qmax).astype(np.int8)
    return q, scale


def weight_qmax(bits: int) -> int:
    if bits not in WEIGHT_BITS:
        raise InputError(f"weight bits {bits!r}: use one of {', '.join(map(str, WEIGHT_BITS))}")
    return (1 << (bits - 1)) - 1


def weight_axis(node: Any, weight_rank: int) -> int:
    """The output-channel axis of a weighted op's weight (input 1)."""
    if node.op_type == "Conv":
        return 0
    if node.op_type == "Gemm":
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
        return 0 if trans_b else 1
    if node.op_type == "MatMul":
        return weight_rank - 1
    raise ValueError(f"no weight axis for {node.op_type}")


# -- writing --------------------------------------------------------------------------------


def quantize_model(
    model: Any,
    ranges: Mapping[str, TensorRange],
    target: str,
    metadata: Mapping[str, str] | None = None,
    *,
    in_place: bool = False,
    keep_float: Collection[str] = (),
    weight_bits: int = 8,
) -> tuple[Any, dict[str, Any]]:
    """A Q/DQ copy of the fp32 `model`; returns it and a summary of what was quantized.

    Every Conv/Gemm/MatMul whose activation input has a range and whose weight is an
    initializer gets a Q/DQ pair on the activation and an int8 per-channel weight. With
    `in_place`, `model` itself is changed and returned.

    `keep_float` names Conv/Gemm/MatMul nodes to leave in float (ONNX node names, or the
    model's own layer names such as `features.10`, see `quantizable_nodes`): no Q/DQ on their
    inputs and float weights, so a strongly typed TensorRT build runs them in float too. An
    unknown name is an `InputError`. The summary lists them (node names) under `kept_float`.

    `weight_bits=7` stores weights in [-63, 63] (the "reduce range" remedy for CPUs without
    VNNI, see `calibration.cpu_kernels`). A MaxPool feeding a quantized op gets a Q/DQ pair
    on its input with that op's input scale (listed under `pool_inputs`); no op output gets
    one (the placement described in the module docstring).
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    get_target(target)
    if opset_of(model) < MIN_OPSET:
        raise InputError(
            f"the model uses opset {opset_of(model)}; per-channel Q/DQ needs opset {MIN_OPSET} or "
            "later: re-export with `vggdeploy export --opset 18`"
        )
    if in_place:
        out = model  # the caller hands over its copy: no second 550 MB model in memory
    else:
        out = onnx.ModelProto()
        out.CopyFrom(model)
    graph = out.graph
    inits = {init.name: init for init in graph.initializer}
    act_np = np.int8

    new_inits: list[Any] = []
    quantized_acts: dict[str, str] = {}  # tensor -> its dequantized name
    quantized_weights: dict[str, str] = {}
    nodes: list[Any] = []
    summary: dict[str, Any] = {"activations": {}, "weights": {}}

    def add_activation(name: str, rng: TensorRange | None = None) -> str:
        if name in quantized_acts:
            return quantized_acts[name]
        rng = ranges[name] if rng is None else rng
        scale, zero_point = activation_qparams(rng, target)
        base = _safe(name)
        new_inits.append(numpy_helper.from_array(np.array(scale, np.float32), f"{base}_scale"))
        new_inits.append(
            numpy_helper.from_array(np.array(zero_point, act_np), f"{base}_zero_point")
        )
        inputs = [name, f"{base}_scale", f"{base}_zero_point"]
        nodes.append(helper.make_node("QuantizeLinear", inputs, [f"{base}_quantized"], f"{base}_Q"))
        nodes.append(
            helper.make_node(
                "DequantizeLinear",
                [f"{base}_quantized", *inputs[1:]],
                [f"{base}_dequantized"],
                f"{base}_DQ",
            )
        )
        quantized_acts[name] = f"{base}_dequantized"
        summary["activations"][name] = {
            "scale": float(scale),
            "zero_point": zero_point,
            "low": rng.low,
            "high": rng.high,
        }
        return quantized_acts[name]

    def add_weight(name: str, node: Any) -> str:
        if name in quantized_weights:
            return quantized_weights[name]
        weight = numpy_helper.to_array(inits[name])
        axis = weight_axis(node, weight.ndim)
        q, scale = quantize_weight(weight, axis, weight_bits)
        base = _safe(name)
        new_inits.append(numpy_helper.from_array(q, f"{base}_quantized"))
        new_inits.append(numpy_helper.from_array(scale, f"{base}_scale"))
        new_inits.append(
            numpy_helper.from_array(np.zeros(scale.shape, np.int8), f"{base}_zero_point")
        )
        nodes.append(
            helper.make_node(
                "DequantizeLinear",
                [f"{base}_quantized", f"{base}_scale", f"{base}_zero_point"],
                [f"{base}_dequantized"],
                f"{base}_DQ",
                axis=axis,
            )
        )
        quantized_weights[name] = f"{base}_dequantized"
        summary["weights"][name] = {"axis": axis, "channels": int(scale.size)}
        return quantized_weights[name]

    float_nodes = resolve_keep_float(out, keep_float)
    summary["kept_float"] = sorted(float_nodes)
    fc_layers = {
        layer: "float" if node in float_nodes else "int8"
        for node, op, layer in quantizable_nodes(out)
        if op in ("Gemm", "MatMul")
    }

    def quantizable(index: int, node: Any) -> bool:
        return (
            node_id(node, index) not in float_nodes
            and node.op_type in QUANTIZABLE_OPS
            and len(node.input) >= 2
            and node.input[0] in ranges
            and node.input[1] in inits
            and inits[node.input[1]].data_type == TensorProto.FLOAT
        )

    # Positions, not id(): protobuf may hand out a new Python wrapper on each access.
    chosen = {index for index, node in enumerate(graph.node) if quantizable(index, node)}
    pools = pool_inputs(graph, chosen)  # a MaxPool's input -> the tensor whose scale it shares
    summary["pool_inputs"] = {}
    for index, node in enumerate(graph.node):
        if index in chosen:
            node.input[0] = add_activation(node.input[0])
            node.input[1] = add_weight(node.input[1], node)
        elif node.op_type == "MaxPool" and node.input[0] in pools:
            pool_input, shared = node.input[0], pools[node.input[0]]
            node.input[0] = add_activation(pool_input, ranges[shared])
            summary["pool_inputs"][pool_input] = shared
        nodes.append(node)

    # Float weights that nothing reads any more are dropped (the int8 copies replace them).
    used = {name for node in nodes for name in node.input}
    kept = [init for init in graph.initializer if init.name in used]
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.initializer[:]
    graph.initializer.extend(kept + new_inits)
    metadata = dict(metadata or {})
    if float_nodes:
        metadata[KEEP_FLOAT_METADATA] = ",".join(sorted(float_nodes))
    for key, value in metadata.items():
        entry = next((p for p in out.metadata_props if p.key == key), None)
        if entry is None:
            out.metadata_props.add(key=key, value=value)
        else:
            entry.value = value
    summary["quantized_ops"] = len(summary["weights"])
    summary["fc_layers"] = fc_layers
    summary["weight_bits"] = weight_bits
    return out, summary


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in name)


# -- checking ---------------------------------------------------------------------------------


def verify_qdq(model: Any, target: str, *, keep_float: Collection[str] = ()) -> list[str]:
    """Every way `model` breaks `target`'s Q/DQ rules, as one readable line each (empty: OK).

    Opset >= 13; scales are constant, float32, finite and positive; zero points present,
    constant, int8 and 0; weights are int8 initializers in [-127, 127] behind a per-channel
    DequantizeLinear on the output-channel axis; activations per-tensor; every Q feeds only DQs
    with the same scale; every Conv/Gemm/MatMul reads dequantized inputs. Ops named in
    `keep_float` or in the model's `vggdeploy.keep_float` metadata (ONNX node names) must be
    entirely float instead.
    """
    from onnx import TensorProto, numpy_helper

    get_target(target)
    problems: list[str] = []
    opset = opset_of(model)
    if opset < MIN_OPSET:
        problems.append(f"opset {opset} < {MIN_OPSET}: per-channel Q/DQ needs opset 13+")
    graph = model.graph
    inits = {init.name: init for init in graph.initializer}
    producers = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    qdq = [n for n in graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    if not qdq:
        return [*problems, "no QuantizeLinear/DequantizeLinear nodes: the model is not quantized"]

    def const(name: str) -> np.ndarray | None:
        return numpy_helper.to_array(inits[name]) if name in inits else None

    for node in qdq:
        label = f"{node.op_type} {node.name or node.output[0]!r}"
        is_weight = node.op_type == "DequantizeLinear" and node.input[0] in inits
        scale = const(node.input[1]) if len(node.input) > 1 else None
        if scale is None:
            problems.append(f"{label}: scale is not a constant initializer")
            continue
        if inits[node.input[1]].data_type != TensorProto.FLOAT:
            problems.append(f"{label}: scale is not float32")
        if not np.all(np.isfinite(scale)) or np.any(scale <= 0):
            problems.append(f"{label}: scale must be finite and positive")
        zp_name = node.input[2] if len(node.input) > 2 and node.input[2] else None
        if zp_name is None or zp_name not in inits:
            problems.append(f"{label}: zero point missing or not a constant initializer")
            continue
        zp_type = inits[zp_name].data_type
        zero_point = const(zp_name)
        if zp_type != TensorProto.INT8:
            problems.append(f"{label}: zero point must be int8 (got {_type_name(zp_type)})")
        if np.any(zero_point != 0):
            problems.append(
                f"{label}: zero point must be 0 (symmetric), got {zero_point.ravel()[:4].tolist()}"
            )
        if zero_point.shape != scale.shape:
            problems.append(f"{label}: scale and zero point shapes differ")
        if not is_weight:
            if scale.size != 1:
                problems.append(f"{label}: activations must be quantized per tensor (scalar scale)")
            if node.op_type == "QuantizeLinear":
                for user in consumers.get(node.output[0], []):
                    if user.op_type != "DequantizeLinear":
                        problems.append(f"{label}: feeds {user.op_type}, not a DequantizeLinear")
                    elif not _same_params(inits, node, user):
                        problems.append(
                            f"{label}: its DequantizeLinear uses other scale/zero point"
                        )
            if node.op_type == "DequantizeLinear":
                source = producers.get(node.input[0])
                if source is None or source.op_type != "QuantizeLinear":
                    problems.append(
                        f"{label}: activation input does not come from a QuantizeLinear"
                    )
            continue
        # A weight: int8 values in [-127, 127], per-channel scale on the output-channel axis.
        weight = inits[node.input[0]]
        if weight.data_type != TensorProto.INT8:
            problems.append(
                f"{label}: weight initializer must be int8 (got {_type_name(weight.data_type)})"
            )
            continue
        values = numpy_helper.to_array(weight)
        if values.size and values.min() < -WEIGHT_QMAX:
            problems.append(f"{label}: int8 weights must lie in [-127, 127] (found -128)")
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        users = [u for u in consumers.get(node.output[0], []) if u.op_type in QUANTIZABLE_OPS]
        for user in users:
            want = weight_axis(user, values.ndim)
            if axis % values.ndim != want:
                problems.append(
                    f"{label}: per-channel axis {axis} but {user.op_type} {user.name!r} needs axis {want}"
                )
        if scale.ndim != 1 or scale.size != values.shape[axis % values.ndim]:
            problems.append(
                f"{label}: weight scale must be 1-D with one value per output channel "
                f"({values.shape[axis % values.ndim]}), got shape {list(scale.shape)}"
            )

    float_nodes = set(keep_float) | _metadata_keep_float(model)
    for position, node in enumerate(graph.node):
        if node.op_type not in QUANTIZABLE_OPS:
            continue
        if node_id(node, position) in float_nodes:
            # Kept in float on purpose: float inputs and weights, so TensorRT's strongly
            # typed build runs it in float too.
            if any(
                producers.get(name) is not None and producers[name].op_type == "DequantizeLinear"
                for name in node.input[:2]
            ):
                problems.append(
                    f"{node.op_type} {node.name!r} is listed as kept in float but reads "
                    "dequantized inputs"
                )
            continue
        for index, what in ((0, "activation"), (1, "weight")):
            source = producers.get(node.input[index]) if len(node.input) > index else None
            if source is None or source.op_type != "DequantizeLinear":
                problems.append(
                    f"{node.op_type} {node.name!r}: {what} input is not dequantized (not quantized)"
                )
    return problems


def _metadata_keep_float(model: Any) -> set[str]:
    entry = next((p for p in model.metadata_props if p.key == KEEP_FLOAT_METADATA), None)
    return {n for n in entry.value.split(",") if n} if entry is not None else set()


def _same_params(inits: Mapping[str, Any], q: Any, dq: Any) -> bool:
    from onnx import numpy_helper

    for index in (1, 2):
        a, b = q.input[index], dq.input[index] if len(dq.input) > index else ""
        if a == b:
            continue
        if a not in inits or b not in inits:
            return False
        if not np.array_equal(numpy_helper.to_array(inits[a]), numpy_helper.to_array(inits[b])):
            return False
    return True


def _type_name(data_type: int) -> str:
    from onnx import TensorProto

    return TensorProto.DataType.Name(data_type).lower()
