"""FP32 ONNX -> FP16 ONNX with float32 inputs and outputs, keeping overflowing ops in fp32.

The conversion is onnxconverter-common's `convert_float_to_float16` with `keep_io_types=True`
(its output passes the ONNX checker; ONNX Runtime's bundled copy of the converter did not).
Before converting, the fp32 model runs on calibration-like inputs (random pixels, or real images
through the bundle's preprocessing) with every intermediate tensor exposed as an output, one
batch at a time, and the largest |activation| of each tensor is compared with the fp16 range
(65504). A tensor that overflows, or comes within the safety `headroom` of overflowing, keeps
its producer and its consumers in fp32, so the value never passes through an fp16 tensor; a
node whose weights do not fit in fp16 is kept too. Every kept node is reported with its reason.

ONNX Runtime's CPU provider, where it has no fp16 kernel for these ops (x86-64 builds), inserts
casts to float32 around them and then removes the cast pairs between neighbouring ops, so the
whole network runs in fp32 with fp16-rounded weights (measured: a model whose activations reach
7e5 still gives finite, fp32-close logits on the CPU after a naive conversion). The CPU parity
recorded here then checks weight rounding only, not fp16 arithmetic or overflow; the activation
measurement covers overflow, and real fp16 numerics need the GPU (TensorRT or CUDA). Builds with
fp16 convolution kernels (Arm64) do compute in fp16: `ortsession.cpu_computes_fp16` measures
which applies, and the recorded note says so.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from vggdeploy import precision as P
from vggdeploy.bundle import Bundle, atomic_path, library_versions
from vggdeploy.errors import CheckFailedError, InputError
from vggdeploy.exporter.fp16_measure import (
    FP16_MAX,
    fixed_batch,
    measure_activations,
    measurement_inputs,
    weight_ranges,
)
from vggdeploy.metrics import TOLERANCES, compare_arrays
from vggdeploy.onnxutil import Background, name_nodes, set_metadata, value_types
from vggdeploy.ortsession import cpu_computes_fp16, cpu_session, import_ort

log = logging.getLogger(__name__)

ARTIFACT_KEY = P.onnx_key("fp16")
FILE_NAME = P.onnx_file("fp16")
#: keep a tensor in fp32 when max|activation| * headroom reaches the fp16 maximum: the inputs we
#: measure are a sample, and deployment data can be larger than anything in it
DEFAULT_HEADROOM = 2.0
DEFAULT_SAMPLES = 64
DEFAULT_BATCH_SIZE = 8
# fp16 vs fp32 on ONNX Runtime CPU (weight rounding only, see the module docstring): the same
# fp16 tolerances `vggdeploy validate` judges by.
PARITY_MAX_REL = TOLERANCES["fp16"]["max_rel"]
PARITY_MIN_COSINE = TOLERANCES["fp16"]["cosine"]
CPU_CAVEAT = (
    "ONNX Runtime's CPU provider here does not compute in fp16: it casts fp16 ops up to fp32 and "
    "drops the casts between them, so activations stay fp32 and this CPU parity only checks "
    "weight rounding (an fp16 overflow would not show here: that is what the activation "
    "measurement is for); check fp16 accuracy on the GPU (TensorRT or ONNX Runtime CUDA)"
)
#: the note when the probe finds fp16 convolution kernels on this host's CPU provider
CPU_FP16_NOTE = (
    "ONNX Runtime's CPU provider here runs fp16 convolutions in fp16 (measured by "
    "ortsession.cpu_computes_fp16), so this CPU parity includes fp16 arithmetic; the target GPU's "
    "kernels still differ: check fp16 accuracy there (TensorRT or ONNX Runtime CUDA)"
)


def cpu_note() -> str:
    """What this host's CPU parity check of the fp16 model covers (`CPU_CAVEAT` or
    `CPU_FP16_NOTE`, as `ortsession.cpu_computes_fp16` measures)."""
    return CPU_FP16_NOTE if cpu_computes_fp16() else CPU_CAVEAT


def convert_fp16(
    bundle: Bundle,
    *,
    keep_fp32_ops: Sequence[str] = (),
    keep_fp32_nodes: Sequence[str] = (),
    images: str | os.PathLike[str] | None = None,
    samples: int = DEFAULT_SAMPLES,
    batch_size: int = DEFAULT_BATCH_SIZE,
    seed: int = 0,
    headroom: float = DEFAULT_HEADROOM,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Write `model.fp16.onnx` into `bundle`, record it as `onnx.fp16`, and return the report.

    Args:
        keep_fp32_ops: op types (e.g. "Gemm") to keep in fp32 in addition to the automatic ones.
        keep_fp32_nodes: node names to keep in fp32.
        images: a folder of images to measure activations on (through the bundle's
            preprocessing); None uses seeded random pixels.
        samples: how many images (or random inputs) to run; images are drawn with `seed`.
        headroom: keep a tensor in fp32 when max|activation| * headroom >= 65504.
        progress: called with (done, total) after every measured batch.

    Raises `CheckFailedError` (nothing written) when the converted model is not finite or
    disagrees with fp32 beyond the fp16 tolerance on ONNX Runtime CPU.
    """
    import onnx

    if samples < 1:
        raise InputError(f"samples {samples} must be at least 1")
    if batch_size < 1:
        raise InputError(f"batch size {batch_size} must be at least 1")
    if not 1.0 <= headroom <= 1e6:
        raise InputError(f"headroom {headroom} must be a number from 1 (no safety margin) to 1e6")
    started = time.perf_counter()
    fp32_path = bundle.artifact_path(P.onnx_key("fp32"), verify=True)
    model = onnx.load(str(fp32_path))
    name_nodes(model)
    _check_keep_lists(model, keep_fp32_ops, keep_fp32_nodes)

    batch_size = fixed_batch(bundle) or batch_size
    data = measurement_inputs(bundle, images, samples, batch_size, seed)
    measured = measure_activations(
        model,
        data["batches"](),
        bundle.input_name,
        bundle.output_name,
        total=data["count"],
        progress=progress,
    )
    weights = weight_ranges(model)
    blocked = choose_fp32_nodes(model, measured["max_abs"], weights, headroom)
    for name in keep_fp32_nodes:
        blocked.setdefault(name, []).append("asked (--keep-fp32)")
    for node in model.graph.node:
        if node.op_type in keep_fp32_ops:
            blocked.setdefault(node.name, []).append(f"asked (--keep-fp32 {node.op_type})")

    activations = _activation_table(model, measured["max_abs"], headroom)
    kept = [
        {"node": name, "op": _op_of(model, name), "reasons": reasons}
        for name, reasons in sorted(blocked.items())
    ]
    fp16_model = to_fp16(model, keep_fp32_nodes=sorted(blocked), inplace=True)
    del model
    set_metadata(fp16_model, "precision", "fp16")
    dest = bundle.root / FILE_NAME
    with bundle.writing(dest.name):
        with atomic_path(dest) as tmp:
            onnx.save(fp16_model, str(tmp))
            del fp16_model
            # ONNX Runtime builds the parity session on a thread while the checker runs (both C++).
            with Background(lambda: cpu_session(tmp)) as session:
                onnx.checker.check_model(str(tmp), full_check=True)
                parity = _check_parity(
                    bundle, session.result(), data["batches"](), measured["reference"]
                )
            if not parity["passed"]:
                raise CheckFailedError(
                    f"the fp16 model disagrees with fp32 on ONNX Runtime CPU (max rel diff "
                    f"{parity['max_rel']:.2e} > {PARITY_MAX_REL:g} or cosine {parity['cosine']:.6f} "
                    f"< {PARITY_MIN_COSINE}{', non-finite outputs' if not parity['finite'] else ''}); "
                    f"nothing was written: keep more ops in fp32 (--keep-fp32 OP) or measure on "
                    "real images (--images DIR)"
                )

        report: dict[str, Any] = {
            "precision": "fp16",
            "converter": "onnxconverter_common.float16.convert_float_to_float16 (keep_io_types=True)",
            "versions": library_versions("onnx", "onnxconverter-common", "onnxruntime"),
            "measured_on": data["description"],
            "fp16_max": FP16_MAX,
            "headroom": headroom,
            "max_abs_activation": max((a["max_abs"] for a in activations), default=0.0),
            "activations": activations,
            "weights": weights["summary"],
            "kept_fp32": kept,
            "parity": parity,
            "note": cpu_note(),
            "seconds": round(time.perf_counter() - started, 2),
        }
        bundle.add_artifact(
            ARTIFACT_KEY,
            FILE_NAME,
            kind="onnx",
            precision="fp16",
            source=P.onnx_key("fp32"),
            io_dtype="float32",
            kept_fp32=[k["node"] for k in report["kept_fp32"]],
            measured_on=report["measured_on"],
            max_abs_activation=report["max_abs_activation"],
            parity=parity,
            note=report["note"],
        )
    return report


