"""Small ONNX graph helpers shared by the producers (exporter, fp16 conversion, calibration).

Core layer: imports `onnx` only inside functions, nothing from the stages.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

#: prefix of the metadata keys vggdeploy writes into every ONNX file it makes
METADATA_PREFIX = "vggdeploy."


def serialize_with_outputs(model: Any, names: Iterable[str]) -> bytes:
    """`model` serialized with `names` (float32 tensors) exposed as extra graph outputs.

    The outputs are added to the caller's model only while serializing and removed again, so
    no copy of the graph is made (a copy of VGG-16 is another 0.5 GB).
    """
    import onnx

    existing = {o.name for o in model.graph.output}
    extra = [
        onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)
        for name in dict.fromkeys(names)
        if name not in existing
    ]
    count = len(model.graph.output)
    model.graph.output.extend(extra)
    try:
        return model.SerializeToString()
    finally:
        del model.graph.output[count:]


def value_types(model: Any) -> dict[str, int]:
    """Element type of every tensor the graph names, running shape inference only if needed.

    Exported bundles already carry value_info for every intermediate tensor (the export runs
    shape inference), which saves inferring on a copy of a large model.
    """
    import onnx

    def collect(graph: Any) -> dict[str, int]:
        types = {v.name: v.type.tensor_type.elem_type for v in graph.value_info}
        types.update({v.name: v.type.tensor_type.elem_type for v in graph.input})
        types.update({v.name: v.type.tensor_type.elem_type for v in graph.output})
        return types

    types = collect(model.graph)
    if all(out in types for node in model.graph.node for out in node.output if out):
        return types
    return collect(onnx.shape_inference.infer_shapes(model).graph)


def opset_of(model: Any) -> int:
    """The default-domain opset a model imports (0 if none)."""
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def name_nodes(model: Any) -> None:
    """Give every node a unique name (`OpType_index` where missing or repeated)."""
    seen: set[str] = set()
    for i, node in enumerate(model.graph.node):
        if not node.name or node.name in seen:
            node.name = f"{node.op_type}_{i}"
        seen.add(node.name)


def set_metadata(model: Any, key: str, value: str) -> None:
    """Set `vggdeploy.<key>` in the model's metadata, replacing an existing entry."""
    full = METADATA_PREFIX + key
    for prop in model.metadata_props:
        if prop.key == full:
            prop.value = value
            return
    model.metadata_props.add(key=full, value=value)


def graph_io(model: Any) -> dict[str, list[tuple[str, str, list[int | str | None]]]]:
    """The graph's inputs (initializers left out) and outputs as (name, NumPy dtype name, shape),
    a dim as its value, its symbolic name, or None when the file leaves it unknown."""
    from onnx.helper import tensor_dtype_to_np_dtype

    def one(value: Any) -> tuple[str, str, list[int | str | None]]:
        tensor = value.type.tensor_type
        try:
            dtype = tensor_dtype_to_np_dtype(tensor.elem_type).name
        except (KeyError, ValueError, TypeError):
            dtype = f"onnx type {tensor.elem_type}"
        dims = [
            d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
            for d in tensor.shape.dim
        ]
        return value.name, dtype, dims

    initializers = {t.name for t in model.graph.initializer}
    return {
        "inputs": [one(v) for v in model.graph.input if v.name not in initializers],
        "outputs": [one(v) for v in model.graph.output],
    }


def io_mismatch(io: dict[str, Any], model: Any) -> str | None:
    """How the manifest's `io` (`IoRecord` as JSON) differs from the ONNX `model`'s graph, or
    None. Names, order, dtypes and ranks must match, and every dim that both give as a number."""
    found = graph_io(model)
    for side in ("inputs", "outputs"):
        want = [(t["name"], t["dtype"], t["shape"]) for t in io[side]]
        have = found[side]
        if [w[0] for w in want] != [h[0] for h in have]:
            return (
                f"its {side} are {[h[0] for h in have]}, the manifest says {[w[0] for w in want]}"
            )
        for (name, dtype, shape), (_, got_dtype, got_shape) in zip(want, have, strict=True):
            if dtype != got_dtype:
                return f"{side[:-1]} {name!r} is {got_dtype}, the manifest says {dtype}"
            fixed = [
                (a, b)
                for a, b in zip(shape, got_shape, strict=False)
                if isinstance(a, int) and isinstance(b, int)
            ]
            if len(shape) != len(got_shape) or any(a != b for a, b in fixed):
                return f"{side[:-1]} {name!r} has shape {got_shape}, the manifest says {shape}"
    return None


def external_tensors(model: Any) -> list[str]:
    """Names of the tensors of the loaded `model` whose data lives in other files."""
    from onnx.external_data_helper import _get_all_tensors, uses_external_data

    return [t.name for t in _get_all_tensors(model) if uses_external_data(t)]


