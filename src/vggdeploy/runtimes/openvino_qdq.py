"""OpenVINO's view of the bundle's INT8 file: exact rewrites of its Q/DQ pairs in the `ov.Model`.

`model.int8.onnx` keeps NVIDIA ModelOpt's placement for TensorRT (`vggdeploy.calibration.qdq`):
signed int8 with zero point 0 everywhere, and a Q/DQ pair on both sides of each MaxPool with one
scale. Read as it is, OpenVINO's CPU plugin runs that file slower than the same network quantized
by NNCF (measured: `benchmarks/int8_bench.py`), and its runtime graph (`get_runtime_model()`)
says why:

- a stand-alone FakeQuantize after every MaxPool (i8 in, u8 out), and the convolution before the
  pool writing i8: OpenVINO's ONNX frontend turns each QuantizeLinear into a FakeQuantize with
  output range [qmin, qmax] and a Convert to the integer type, each DequantizeLinear into
  Convert/Subtract/Multiply (`src/frontends/onnx/frontend/src/op/quantize_linear.cpp`,
  `dequantize_linear.cpp`), and the low-precision transformations choose a FakeQuantize's
  integer type from the precisions its consumers accept ("FakeQuantizeDecompositionTransformation":
  "FakeQuantize result output precision depends on: 1. Next operation supported input precision
  ... 2. Operation output intervals", `docs/low_precision_transformations/quantization/
  fake_quantize_decomposition.md`); a MaxPool accepts anything, the convolution after it only
  u8 (`src/plugins/intel_cpu/src/transformations/transformation_pipeline.cpp`, `runLptPasses`:
  Convolution input 0 u8, MatMul input 0 u8 or i8);
- the classifier's fully connected layers reading i8 (the signed interval of a ReLU output's
  Q/DQ, which MatMul accepts), where NNCF's read u8;
- the 1x1 average pool (VGG's adaptive pool at 224 px) writing f32 and a reorder back.

Three rewrites remove these; the first two are exact (the model computes the same function;
only the float rounding inside OpenVINO's kernels may differ), the third is exact with
`grid="file"` and one step finer with `grid="fine"`:

1. `requantize`: a Q/DQ pair whose input is a dequantized tensor of the same quantizer (same
   FakeQuantize ranges and levels, same integer type, zero point and scale), reached through
   MaxPools, identity pools and reshapes with one per-tensor scale, is removed. The values
   reaching it already lie on its grid (max and reshape pick values, they make none), so
   quantizing them again returns them unchanged.
2. `identity_pools`: an AvgPool or MaxPool with a 1x1 kernel, unit strides and no padding
   returns its input and is removed.
3. `unsigned`: the int8 (zero point 0) Q/DQ pair on a ReLU's output, range [-T, T] with step
   s = T / 127, becomes u8 on [0, T]:
   - `grid="file"`: Clamp(0, T) and a u8 FakeQuantize with the same step s: for x >= 0 the
     FakeQuantize specification ("FakeQuantize-1": round((x - input_low) / (input_high -
     input_low) * (levels - 1)) ...) gives round(x / s) in [0, 127] either way, and the
     dequantization after it (Convert, Subtract 0, Multiply s) is kept. Exact.
   - `grid="fine"`: one FakeQuantize on [0, T] with 256 levels, step T / 255: the file's
     threshold T (its calibration), twice its resolution. A symmetric int8 file spends half its
     levels on negative values a ReLU output never has (TensorRT takes zero point 0 only);
     NNCF's own quantization and ONNX Runtime's `quantize_static` (zero point -128) use all 256
     on [0, max]. Not the file's model: every such activation lands within s / 4 of x instead
     of s / 2, so the outputs come closer to fp32 (measured: `benchmarks/int8_bench.py`).

`rewrite_int8(model, grid)` applies them in that order and returns how many of each it made.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: the activation grids of rewrite 3
GRIDS = ("fine", "file")

#: ops that move values without making new ones (a per-tensor quantizer commutes with them)
_PICKING = ("MaxPool", "Reshape", "Squeeze", "Unsqueeze")


def rewrite_int8(model: Any, grid: str = "fine") -> dict[str, int]:
    """Rewrite `model` (an `openvino.Model` read from a Q/DQ ONNX file) in place; return
    {"requantize": n, "identity_pools": n, "unsigned": n}. `grid`: "fine" or "file" (rewrite 3)."""
    if grid not in GRIDS:
        raise ValueError(f"grid {grid!r}: use one of {', '.join(GRIDS)}")
    counts = {"requantize": 0, "identity_pools": 0, "unsigned": 0}
    counts["requantize"] = _drop_requantize(model)
    counts["identity_pools"] = _drop_identity_pools(model)
    counts["unsigned"] = _unsign_relu_outputs(model, grid)
    if any(counts.values()):
        model.validate_nodes_and_infer_types()
    return counts


def _constant(node: Any) -> np.ndarray | None:
    if node.get_type_name() == "Constant":
        return np.asarray(node.get_data())
    if node.get_type_name() == "Convert":  # a zero point constant converted to f32
        inner = node.input_value(0).get_node()
        if inner.get_type_name() == "Constant":
            return np.asarray(inner.get_data()).astype(np.float32)
    return None


def _ranges(fq: Any) -> list[np.ndarray] | None:
    values = [_constant(fq.input_value(i).get_node()) for i in range(1, 5)]
    return None if any(v is None for v in values) else values  # type: ignore[return-value]


def _dequantize_chain(node: Any) -> tuple[Any, str, np.ndarray, np.ndarray] | None:
    """Multiply(Subtract(Convert(Convert(FakeQuantize)), zero point), scale) -- what the ONNX
    frontend makes of QuantizeLinear + DequantizeLinear -- as (FakeQuantize, integer type, zero
    point, scale), or None."""
    if node.get_type_name() != "Multiply":
        return None
    sub, scale = node.input_value(0).get_node(), _constant(node.input_value(1).get_node())
    if sub.get_type_name() != "Subtract" or scale is None:
        return None
    to_float, zero_point = sub.input_value(0).get_node(), _constant(sub.input_value(1).get_node())
    if to_float.get_type_name() != "Convert" or zero_point is None:
        return None
    to_int = to_float.input_value(0).get_node()
    if to_int.get_type_name() != "Convert":
        return None
    fq = to_int.input_value(0).get_node()
    if fq.get_type_name() != "FakeQuantize":
        return None
    return fq, str(to_int.get_attributes()["destination_type"]), zero_point, scale


def _per_tensor(*arrays: np.ndarray) -> bool:
    return all(a.size == 1 for a in arrays)


def _is_identity_pool(node: Any) -> bool:
    if node.get_type_name() not in ("AvgPool", "MaxPool"):
        return False
    a = node.get_attributes()
    return (
        all(int(k) == 1 for k in a.get("kernel", [0]))
        and all(int(s) == 1 for s in a.get("strides", [0]))
        and not any(int(p) for p in a.get("pads_begin", []))
        and not any(int(p) for p in a.get("pads_end", []))
    )


def _drop_requantize(model: Any) -> int:
    done = 0
    for node in model.get_ordered_ops():
        second = _dequantize_chain(node)
        if second is None:
            continue
        fq = second[0]
        source = fq.input_value(0).get_node()
        while source.get_type_name() in _PICKING or _is_identity_pool(source):
            source = source.input_value(0).get_node()
        first = _dequantize_chain(source)
        if first is None:
            continue
        r1, r2 = _ranges(first[0]), _ranges(fq)
        if r1 is None or r2 is None or not _per_tensor(*r1, *r2, first[2], first[3]):
            continue
        same = (
            first[0].get_attributes()["levels"] == fq.get_attributes()["levels"]
            and all(np.array_equal(a, b) for a, b in zip(r1, r2))
            and first[1] == second[1]
            and np.array_equal(first[2], second[2])
            and np.array_equal(first[3], second[3])
        )
        if not same:
            continue
        for target in node.output(0).get_target_inputs():
            target.replace_source_output(fq.input_value(0))
        done += 1
    return done


def _drop_identity_pools(model: Any) -> int:
    done = 0
    for node in model.get_ordered_ops():
        if _is_identity_pool(node):
            for target in node.output(0).get_target_inputs():
                target.replace_source_output(node.input_value(0))
            done += 1
    return done


def _unsign_relu_outputs(model: Any, grid: str) -> int:
    import openvino.opset13 as ops

    done = 0
    for fq in model.get_ordered_ops():
        if fq.get_type_name() != "FakeQuantize" or fq.get_attributes()["levels"] != 256:
            continue
        x = fq.input_value(0)
        if x.get_node().get_type_name() != "Relu":
            continue
        ranges = _ranges(fq)
        if ranges is None or not _per_tensor(*ranges):
            continue
        low, high, out_low, out_high = (np.float32(r.ravel()[0]) for r in ranges)
        if (out_low, out_high) != (-128.0, 127.0) or not low < 0 < high:
            continue
        users = list(fq.output(0).get_target_inputs())
        if len(users) != 1:
            continue
        to_int = users[0].get_node()
        if to_int.get_type_name() != "Convert" or str(
            to_int.get_attributes()["destination_type"]
        ) not in ("i8", "int8_t"):
            continue
        muls = [t.get_node() for t in _after(to_int)]
        chain = [_dequantize_chain(m) for m in muls]
        if not chain or any(c is None or c[0].get_name() != fq.get_name() for c in chain):
            continue
        # zero point 0 and the quantizer's own scale: the interval is [-128 s, 127 s]
        if not all(
            c is not None
            and np.all(c[2] == 0)
            and c[3].size == 1
            and np.isclose(float(c[3].ravel()[0]) * 127, high, rtol=1e-5)
            and np.isclose(float(c[3].ravel()[0]) * -128, low, rtol=1e-5)
            for c in chain
        ):
            continue
        if grid == "fine":
            # [0, T] in 256 levels, dequantized values out (OpenVINO's low-precision
            # transformations make it u8 and the dequantization themselves, as for NNCF's IR)
            t = ops.constant(np.float32(high))
            zero = ops.constant(np.float32(0.0))
            fine = ops.fake_quantize(x, zero, t, zero, t, 256)
            for mul in muls:
                for target in mul.output(0).get_target_inputs():
                    target.replace_source_output(fine.output(0))
            done += 1
            continue
        # FakeQuantize-1 on x >= 0: round((x - low) / (high - low) * 255) - 128 with
        # low = -128 s, high = 127 s is round(x / s) for x <= high and 127 above it; a clamp
        # at `high` and the interval [0, high - low] give the same integers, now unsigned.
        clamp = ops.clamp(x, 0.0, float(high))
        width = np.float32(high - low)
        unsigned = ops.fake_quantize(
            clamp,
            ops.constant(np.float32(0.0)),
            ops.constant(width),
            ops.constant(np.float32(0.0)),
            ops.constant(np.float32(255.0)),
            256,
        )
        convert = ops.convert(unsigned, "u8")
        for target in to_int.output(0).get_target_inputs():
            target.replace_source_output(convert.output(0))
        done += 1
    return done


def _after(node: Any) -> list[Any]:
    """The Multiply at the end of each dequantization that reads `node` (Convert -> Convert ->
    Subtract -> Multiply), as inputs whose node `_dequantize_chain` can read."""
    found = []
    for t in node.output(0).get_target_inputs():
        to_float = t.get_node()
        for s in to_float.output(0).get_target_inputs():
            sub = s.get_node()
            for m in sub.output(0).get_target_inputs():
                found.append(m)
    return found
