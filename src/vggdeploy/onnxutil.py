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
    from onnx import TensorProto
    from onnx.helper import tensor_dtype_to_np_dtype

    def one(value: Any) -> tuple[str, str, list[int | str | None]]:
        tensor = value.type.tensor_type
        try:
            dtype = tensor_dtype_to_np_dtype(tensor.elem_type).name
        except Exception:  # a type NumPy has no name for: ONNX's own, e.g. "bfloat16"
            dtype = TensorProto.DataType.Name(tensor.elem_type).lower()
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


#: Ops that a quantized tensor's integers pass through unchanged in ONNX Runtime's CPU form
#: (each runs on uint8 tensors in ONNX Runtime); a 1x1 pool (the identity) becomes Identity.
_INTEGER_PASS_THROUGH = ("MaxPool", "Reshape", "Flatten", "Identity", "Squeeze", "Unsqueeze")
#: Weighted ops whose float output ONNX Runtime fuses with a following QuantizeLinear.
_WEIGHTED_OPS = ("Conv", "Gemm", "MatMul")
_NOTHING = {"output_pairs": 0, "relu_as_max": 0, "integer_chains": 0, "uint8_activations": 0}


def cpu_int8_form(model: Any) -> dict[str, int]:
    """Rewrite a symmetric int8 Q/DQ model (NVIDIA's form, as ModelOpt writes it) in place into
    the form in which ONNX Runtime's CPU provider runs it fastest, with bit for bit the same
    outputs when evaluated as written (unfused); returns what changed: {"output_pairs",
    "relu_as_max", "integer_chains", "uint8_activations"} (all zero: `model` was left as it was).

    Why: in NVIDIA's placement no QuantizeLinear follows a Conv (its output goes Relu ->
    [MaxPool ->] Q), so ONNX Runtime finds no DQ -> Conv -> Q to fuse into QLinearConv and runs
    every convolution in float on dequantized weights (measured 4.9x slower than its integer
    form on VGG-16); and at int8 zero point 0 it keeps each ReLU in float (DQ -> Relu -> Q; it
    drops a ReLU before a Q only when the zero point is the type's minimum).

    1. Each quantized Conv/Gemm/MatMul (both inputs dequantized) whose output reaches a
       QuantizeLinear(s, z) through a chain of Relu/MaxPool/Reshape/Flatten/1x1-pool ops gets a
       Q(s, z) -> DQ(s, z) pair on its output: Q(f(DQ(Q(y)))) == Q(f(y)) bit for bit, because
       each such f only takes maxima (with 0 for a ReLU) and moves values, and rounding and
       clipping at one scale are monotone with g(0) = 0, so they commute with max. ONNX Runtime
       then fuses DQ -> Conv -> Q into QLinearConv (and Gemm into QGemm).
    2. Each DequantizeLinear(s, z) -> [Relu | MaxPool | Reshape | Flatten | 1x1 pool ...] ->
       QuantizeLinear(s, z) with one scale and zero point runs on the integers: a ReLU becomes
       Max(q, z), a 1x1 pool Identity, the others stay; the DQ and Q go (the same argument).
    3. Every activation Q/DQ moves from int8 (zero point z) to uint8 (zero point z + 128): the
       same values, and what ONNX Runtime does itself on x86 for Q -> DQ pairs; its x86 integer
       convolutions take uint8 activations only.

    The fused integer kernels then differ from the unfused evaluation only by their own
    requantization rounding (an int32 accumulator scaled once, where the unfused graph sums
    float products), as ONNX Runtime's own QDQ files do. The old vggdeploy placement (a Q/DQ
    pair already on each Conv output) goes through steps 2 and 3 alone.

    Refused (nothing changed) unless every quantized activation is per tensor with an int8
    zero point and is read only by DequantizeLinear or by the ops of step 2, and step 2 finds
    at least one chain. The file on disk keeps NVIDIA's form; this is for ONNX Runtime's CPU
    provider only.
    """
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    inits = {init.name: init for init in graph.initializer}
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

    def same_params(a: Any, b: Any) -> bool:
        return (
            int8_per_tensor(a)
            and int8_per_tensor(b)
            and all(
                np.array_equal(const(x), const(y))
                for x, y in zip(a.input[1:3], b.input[1:3], strict=True)
            )
        )

    def links(nodes: list[Any]) -> tuple[dict[str, Any], dict[str, list[Any]]]:
        producers = {out: node for node in nodes for out in node.output}
        consumers: dict[str, list[Any]] = {}
        for node in nodes:
            for name in node.input:
                consumers.setdefault(name, []).append(node)
        return producers, consumers

    def integer_op(node: Any, consumers: dict[str, list[Any]]) -> bool:
        if any(o in consumers or o in outputs for o in node.output[1:] if o):
            return False  # MaxPool indices in use
        return node.op_type in ("Relu", *_INTEGER_PASS_THROUGH) or _identity_pool(node)

    def chain_to_q(tensor: str, consumers: dict[str, list[Any]]) -> tuple[list[Any], Any] | None:
        """The single-consumer integer ops from `tensor` to a QuantizeLinear, and that Q."""
        ops: list[Any] = []
        while tensor not in outputs:
            users = consumers.get(tensor, [])
            if len(users) != 1 or users[0].input[0] != tensor:
                return None
            user = users[0]
            if user.op_type == "QuantizeLinear":
                return (ops, user) if int8_per_tensor(user) else None
            if not integer_op(user, consumers):
                return None
            ops.append(user)
            tensor = user.output[0]
        return None

    # One list of the nodes: protobuf hands out a new Python wrapper on each access, and the
    # nodes are told apart by id() below.
    nodes = list(graph.node)
    if not all(int8_per_tensor(n) for n in nodes if activation_qdq(n)):
        return dict(_NOTHING)
    producers, consumers = links(nodes)

    # 1. A Q/DQ pair on each quantized weighted op's output (planned, applied below).
    def dequantized(name: str) -> bool:
        source = producers.get(name)
        return source is not None and source.op_type == "DequantizeLinear"

    pairs: list[tuple[Any, Any]] = []
    for node in nodes:
        weighted = node.op_type in _WEIGHTED_OPS and len(node.output) == 1 and len(node.input) > 1
        if weighted and dequantized(node.input[0]) and dequantized(node.input[1]):
            found = chain_to_q(node.output[0], consumers)
            if found is not None and found[0]:
                pairs.append((node, found[1]))
    # Each op now writes the new Q's input, and the new DQ the op's old output name; undone
    # below if the rewrite is refused.
    planned = {id(node): q for node, q in pairs}
    original = {id(node): node.output[0] for node, _ in pairs}
    with_pairs: list[Any] = []
    for node in nodes:
        with_pairs.append(node)
        q = planned.get(id(node))
        if q is None:
            continue
        base = f"{node.output[0]}.cpu_int8"
        node.output[0] = f"{base}.float"
        params = list(q.input[1:3])
        with_pairs.append(
            helper.make_node(
                "QuantizeLinear", [node.output[0], *params], [f"{base}.q"], f"{base}.Q"
            )
        )
        with_pairs.append(
            helper.make_node(
                "DequantizeLinear", [f"{base}.q", *params], [original[id(node)]], f"{base}.DQ"
            )
        )

    def refused() -> dict[str, int]:
        for node, _ in pairs:
            node.output[0] = original[id(node)]
        return dict(_NOTHING)

    # 2. DQ -> integer ops -> Q with one scale and zero point: on the integers.
    producers, consumers = links(with_pairs)
    chains: dict[int, tuple[Any, list[Any], Any]] = {}
    for dq in with_pairs:
        if dq.op_type != "DequantizeLinear" or not activation_qdq(dq) or dq.output[0] in outputs:
            continue
        found = chain_to_q(dq.output[0], consumers)
        if found is not None and found[0] and same_params(dq, found[1]):
            chains[id(dq)] = (dq, *found)
    if not chains:
        return refused()
    removed_q = {id(q) for _, _, q in chains.values()}
    for node in with_pairs:
        if node.op_type != "QuantizeLinear" or not activation_qdq(node) or id(node) in removed_q:
            continue
        if node.output[0] in outputs:  # the caller reads int8 values
            return refused()
        if any(u.op_type != "DequantizeLinear" for u in consumers.get(node.output[0], [])):
            return refused()
    for dq, _, _ in chains.values():
        source = producers.get(dq.input[0])
        if source is None or source.op_type != "QuantizeLinear":
            return refused()  # a DQ of something else than a quantized activation

    # Accepted: apply 1, 2 and 3.
    new_inits: list[Any] = []
    as_uint8: dict[str, str] = {}

    def uint8_zero_point(name: str) -> str:
        if name not in as_uint8:
            as_uint8[name] = f"{name}.uint8"
            value = (const(name).astype(np.int16) + 128).astype(np.uint8)
            new_inits.append(numpy_helper.from_array(value, as_uint8[name]))
        return as_uint8[name]

    retyped: set[str] = set()
    dropped: set[int] = set()
    relus = 0
    for dq, ops, q in chains.values():
        ops[0].input[0] = dq.input[0]
        ops[-1].output[0] = q.output[0]
        for op in ops:
            if op.op_type == "Relu":
                op.op_type = "Max"
                op.input.append(uint8_zero_point(dq.input[2]))
                relus += 1
            elif op.op_type not in _INTEGER_PASS_THROUGH:  # a 1x1 pool: the identity
                op.op_type = "Identity"
                del op.input[1:]
            else:
                continue
            del op.attribute[:]
        retyped.update(op.output[0] for op in ops)
        dropped.update((id(dq), id(q)))
    converted = 0
    for node in with_pairs:
        if id(node) not in dropped and activation_qdq(node):
            node.input[2] = uint8_zero_point(node.input[2])
            converted += 1
    kept = [n for n in with_pairs if id(n) not in dropped]
    del graph.node[:]
    graph.node.extend(kept)
    graph.initializer.extend(new_inits)
    # Declared types of the tensors that are now uint8 (or were float) would contradict them.
    int8 = TensorProto.INT8
    keep_info = [
        v
        for v in graph.value_info
        if v.name not in retyped and v.type.tensor_type.elem_type != int8
    ]
    del graph.value_info[:]
    graph.value_info.extend(keep_info)
    return {
        "output_pairs": len(pairs),
        "relu_as_max": relus,
        "integer_chains": len(chains),
        "uint8_activations": converted,
    }


def _identity_pool(node: Any) -> bool:
    """A 1x1 AveragePool/MaxPool with stride 1 and no padding: the identity (VGG's adaptive
    pool at 224 px)."""
    from onnx import helper

    if node.op_type not in ("AveragePool", "MaxPool"):
        return False
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    return (
        all(k == 1 for k in attrs.get("kernel_shape", [0]))
        and all(s == 1 for s in attrs.get("strides", [1]))
        and not any(attrs.get("pads", []))
        and attrs.get("auto_pad", b"NOTSET") in (b"NOTSET", b"VALID", "NOTSET", "VALID")
    )