class Background:
    """`fn()` started on a thread now; `result()` waits for it and returns or raises its outcome.

    For C++ work that releases the GIL (ONNX Runtime building a session parses and prepacks the
    model: measured on VGG-16, the main thread keeps running meanwhile) while the caller does
    other work, e.g. the ONNX checker on the same file. Use as a context manager so that the
    thread is always joined, also when the caller fails or is interrupted.
    """

    def __init__(self, fn: Any) -> None:
        import threading

        self._outcome: list[Any] = []

        def target() -> None:
            try:
                self._outcome.append((True, fn()))
            except BaseException as exc:  # handed to the caller by result()
                self._outcome.append((False, exc))

        self._thread = threading.Thread(target=target, name="vggdeploy-background", daemon=True)
        self._thread.start()

    def result(self) -> Any:
        self._thread.join()
        ok, value = self._outcome[0]
        if not ok:
            raise value
        return value

    def __enter__(self) -> Background:
        return self

    def __exit__(self, *exc: object) -> None:
        self._thread.join()
        self._outcome.clear()  # drop the result (a session holds the whole model)


def onnx_metadata(manifest: dict[str, Any]) -> dict[str, Any]:
    """An exported model's metadata and doc string, from a manifest's `model`, `weights` and
    `preprocessing` (validated as the manifest's records, so the values are the manifest's):
    {"props": {"vggdeploy.model": ...}, "doc_string": ...}."""
    import json

    from vggdeploy import __version__
    from vggdeploy.records import ModelRecord, PreprocessingRecord, WeightsRecord

    m = ModelRecord.model_validate(manifest["model"])
    weights = WeightsRecord.model_validate(manifest["weights"]).to_json_dict()
    pre = PreprocessingRecord.model_validate(manifest["preprocessing"]).to_json_dict()
    entries = {
        "model": m.name,
        "config": m.config,
        "batch_norm": json.dumps(m.batch_norm),
        "num_classes": str(m.num_classes),
        "dense": json.dumps(m.dense),
        "image_size": str(m.image_size),
        "preprocessing": json.dumps(pre),
        "weights": json.dumps({k: v for k, v in weights.items() if k != "path"}),
        "version": __version__,
    }
    doc = f"{m.name} (VGG config {m.config}) exported by vggdeploy {__version__}"
    return {"props": {METADATA_PREFIX + k: v for k, v in entries.items()}, "doc_string": doc}


# -- ONNX Runtime's CPU kernels for a Q/DQ model --------------------------------------------------

#: Ops a quantized tensor passes through unchanged in value order, so that Q(op(x)) equals
#: Q(op(DQ(Q(x)))) bit for bit when both Q use the same scale and zero point.
ORDER_PRESERVING_OPS = (
    "Relu",
    "MaxPool",
    "Reshape",
    "Flatten",
    "Identity",
    "Dropout",
    "Squeeze",
    "Unsqueeze",
    "Transpose",
)


#: Ops that a ReLU's integer result passes through on its way to the next QuantizeLinear in
#: ONNX Runtime's CPU form (each runs on uint8 tensors in ONNX Runtime).
_INTEGER_PASS_THROUGH = ("MaxPool", "Reshape", "Flatten", "Identity", "Squeeze", "Unsqueeze")