# -- conversion -------------------------------------------------------------------------------


def to_fp16(
    model: Any,
    *,
    keep_fp32_ops: Sequence[str] = (),
    keep_fp32_nodes: Sequence[str] = (),
    inplace: bool = False,
) -> Any:
    """onnxconverter-common's fp16 conversion with float32 I/O; returns the fp16 ModelProto.

    Weights are rounded to fp16 without the converter's default clamp at 1e4 (values up to
    65504 are representable); a node whose weights exceed 65504 must be in `keep_fp32_nodes`.
    `inplace` converts `model` itself instead of a copy (saves the model's size in memory).
    """
    import copy

    from onnxconverter_common.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    if not inplace:
        model = copy.deepcopy(model)
    # The dynamo exporter lists initializers in value_info too. The converter then types them
    # float16 before it handles blocked nodes, and a blocked node gets fp16-rounded (and
    # clamped) weights behind a Cast instead of its original fp32 ones. Initializers carry
    # their own type, so these entries are redundant: drop them.
    weights = {init.name for init in model.graph.initializer}
    kept = [v for v in model.graph.value_info if v.name not in weights]
    del model.graph.value_info[:]
    model.graph.value_info.extend(kept)
    with warnings.catch_warnings():
        # "the float32 number ... will be truncated": tiny weights become fp16 subnormals; we
        # report those counts ourselves (weight_ranges) instead of one warning per tensor.
        warnings.filterwarnings("ignore", message="the float32 number")
        types = value_types(model)  # inferred only when value_info is incomplete
        complete = all(out in types for node in model.graph.node for out in node.output if out)
        return convert_float_to_float16(
            model,
            disable_shape_infer=complete,
            keep_io_types=True,
            max_finite_val=FP16_MAX,
            op_block_list=list(DEFAULT_OP_BLOCK_LIST) + list(keep_fp32_ops),
            node_block_list=list(keep_fp32_nodes),
        )


