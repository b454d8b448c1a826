"""Where Q/DQ goes: which ops are quantizable, their layer names, which stay float, and which
outputs get a Q/DQ pair (see `vggdeploy.calibration.qdq` for the placement rules)."""

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


def next_quantized_inputs(graph: Any, chosen: set[int]) -> dict[int, str]:
    """For each chosen (quantized) op, the input tensor of the next quantized op that its
    output reaches through one chain of order-preserving single-consumer ops; ops whose output
    branches, reaches a graph output, a float op or any other op are left out."""
    consumers: dict[str, list[Any]] = {}
    position: dict[str, int] = {}  # first output name -> node position
    for index, node in enumerate(graph.node):
        for name in node.input:
            consumers.setdefault(name, []).append(node)
        if node.output:
            position[node.output[0]] = index
    graph_outputs = {o.name for o in graph.output}
    found: dict[int, str] = {}
    for index, node in enumerate(graph.node):
        if index not in chosen or len(node.output) != 1:
            continue
        tensor = node.output[0]
        while tensor not in graph_outputs:
            users = consumers.get(tensor, [])
            if len(users) != 1 or users[0].input[0] != tensor:
                break
            user = users[0]
            if position.get(user.output[0] if user.output else "") in chosen:
                found[index] = tensor
                break
            if not _order_preserving(user, consumers, graph_outputs):
                break
            tensor = user.output[0]
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
