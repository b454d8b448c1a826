"""Why a service disagrees with its bundle: re-run the bundle's reference under the usual
mistakes and see which one the service's answers match.

The mistakes are the ones behind "the deployed model answers differently" reports: the channel
order swapped (RGB/BGR), the normalization left out (pixels in 0..1, or 0..255), the
normalization applied twice, and the label list off by one. Each is a hypothesis: the
reference (PyTorch fp32, as `validate`) runs on the same images preprocessed that way, and the
service's answers are judged against it with the same tolerances `validate` uses; the first
hypothesis that passes is named as the likely cause.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from vggdeploy.metrics import compare_outputs
from vggdeploy.preprocess import Preprocessing, preprocess_image
from vggdeploy.runtimes.base import infer_array
from vggdeploy.runtimes.registry import REFERENCE, RuntimeSpec, open_runtime
from vggdeploy.validate import judge

if TYPE_CHECKING:
    from vggdeploy.bundle import Bundle

#: the key of the reference preprocessed exactly as the bundle says
AS_BUNDLE = "as the bundle says"


def _swap_channels(img: Any, pre: Preprocessing) -> np.ndarray:
    flipped = "BGR" if pre.channel_order == "RGB" else "RGB"
    return preprocess_image(img, dataclasses.replace(pre, channel_order=flipped))


def _no_normalization(img: Any, pre: Preprocessing) -> np.ndarray:
    return preprocess_image(img, dataclasses.replace(pre, mean=(0.0,) * 3, std=(1.0,) * 3))


def _raw_pixels(img: Any, pre: Preprocessing) -> np.ndarray:
    return preprocess_image(
        img, dataclasses.replace(pre, scale=1.0, mean=(0.0,) * 3, std=(1.0,) * 3)
    )


def _double_normalization(img: Any, pre: Preprocessing) -> np.ndarray:
    x = preprocess_image(img, pre)
    order = slice(None, None, -1) if pre.channel_order == "BGR" else slice(None)
    mean = np.asarray(pre.mean, np.float32)[order][:, None, None]
    std = np.asarray(pre.std, np.float32)[order][:, None, None]
    return (x - mean) / std


#: hypothesis -> how an image would have been preprocessed under it
INPUT_HYPOTHESES: dict[str, Callable[[Any, Preprocessing], np.ndarray]] = {
    "channel order swapped (RGB <-> BGR)": _swap_channels,
    "normalization missing (pixels scaled to 0..1, no mean/std)": _no_normalization,
    "normalization and scaling missing (raw 0..255 pixels)": _raw_pixels,
    "normalization applied twice": _double_normalization,
}
LABEL_SHIFTS = (1, -1)


def label_hypothesis(shift: int) -> str:
    return (
        f"labels shifted by {shift:+d} (the service's class i is the bundle's class i{-shift:+d})"
    )


def reference_table(
    bundle: Bundle, images: Sequence[Any], reference: RuntimeSpec = REFERENCE
) -> dict[str, np.ndarray]:
    """The reference's logits for `images` (RGB Pillow images) as the bundle says
    (`AS_BUNDLE`) and under every hypothesis."""
    pre = bundle.preprocessing
    table: dict[str, np.ndarray] = {}
    with open_runtime(bundle, reference) as runtime:
        table[AS_BUNDLE] = infer_array(
            runtime, np.stack([preprocess_image(i, pre) for i in images])
        )
        for name, fn in INPUT_HYPOTHESES.items():
            table[name] = infer_array(runtime, np.stack([fn(i, pre) for i in images]))
    for shift in LABEL_SHIFTS:
        table[label_hypothesis(shift)] = np.roll(table[AS_BUNDLE], shift, axis=1)
    return table


def likely_cause(
    table: Mapping[str, np.ndarray], got: np.ndarray, limits: Mapping[str, float]
) -> str | None:
    """The first hypothesis whose reference the service's answers `got` pass with `limits`
    (the served precision's tolerances), or None when none does."""
    if not limits:
        return None
    for name, ref in table.items():
        if name == AS_BUNDLE or ref.shape != got.shape:
            continue
        if all(c.passed for c in judge(name, compare_outputs(ref, got), limits)):
            return name
    return None
