"""Bake a bundle's normalization into its ONNX file, for pipelines that feed raw pixels.

DeepStream's nvinfer computes `y = net-scale-factor * (x - offsets[c])`: one scale for every
channel, so ImageNet's per-channel std cannot be expressed in its config. The baked file takes
raw 0..255 pixels (float32, NCHW) in the colour order the pipeline delivers and does the
bundle's exact normalization as its first ops, in the same float32 order as
`vggdeploy.preprocess.preprocess_image`: an optional channel reorder (`Gather` on axis 1), then
`Mul(scale)`, `Sub(mean)`, `Div(std)` with per-channel constants of shape [1, 3, 1, 1]. The
rest of the graph is untouched: in a Q/DQ (INT8) file the first QuantizeLinear stays on the
first convolution's input, now reading the normalized tensor. The file stays self-contained
(constants are initializers) and keeps the input and output names.

`check_baked_parity` runs the baked file on raw pixels and the bundle's file on the bundle's
preprocessed pixels of the same real images, judged with `metrics.TOLERANCES["fp32"]`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vggdeploy.errors import CheckFailedError

__all__ = [
    "NORMALIZED",
    "BakedNormalization",
    "bake_normalization",
    "check_baked_parity",
    "raw_preprocessing",
]

#: the name of the normalized tensor the original graph now reads
NORMALIZED = "vggdeploy_normalized_input"
METADATA_KEY = "vggdeploy.deepstream.baked_normalization"


@dataclass(frozen=True)
class BakedNormalization:
    """What the baked ops do: pixels in `input_order` -> the model's `model_order` tensor."""

    input_order: str  # "RGB" or "BGR": the colour order of the raw pixels fed in
    model_order: str  # the bundle's channel order (what the original graph expects)
    scale: float
    mean: tuple[float, float, float]  # in model_order
    std: tuple[float, float, float]  # in model_order

    @classmethod
    def from_preprocessing(cls, pre: Any, input_order: str) -> BakedNormalization:
        """From a `Preprocessing` (mean/std given in RGB order, as the bundle records them)."""
        flip = pre.channel_order == "BGR"
        mean = tuple(pre.mean[::-1] if flip else pre.mean)
        std = tuple(pre.std[::-1] if flip else pre.std)
        return cls(input_order, pre.channel_order, float(pre.scale), mean, std)  # type: ignore[arg-type]

    def apply(self, raw: np.ndarray) -> np.ndarray:
        """The same computation in NumPy (float32): raw NCHW pixels -> normalized input."""
        x = raw.astype(np.float32)
        if self.input_order != self.model_order:
            x = x[:, ::-1]
        x = x * np.float32(self.scale)
        x = x - np.asarray(self.mean, np.float32).reshape(1, 3, 1, 1)
        return x / np.asarray(self.std, np.float32).reshape(1, 3, 1, 1)

    def to_dict(self) -> dict[str, Any]:
        return {
            "input": f"raw 0..255 pixels, float32, NCHW, {self.input_order}",
            "model_order": self.model_order,
            "scale": self.scale,
            "mean": list(self.mean),
            "std": list(self.std),
        }