def choose_fp32_nodes(
    model: Any, max_abs: dict[str, float], weights: dict[str, Any], headroom: float
) -> dict[str, list[str]]:
    """Node name -> reasons, for every node that must stay in fp32.

    A tensor whose max |activation| * headroom reaches the fp16 maximum (or that is not finite
    already in fp32) keeps its producer and all its consumers in fp32: between them the tensor
    then stays float32, which is what the converter's cast removal gives when both sides are
    blocked. Graph inputs are cast to fp16 right away, so an overflowing input blocks its
    consumers.
    """
    limit = FP16_MAX / headroom
    blocked: dict[str, list[str]] = {}
    producers = {out: node for node in model.graph.node for out in node.output}
    consumers: dict[str, list[Any]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    for tensor, value in max_abs.items():
        if np.isfinite(value) and value < limit:
            continue
        what = "not finite in fp32" if not np.isfinite(value) else f"{value:.4g}"
        reason = (
            f"activation {tensor} max |x| {what} >= {limit:.6g} (65504 / headroom {headroom:g})"
        )
        nodes = ([producers[tensor]] if tensor in producers else []) + consumers.get(tensor, [])
        for node in nodes:
            blocked.setdefault(node.name, []).append(reason)
    for name, record in weights["tensors"].items():
        if record["max_abs"] <= FP16_MAX:
            continue
        for node in consumers.get(name, []):
            blocked.setdefault(node.name, []).append(
                f"weight {name} max |w| {record['max_abs']:.4g} > 65504"
            )
    return blocked


# -- measuring --------------------------------------------------------------------------------


# -- checking ---------------------------------------------------------------------------------


def _check_parity(
    bundle: Bundle, session: Any, batches: Iterable[np.ndarray], reference: list[np.ndarray]
) -> dict[str, Any]:
    """Run the fp16 file's ONNX Runtime CPU `session` against the fp32 logits of the batches."""
    ort = import_ort()
    got = [session.run([bundle.output_name], {bundle.input_name: batch})[0] for batch in batches]
    del session
    ref = np.concatenate(reference)
    out = np.concatenate(got)
    finite = bool(np.all(np.isfinite(out)))
    figures = (
        compare_arrays(ref, out)
        if finite
        else {"max_abs": float("inf"), "max_rel": float("inf"), "cosine": 0.0}
    )
    agree = float(np.mean(ref.argmax(1) == out.argmax(1))) if finite else 0.0
    passed = (
        finite and figures["max_rel"] <= PARITY_MAX_REL and figures["cosine"] >= PARITY_MIN_COSINE
    )
    return {
        "reference": "onnx.fp32 on ONNX Runtime CPU",
        "runtime": f"onnxruntime {ort.__version__} CPU (CPUExecutionProvider)",
        "images": int(len(ref)),
        **figures,
        "top1_agreement": agree,
        "finite": finite,
        "thresholds": {"max_rel": PARITY_MAX_REL, "min_cosine": PARITY_MIN_COSINE},
        "passed": bool(passed),
        "note": cpu_note(),
    }


# -- helpers ----------------------------------------------------------------------------------


def split_keep_fp32(bundle: Bundle, names: Sequence[str]) -> tuple[list[str], list[str]]:
    """Sort `--keep-fp32` entries into op types and node names of the bundle's fp32 model.

    An entry that is neither raises `InputError` listing the op types the model has.
    """
    if not names:
        return [], []
    import onnx

    model = onnx.load(str(bundle.artifact_path(P.onnx_key("fp32"))), load_external_data=False)
    name_nodes(model)
    op_types = {n.op_type for n in model.graph.node}
    ops = [n for n in names if n in op_types]
    nodes = [n for n in names if n not in op_types]
    _check_keep_lists(model, ops, nodes)
    return ops, nodes


def _check_keep_lists(model: Any, ops: Sequence[str], nodes: Sequence[str]) -> None:
    op_types = sorted({n.op_type for n in model.graph.node})
    names = {n.name for n in model.graph.node}
    unknown_ops = [op for op in ops if op not in op_types]
    if unknown_ops:
        raise InputError(
            f"--keep-fp32 {', '.join(unknown_ops)}: no such op type in this model "
            f"(it has {', '.join(op_types)}; names are case-sensitive ONNX op types)"
        )
    unknown_nodes = [n for n in nodes if n not in names]
    if unknown_nodes:
        raise InputError(
            f"--keep-fp32 {', '.join(unknown_nodes)}: neither an op type nor a node name of "
            f"this model (its op types: {', '.join(op_types)}; names are case-sensitive)"
        )


def _op_of(model: Any, name: str) -> str:
    for node in model.graph.node:
        if node.name == name:
            return node.op_type
    return "?"


def _activation_table(
    model: Any, max_abs: dict[str, float], headroom: float
) -> list[dict[str, Any]]:
    """One row per measured tensor, in graph order: producer, max |x|, share of the fp16 range."""
    producers = {out: node for node in model.graph.node for out in node.output}
    order = [model.graph.input[0].name] + [o for n in model.graph.node for o in n.output]
    rows = []
    for name in order:
        if name not in max_abs:
            continue
        value = max_abs[name]
        node = producers.get(name)
        rows.append(
            {
                "tensor": name,
                "node": node.name if node is not None else "(graph input)",
                "op": node.op_type if node is not None else "Input",
                "max_abs": value if np.isfinite(value) else float("inf"),
                "fraction_of_fp16_max": value / FP16_MAX if np.isfinite(value) else float("inf"),
                "overflow_risk": not (np.isfinite(value) and value * headroom < FP16_MAX),
            }
        )
    return rows
