"""Small ONNX graph helpers shared by the producers (exporter, fp16 conversion, calibration).

Core layer: imports `onnx` only inside functions, nothing from the stages.
"""

from __future__ import annotations

import os
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


def external_data_tensors(path: str | os.PathLike[str]) -> list[str]:
    """Names of the tensors of the ONNX file at `path` whose data lives in other files.

    Parses the file without following those references (nothing outside it is opened). A file
    that is not ONNX at all raises `ValueError`.
    """
    import onnx
    from onnx.external_data_helper import _get_all_tensors, uses_external_data

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # DecodeError and friends: not an ONNX protobuf
        raise ValueError(f"not an ONNX model ({type(exc).__name__})") from None
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


def relu_as_int8_lookup(model: Any) -> int:
    """Let ONNX Runtime's CPU provider run the ReLUs of a symmetric Q/DQ model in int8; returns
    how many it changed (`model` is changed in place).

    In TensorRT's form (int8, zero point 0) a ReLU between a DequantizeLinear and the next
    QuantizeLinear is not redundant for ONNX Runtime (it drops one only before a Q whose zero
    point is the type's minimum), so it runs DQ -> float ReLU -> Q over every activation map.
    ONNX Runtime fuses DQ -> LeakyRelu -> Q into QLinearLeakyRelu, an int8 lookup table, so
    each such ReLU becomes LeakyRelu(alpha=0). Bit for bit the same: the two differ only in the
    sign of a zero (-0.0 for negative inputs), which the ops between here and the Q pass on
    and the Q maps to the same integer. Changed only where the ReLU reads a DequantizeLinear
    and its value reaches, through order-preserving single-consumer ops, only a
    QuantizeLinear whose zero point is not the type's minimum.

    For ONNX Runtime's CPU provider only: the file on disk keeps its ReLUs (TensorRT fuses
    Conv + ReLU itself).
    """
    from onnx import helper, numpy_helper

    graph = model.graph
    inits = {init.name: init for init in graph.initializer}
    producers = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    outputs = {o.name for o in graph.output}

    def quantize_at_end(tensor: str) -> Any:
        while tensor not in outputs:
            users = consumers.get(tensor, [])
            if len(users) != 1 or users[0].input[0] != tensor:
                return None
            user = users[0]
            if user.op_type == "QuantizeLinear":
                return user
            if user.op_type not in ORDER_PRESERVING_OPS or user.op_type == "Relu":
                return None
            if any(o in consumers or o in outputs for o in user.output[1:] if o):
                return None  # MaxPool indices or a Dropout mask in use
            tensor = user.output[0]
        return None

    def zero_point_not_minimum(q: Any) -> bool:
        if len(q.input) < 3 or q.input[2] not in inits:
            return False  # no zero point: uint8 0, the minimum (ReLU already redundant)
        zero_point = numpy_helper.to_array(inits[q.input[2]])
        info = np.iinfo(zero_point.dtype) if zero_point.dtype.kind in "iu" else None
        return info is not None and bool(np.all(zero_point != info.min))

    changed = 0
    for node in graph.node:
        if node.op_type != "Relu" or len(node.output) != 1:
            continue
        source = producers.get(node.input[0])
        if source is None or source.op_type != "DequantizeLinear":
            continue
        q = quantize_at_end(node.output[0])
        if q is None or not zero_point_not_minimum(q):
            continue
        node.op_type = "LeakyRelu"
        del node.attribute[:]
        node.attribute.append(helper.make_attribute("alpha", 0.0))
        changed += 1
    return changed
