"""Where Q/DQ goes: which ops are quantizable, their layer names, which stay float, and which
pooling inputs get a Q/DQ pair (see `vggdeploy.calibration.qdq` for the placement rules)."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from vggdeploy.calibration.calibrators import QUANTIZABLE_OPS
from vggdeploy.errors import InputError
from vggdeploy.onnxutil import ORDER_PRESERVING_OPS


def quantizable_nodes(model: Any) -> list[tuple[str, str, str]]:
    """(ONNX node name, op type, the model's own layer name) of each Conv/Gemm/MatMul with an
    initializer weight, in graph order. The layer name comes from the weight initializer
    (`features.10.weight` -> `features.10`, as both torch exporters name parameters), else from
    a TorchScript-style node name (`/features/features.10/Conv` -> `features.10`), else it is the
    node name itself.
    """
    inits = {init.name for init in model.graph.initializer}
    found: list[tuple[str, str, str]] = []
    for index, node in enumerate(model.graph.node):
        if node.op_type not in QUANTIZABLE_OPS or len(node.input) < 2:
            continue
        if node.input[1] not in inits:
            continue
        found.append((node_id(node, index), node.op_type, _layer_name(node)))
    return found


def node_id(node: Any, index: int) -> str:
    return node.name or f"{node.op_type}_{index}"


def _layer_name(node: Any) -> str:
    weight = node.input[1]
    for suffix in (".weight", ".weight_orig"):
        if weight.endswith(suffix) and not weight.startswith("onnx::"):
            return weight[: -len(suffix)]
    parts = [p for p in node.name.split("/") if p]
    if len(parts) >= 2 and node.name.startswith("/"):
        return parts[-2]  # "/features/features.10/Conv"
    return node.name


def resolve_keep_float(model: Any, names: Collection[str]) -> set[str]:
    """ONNX node names for `names` (node names or layer names); InputError for unknown ones."""
    if isinstance(names, str):
        names = [n for n in names.split(",") if n.strip()]
    wanted = {n.strip() for n in names if n.strip()}
    if not wanted:
        return set()
    table = quantizable_nodes(model)
    chosen = {node for node, _, layer in table if node in wanted or layer in wanted}
    known = {node for node, _, _ in table} | {layer for _, _, layer in table}
    unknown = sorted(wanted - known)
    if unknown:
        sample = ", ".join(f"{layer} ({node})" for node, _, layer in table[:4])
        raise InputError(
            f"--keep-float: no Conv/Gemm/MatMul named {', '.join(unknown)}; "
            f"use ONNX node names or layer names, e.g. {sample}"
        )
    return chosen


def pool_inputs(graph: Any, chosen: set[int]) -> dict[str, str]:
    """For each MaxPool whose output reaches the activation input of a chosen (quantized) op
    through one chain of single-consumer order-preserving ops (Reshape/Flatten, a 1x1 pool
    ...): {the MaxPool's input tensor: that op's input tensor}, so the pool's input gets a
    Q/DQ pair with the same scale as the op's input.

    NVIDIA ModelOpt's ONNX PTQ (0.47, `modelopt/onnx/quantization/partitioning.py`,
    `find_quantizable_nodes`) quantizes a pooling op that has a quantized consumer, and ONNX
    Runtime's quantizer, which it calls, gives a MaxPool's output the scale of its input
    (recorded in `tests/data/modelopt_vgg11_placement.json`). One scale on both sides keeps
    the pool exact on integers: max commutes with rounding.
    """
    consumers: dict[str, list[Any]] = {}
    position: dict[str, int] = {}  # first output name -> node position
    for index, node in enumerate(graph.node):
        for name in node.input:
            consumers.setdefault(name, []).append(node)
        if node.output:
            position[node.output[0]] = index
    graph_outputs = {o.name for o in graph.output}
    found: dict[str, str] = {}
    for node in graph.node:
        if node.op_type != "MaxPool" or not _order_preserving(node, consumers, graph_outputs):
            continue
        tensor = node.output[0]
        while tensor not in graph_outputs:
            users = consumers.get(tensor, [])
            if not users or any(u.input[0] != tensor for u in users):
                break
            if all(position.get(u.output[0] if u.output else "") in chosen for u in users):
                found[node.input[0]] = tensor
                break
            if len(users) != 1 or not _order_preserving(users[0], consumers, graph_outputs):
                break
            tensor = users[0].output[0]
    return found


def _order_preserving(node: Any, consumers: Mapping[str, list[Any]], outputs: set[str]) -> bool:
    from onnx import helper

    extra = [o for o in node.output[1:] if o and (o in consumers or o in outputs)]
    if extra:  # MaxPool indices, Dropout mask in use
        return False
    if node.op_type in ORDER_PRESERVING_OPS:
        return True
    if node.op_type in ("AveragePool", "MaxPool"):
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        return (
            all(k == 1 for k in attrs.get("kernel_shape", [0]))
            and all(s == 1 for s in attrs.get("strides", [1]))
            and not any(attrs.get("pads", []))
        )  # a 1x1 pool (VGG's adaptive pool at 224 px) is the identity
    return False


def qdq_placement(model: Any) -> dict[str, Any]:
    """Where a Q/DQ model quantizes, in a form two files of the same fp32 graph can be compared
    by (vggdeploy's and NVIDIA ModelOpt's; scales are left out, they depend on calibration):

    {"inputs": {"Conv features.3 input 0": {"kind", "tensor", "dtype", "zero_point", "axis",
    "per"}, ...}, "float": ["Gemm classifier.0", ...], "same_scale": [...]}

    A node is named by its op and layer (Conv/Gemm/MatMul: the weight's name without
    `.weight`) or by its op and position among the ops of that type (`MaxPool #2`). "float"
    lists the weighted ops that read no dequantized input; "same_scale" the MaxPools whose
    quantized input and output use one scale.
    """
    from onnx import helper, numpy_helper

    graph = model.graph
    inits = {init.name: init for init in graph.initializer}
    producers = {out: node for node in graph.node for out in node.output}
    qdq = ("QuantizeLinear", "DequantizeLinear")

    def origin(name: str) -> str:
        """The tensor a DQ (-> Q) chain starts from."""
        while name in producers and producers[name].op_type in qdq:
            name = producers[name].input[0]
        return name

    def source(name: str) -> str:
        return origin(name).removesuffix("_quantized")  # vggdeploy's int8 weight initializer

    def scale_of(name: str) -> Any:
        dq = producers.get(name)
        if dq is None or dq.op_type != "DequantizeLinear" or dq.input[1] not in inits:
            return None
        return numpy_helper.to_array(inits[dq.input[1]]).tolist()

    counts: dict[str, int] = {}
    labels: dict[int, str] = {}
    for index, node in enumerate(graph.node):
        if node.op_type in qdq:
            continue
        if node.op_type in QUANTIZABLE_OPS and len(node.input) > 1:
            labels[index] = f"{node.op_type} {source(node.input[1]).removesuffix('.weight')}"
        else:
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
            labels[index] = f"{node.op_type} #{counts[node.op_type]}"

    inputs: dict[str, dict[str, Any]] = {}
    floats: list[str] = []
    same_scale: list[str] = []
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    for index, node in enumerate(graph.node):
        if index not in labels:
            continue
        read = False
        for position, name in enumerate(node.input):
            dq = producers.get(name)
            if dq is None or dq.op_type != "DequantizeLinear":
                continue
            read = True
            zp = numpy_helper.to_array(inits[dq.input[2]]) if len(dq.input) > 2 else None
            axis = next(
                (helper.get_attribute_value(a) for a in dq.attribute if a.name == "axis"), None
            )
            per_channel = zp is not None and zp.size > 1
            inputs[f"{labels[index]} input {position}"] = {
                "kind": "weight" if origin(name) in inits else "activation",
                "tensor": source(name),
                "dtype": str(zp.dtype) if zp is not None else "none",
                "zero_point": sorted({int(v) for v in zp.ravel()}) if zp is not None else None,
                "per": "channel" if per_channel else "tensor",
                "axis": axis if per_channel else None,
            }
        if node.op_type in QUANTIZABLE_OPS and not read:
            floats.append(labels[index])
        if node.op_type == "MaxPool" and read:
            after = [u for u in consumers.get(node.output[0], []) if u.op_type == "QuantizeLinear"]
            if (
                after
                and scale_of(node.input[0])
                == [numpy_helper.to_array(inits[after[0].input[1]]).tolist()][0]
            ):
                same_scale.append(labels[index])
    return {"inputs": inputs, "float": floats, "same_scale": same_scale}
