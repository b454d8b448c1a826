"""The one constructor of CPU ONNX Runtime sessions used for checks inside the toolchain
(export parity, FP16 measurement, calibration passes, held-out comparisons, bench's bare loop).

Runtimes the user picks (`onnxruntime:cuda` ...) go through `vggdeploy.runtimes.onnxrt`; this is
for the toolchain's own work on the CPU, where a provider choice would only get in the way.
"""

from __future__ import annotations

import functools
import logging
import os
from typing import Any

from vggdeploy.errors import InputError, RuntimeUnavailableError
from vggdeploy.host import install_hint

log = logging.getLogger(__name__)

INSTALL_HINT = install_hint("onnxruntime")


def import_ort() -> Any:
    """`onnxruntime`, or one error line saying how to install it."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise RuntimeUnavailableError(f"ONNX Runtime is not installed: {INSTALL_HINT}") from None
    return ort


def cpu_session(
    model: str | os.PathLike[str] | bytes,
    *,
    threads: int | None = None,
    optimize: bool = True,
    memory_arena: bool = True,
    optimized_model_path: str | os.PathLike[str] | None = None,
    prepack: bool = True,
) -> Any:
    """An `InferenceSession` on ONNX Runtime's CPU provider.

    Args:
        model: a path, or serialized ONNX bytes.
        threads: `intra_op_num_threads` (None: ONNX Runtime's default).
        optimize: False measures the graph as written (no fusions hide intermediate tensors).
        memory_arena: False returns each run's buffers to the allocator (keeps calibration
            passes over many batches flat in memory).
        optimized_model_path: write ONNX Runtime's optimized graph there (to count fused kernels).
        prepack: False skips repacking the weights for the GEMM kernels: a quarter less session
            time on VGG-16 for a session that runs a few batches (the export's parity check).
    """
    ort = import_ort()
    options = ort.SessionOptions()
    # ONNX Runtime's own warnings only at -vv.
    options.log_severity_level = 2 if log.isEnabledFor(logging.DEBUG) else 3
    if threads:
        options.intra_op_num_threads = threads
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    if not memory_arena:
        options.enable_cpu_mem_arena = False
    if not prepack:
        options.add_session_config_entry("session.disable_prepacking", "1")
    if optimized_model_path is not None:
        options.optimized_model_filepath = str(optimized_model_path)
    source = model if isinstance(model, bytes) else str(model)
    try:
        return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        where = "the model" if isinstance(model, bytes) else str(model)
        raise InputError(f"ONNX Runtime cannot load {where}: {first}") from None


@functools.cache
def cpu_computes_fp16() -> bool:
    """Whether ONNX Runtime's CPU provider on this host runs fp16 convolutions in fp16.

    ONNX Runtime's InsertCastTransformer (onnxruntime/core/optimizer/insert_cast_transformer.cc)
    casts the inputs of an fp16 node with no fp16 CPU kernel up to float32, and its
    RemoveDuplicateCastTransformer drops the cast pairs between such nodes, so a chain of them
    runs in float32; a build with fp16 kernels for an op (MLAS's fp16 paths, e.g. on Arm64) runs
    it in fp16. Which applies depends on the build and the CPU, so it is measured: two 1x1 fp16
    convolutions, x2 then x0.5, on 40000 - in fp16 the middle value (80000) overflows to inf, in
    float32 the output is 40000 again.
    """
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    def conv(name: str, x: str, y: str, scale: float) -> tuple[Any, Any]:
        w = numpy_helper.from_array(np.full((1, 1, 1, 1), scale, np.float16), f"{name}_w")
        return helper.make_node("Conv", [x, w.name], [y], name=name), w

    c1, w1 = conv("c1", "h", "m", 2.0)
    c2, w2 = conv("c2", "m", "o", 0.5)
    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["x"], ["h"], to=TensorProto.FLOAT16),
            c1,
            c2,
            helper.make_node("Cast", ["o"], ["y"], to=TensorProto.FLOAT),
        ],
        "fp16_probe",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 1, 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 1, 1])],
        [w1, w2],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    session = cpu_session(model.SerializeToString())
    out = session.run(None, {"x": np.full((1, 1, 1, 1), 40000.0, np.float32)})[0]
    return not bool(np.isfinite(out).all())