def cpu_int8_form(model: Any) -> dict[str, int]:
    """Rewrite a symmetric int8 Q/DQ model (TensorRT's form) in place into the form in which
    ONNX Runtime's CPU provider runs it fastest, with bit for bit the same outputs; returns
    {"relu_as_max": ..., "uint8_activations": ...} (all zero: `model` was left as it was).

    Why: at int8 zero point 0, ONNX Runtime keeps each ReLU between the integer convolutions in
    float (DQ -> Relu -> Q; it drops a ReLU before a Q only when the zero point is the type's
    minimum), three float passes over every activation map (~8% of VGG-16's int8 latency).

    1. Each DequantizeLinear(s, z) -> Relu -> [MaxPool/Reshape/Flatten ...] -> QuantizeLinear(s, z)
       with one scale and zero point becomes Max(q, z) -> [the same ops on the integers]: ReLU
       then re-quantizing at the same scale is exactly max(q, z) (rounding and clipping commute
       with max and with the pass-through ops).
    2. Every activation Q/DQ moves from int8 (zero point z) to uint8 (zero point z + 128): the
       same values, and what ONNX Runtime does itself on x86 for Q -> DQ pairs; its x86 integer
       convolutions take uint8 activations only, and step 1 leaves no pair to convert.

    Refused (nothing changed) unless every quantized activation is per tensor with an int8
    zero point and is read only by DequantizeLinear or the ops above, and the model has at
    least one such ReLU. The file on disk keeps TensorRT's form; this is for ONNX Runtime's
    CPU provider only.
    """
    from onnx import TensorProto, numpy_helper

    graph = model.graph
    # One list of the nodes: protobuf hands out a new Python wrapper on each access, and the
    # nodes are told apart by id() below.
    nodes = list(graph.node)
    inits = {init.name: init for init in graph.initializer}
    producers = {out: node for node in nodes for out in node.output}
    consumers: dict[str, list[Any]] = {}
    for node in nodes:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    outputs = {o.name for o in graph.output}

    def const(name: str) -> Any:
        return numpy_helper.to_array(inits[name]) if name in inits else None

    def activation_qdq(node: Any) -> bool:
        return (
            node.op_type in ("QuantizeLinear", "DequantizeLinear")
            and node.input[0] not in inits  # a weight's DequantizeLinear stays int8
        )

    def int8_per_tensor(node: Any) -> bool:
        if len(node.input) < 3 or node.input[1] not in inits or node.input[2] not in inits:
            return False
        zp = inits[node.input[2]]
        return zp.data_type == TensorProto.INT8 and const(node.input[2]).size == 1

    def relu_chain(relu: Any) -> tuple[Any, list[Any], Any] | None:
        dq = producers.get(relu.input[0])
        if dq is None or dq.op_type != "DequantizeLinear" or not int8_per_tensor(dq):
            return None
        if len(consumers.get(dq.output[0], [])) != 1 or dq.output[0] in outputs:
            return None
        chain, tensor = [], relu.output[0]
        while tensor not in outputs:
            users = consumers.get(tensor, [])
            if len(users) != 1 or users[0].input[0] != tensor:
                return None
            user = users[0]
            if user.op_type == "QuantizeLinear":
                same = int8_per_tensor(user) and all(
                    np.array_equal(const(a), const(b))
                    for a, b in zip(dq.input[1:3], user.input[1:3], strict=True)
                )
                return (dq, chain, user) if same else None
            if user.op_type not in _INTEGER_PASS_THROUGH:
                return None
            if any(o in consumers or o in outputs for o in user.output[1:] if o):
                return None  # MaxPool indices in use
            chain.append(user)
            tensor = user.output[0]
        return None

    chains = {id(n): c for n in nodes if n.op_type == "Relu" and (c := relu_chain(n))}
    qdq = [n for n in nodes if activation_qdq(n)]
    if not chains or not all(int8_per_tensor(n) for n in qdq):
        return {"relu_as_max": 0, "uint8_activations": 0}
    # Every quantized tensor must be read only by a DQ, a Max made here or a pass-through op.
    removed_q = {id(q) for _, _, q in chains.values()}
    for node in qdq:
        if node.op_type == "QuantizeLinear" and id(node) not in removed_q:
            if node.output[0] in outputs:  # the caller reads int8 values
                return {"relu_as_max": 0, "uint8_activations": 0}
            for user in consumers.get(node.output[0], []):
                if user.op_type != "DequantizeLinear" and id(user) not in chains:
                    return {"relu_as_max": 0, "uint8_activations": 0}

    as_uint8: dict[str, str] = {}

    def uint8_zero_point(name: str) -> str:
        if name not in as_uint8:
            as_uint8[name] = f"{name}.uint8"
            value = (const(name).astype(np.int16) + 128).astype(np.uint8)
            graph.initializer.append(numpy_helper.from_array(value, as_uint8[name]))
        return as_uint8[name]

    retyped: set[str] = set()
    dropped: set[int] = set()
    for node in nodes:
        chain = chains.get(id(node))
        if chain is None:
            continue
        dq, ops, q = chain
        node.op_type = "Max"
        del node.attribute[:]
        node.input[:] = [dq.input[0], uint8_zero_point(dq.input[2])]
        (ops[-1] if ops else node).output[0] = q.output[0]
        retyped.update(o.output[0] for o in (node, *ops))
        dropped.update((id(dq), id(q)))
    converted = 0
    for node in nodes:
        if id(node) not in dropped and activation_qdq(node):
            node.input[2] = uint8_zero_point(node.input[2])
            converted += 1
    kept = [n for n in nodes if id(n) not in dropped]
    del graph.node[:]
    graph.node.extend(kept)
    # Declared types of the tensors that are now uint8 (or were float) would contradict them.
    int8 = TensorProto.INT8
    keep_info = [
        v
        for v in graph.value_info
        if v.name not in retyped and v.type.tensor_type.elem_type != int8
    ]
    del graph.value_info[:]
    graph.value_info.extend(keep_info)
    return {"relu_as_max": len(chains), "uint8_activations": converted}