def bake_normalization(model: Any, norm: BakedNormalization) -> Any:
    """A copy of `model` (an onnx ModelProto with one image input) whose input is raw pixels.

    The original input keeps its name, type and shape; every node that read it reads
    `NORMALIZED` instead, produced by the prepended ops.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    baked = onnx.ModelProto()
    baked.CopyFrom(model)
    graph = baked.graph
    inits = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise CheckFailedError(f"cannot bake normalization: the model has {len(inputs)} inputs")
    name = inputs[0].name
    if inputs[0].type.tensor_type.elem_type != TensorProto.FLOAT:
        raise CheckFailedError(f"cannot bake normalization: input {name!r} is not float32")
    taken = {o for n in graph.node for o in n.output} | inits | {NORMALIZED}
    if any(f"{NORMALIZED}_{s}" in taken for s in ("order", "scaled", "centred")):
        raise CheckFailedError(f"cannot bake normalization: {NORMALIZED}_* names are taken")
    for node in graph.node:
        for i, used in enumerate(node.input):
            if used == name:
                node.input[i] = NORMALIZED
    for out in graph.output:  # an identity model: the output was the input itself
        if out.name == name:
            raise CheckFailedError("cannot bake normalization: the input is also an output")

    def const(suffix: str, values: Any, dtype: Any = np.float32, shape: Any = (1, 3, 1, 1)) -> str:
        tensor = numpy_helper.from_array(
            np.asarray(values, dtype).reshape(shape), f"{NORMALIZED}_{suffix}_const"
        )
        graph.initializer.append(tensor)
        return tensor.name

    nodes = []
    current = name
    if norm.input_order != norm.model_order:
        nodes.append(
            helper.make_node(
                "Gather",
                [current, const("order", [2, 1, 0], np.int64, (3,))],
                [f"{NORMALIZED}_order"],
                name="vggdeploy_channel_order",
                axis=1,
            )
        )
        current = f"{NORMALIZED}_order"
    steps = [
        ("Mul", "scale", [norm.scale] * 3, f"{NORMALIZED}_scaled"),
        ("Sub", "mean", norm.mean, f"{NORMALIZED}_centred"),
        ("Div", "std", norm.std, NORMALIZED),
    ]
    for op, what, values, out in steps:
        nodes.append(
            helper.make_node(op, [current, const(what, values)], [out], name=f"vggdeploy_{what}")
        )
        current = out
    old = list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes + old)
    entry = baked.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(norm.to_dict())
    return baked


def raw_preprocessing(pre: Any, order: str) -> Any:
    """The bundle's resize and crop with no normalization: raw 0..255 pixels in `order`."""
    from vggdeploy.preprocess import Preprocessing

    return Preprocessing(
        resize=pre.resize,
        crop=pre.crop,
        mean=(0.0, 0.0, 0.0),
        std=(1.0, 1.0, 1.0),
        channel_order=order,
        interpolation=pre.interpolation,
        scale=1.0,
    )


def check_baked_parity(
    original: str | Path,
    baked: bytes,
    pre: Any,
    norm: BakedNormalization,
    images: Sequence[Path],
    *,
    batch: int | None = None,
) -> dict[str, float]:
    """Run both files on `images` (baked: raw pixels; original: the bundle's preprocessing);
    raise `CheckFailedError` outside the fp32 tolerance. Returns the comparison figures.

    `batch`: a fixed batch the model was exported with (None: all images in one call).
    """
    from vggdeploy.metrics import TOLERANCES, compare_outputs
    from vggdeploy.ortsession import cpu_session
    from vggdeploy.preprocess import load_batch

    raw = load_batch(images, raw_preprocessing(pre, norm.input_order))
    ref_in = load_batch(images, pre)
    figures_in = compare_outputs(ref_in, norm.apply(raw))  # the NumPy form, as a sanity check
    ref_session, baked_session = cpu_session(original), cpu_session(baked)
    name = ref_session.get_inputs()[0].name

    def run(session: Any, x: np.ndarray) -> np.ndarray:
        step = batch or len(x)
        outs = []
        for start in range(0, len(x), step):
            chunk = x[start : start + step]
            if len(chunk) < step:  # a fixed batch: pad with the first image, drop it after
                chunk = np.concatenate([chunk, np.repeat(chunk[:1], step - len(chunk), 0)])
            outs.append(session.run(None, {name: chunk})[0][: len(x) - start])
        return np.concatenate(outs)

    ref, got = run(ref_session, ref_in), run(baked_session, raw)
    figures = compare_outputs(ref, got)
    limits = TOLERANCES["fp32"]
    failed = [
        f"{metric} {figures[metric]:.3g} (limit {limit:g})"
        for metric, limit in limits.items()
        if (figures[metric] > limit if metric != "cosine" else figures[metric] < limit)
    ]
    if figures_in["max_abs"] > 1e-5:
        failed.append(f"input max_abs {figures_in['max_abs']:.3g}")
    if failed:
        raise CheckFailedError(
            f"the baked-normalization ONNX does not match the bundle's model on "
            f"{len(images)} images: {', '.join(failed)}; nothing written"
        )
    return figures
