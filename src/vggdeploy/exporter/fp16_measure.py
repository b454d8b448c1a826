"""Measuring what FP16 conversion must respect: the largest |activation| of every tensor of the
fp32 model on sample inputs, and the range of its weights (see `vggdeploy.exporter.fp16`)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from vggdeploy.bundle import Bundle
from vggdeploy.onnxutil import serialize_with_outputs, value_types
from vggdeploy.ortsession import cpu_session
from vggdeploy.preprocess import find_images, iter_batches

FP16_MAX = 65504.0  # largest finite float16
FP16_MIN_NORMAL = 6.103515625e-05  # smaller magnitudes are subnormal in fp16 (fewer bits)


def measure_activations(
    model: Any,
    batches: Iterable[np.ndarray],
    input_name: str,
    output_name: str,
    *,
    total: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Max |value| of the input and of every float tensor the model computes, over `batches`.

    Every intermediate float tensor is exposed as a graph output (of the serialized model); each
    batch's values are reduced to one number per tensor and dropped, so memory stays at one
    batch of activations whatever the number of samples. Also returns the fp32 logits of every
    batch (`reference`), for the parity check.
    """
    import onnx

    known = value_types(model)
    existing = {o.name for o in model.graph.output}
    names = [
        out
        for node in model.graph.node
        for out in node.output
        if out not in existing and known.get(out) == onnx.TensorProto.FLOAT
    ]
    serialized = serialize_with_outputs(model, names)
    # Fusions would hide the tensors we ask for; measure the graph as written.
    session = cpu_session(serialized, optimize=False)
    del serialized
    fetch = [output_name, *names]
    max_abs: dict[str, float] = {input_name: 0.0, output_name: 0.0, **dict.fromkeys(names, 0.0)}
    reference = []
    done = 0
    for batch in batches:
        results = session.run(fetch, {input_name: batch})
        max_abs[input_name] = max(max_abs[input_name], _max_abs(batch))
        for name, value in zip(fetch, results):
            max_abs[name] = max(max_abs[name], _max_abs(value))
        reference.append(results[0])
        del results
        done += 1
        if progress:
            progress(done, total)
    return {"max_abs": max_abs, "reference": reference, "batches": done}


def _max_abs(array: np.ndarray) -> float:
    if array.size == 0:
        return 0.0
    if not np.all(np.isfinite(array)):
        return float("inf")
    return float(np.max(np.abs(array)))


def weight_ranges(model: Any) -> dict[str, Any]:
    """Per float initializer: max |w|; and how many weights fp16 clamps or stores as subnormals."""
    from onnx import numpy_helper

    tensors: dict[str, dict[str, float]] = {}
    total = over = subnormal = 0
    # Two reductions and one integer pass a tensor, no |w| copy unless a weight is out of range
    # (measured on VGG-16: 0.6 s instead of 2 s); the counts are those of |w| compared as floats.
    normal_bits = np.float32(FP16_MIN_NORMAL).view(np.int32)
    for init in model.graph.initializer:
        if init.data_type != 1:  # FLOAT
            continue
        w = np.ascontiguousarray(numpy_helper.to_array(init), dtype=np.float32).ravel()
        hi, lo = (float(w.max()), float(w.min())) if w.size else (0.0, 0.0)
        if hi <= FP16_MAX and lo >= -FP16_MAX:
            max_abs = max(hi, -lo, 0.0)
        else:  # beyond fp16's range, inf or NaN
            a = np.abs(w)
            max_abs = float(a.max(initial=0.0))
            over += int(np.count_nonzero(a > FP16_MAX))
        tensors[init.name] = {"max_abs": max_abs}
        total += w.size
        bits = w.view(np.int32) & 0x7FFFFFFF  # |w|'s bits: 0 < |w| < min normal, NaN excluded
        subnormal += int(np.count_nonzero((bits > 0) & (bits < normal_bits)))
    return {
        "tensors": tensors,
        "summary": {
            "count": total,
            "max_abs": max((t["max_abs"] for t in tensors.values()), default=0.0),
            "over_fp16_max": over,
            "subnormal_in_fp16": subnormal,
            "subnormal_fraction": subnormal / total if total else 0.0,
        },
    }


def measurement_inputs(
    bundle: Bundle,
    images: str | os.PathLike[str] | None,
    samples: int,
    batch_size: int,
    seed: int,
) -> dict[str, Any]:
    """A re-iterable source of input batches and a description for the report."""
    pre = bundle.preprocessing
    size = bundle.manifest.model.image_size
    fixed = fixed_batch(bundle)
    if images is None:

        def random_batches() -> Iterator[np.ndarray]:
            rng = np.random.default_rng(seed)
            mean = np.asarray(pre.mean, np.float32).reshape(1, 3, 1, 1)
            std = np.asarray(pre.std, np.float32).reshape(1, 3, 1, 1)
            for start in range(0, samples, batch_size):
                n = min(batch_size, samples - start)
                # Uniform pixels in [0, 1], normalised like real images: the same value range.
                pixels = rng.random((n, 3, size, size), dtype=np.float32)
                yield pad_batch(((pixels - mean) / std).astype(np.float32), fixed)

        return {
            "batches": random_batches,
            "description": {"source": "random pixels", "samples": samples, "seed": seed},
            "count": -(-samples // batch_size),
        }

    paths = find_images(images)
    if len(paths) > samples:
        rng = np.random.default_rng(seed)
        paths = [paths[i] for i in sorted(rng.choice(len(paths), samples, replace=False))]

    def image_batches() -> Iterator[np.ndarray]:
        for _, batch in iter_batches(paths, pre, batch_size):
            yield pad_batch(batch, fixed)

    return {
        "batches": image_batches,
        "description": {
            "source": "images",
            "folder": str(Path(images)),
            "samples": len(paths),
            "seed": seed,
        },
        "count": -(-len(paths) // batch_size),
    }


def pad_batch(batch: np.ndarray, fixed: int | None) -> np.ndarray:
    """A fixed-batch model needs full batches: repeat the last image (it does not change max)."""
    if fixed is None or len(batch) == fixed:
        return batch
    reps = np.repeat(batch[-1:], fixed - len(batch), axis=0)
    return np.concatenate([batch, reps])


def fixed_batch(bundle: Bundle) -> int | None:
    dim = bundle.manifest.input.shape[0]
    return dim if isinstance(dim, int) and dim > 0 else None
