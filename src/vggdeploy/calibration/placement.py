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
