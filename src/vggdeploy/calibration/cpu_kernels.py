"""Which int8 weight range suits this CPU's ONNX Runtime kernels, chosen by measurement.

ONNX Runtime runs a fused Q/DQ model (QLinearConv, QGemm) with its u8s8 integer kernels: int8
activations are shifted to uint8 and multiplied by int8 weights. With VNNI (`vpdpbusd`), AMX or
Arm's dot product the products go straight into int32. Without them (AVX2, AVX-512 without
VNNI) the kernel adds pairs of u8 x s8 products in int16 (`vpmaddubsw`), which saturates once
|w| > 63 meets large activations (255 * 127 * 2 > 32767): on those CPUs fused int8 loses
accuracy that the unfused model does not. ONNX Runtime documents the remedy: 7-bit weights
("reduce range", [-63, 63]: 255 * 63 * 2 < 32767) or u8u8.

`calibrate` therefore, on a CPU without an int8 dot product, writes both the 8-bit and the 7-bit
weight file, runs each on the held-out images through ORT CPU with fused kernels, and keeps the
one that agrees better with fp32 (`choose`: better top-1 agreement, or equal top-1 and a mean
cosine at least `MIN_COSINE_GAIN` higher without a worse worst image; anything else is a tie,
and ties keep full-range 8-bit weights). With a dot product there is nothing to remedy: 8-bit,
unmeasured. The choice, the CPU and the figures go into the artifact's manifest record
(`cpu_kernels`).

TensorRT's GPU kernels accumulate in int32 and never saturate: a 7-bit file is still valid for
TensorRT (values in [-63, 63] are valid int8, scales per channel as usual) but keeps half the
weight resolution there, so rebuild on a VNNI/GPU host with `--weight-bits 8` when TensorRT is
the target that matters.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from vggdeploy.errors import InputError
from vggdeploy.host import CpuInfo

WEIGHT_BITS_CHOICES = ("auto", "8", "7")
MIN_COSINE_GAIN = 1e-4

TENSORRT_NOTE = (
    "TensorRT's GPU int8 kernels do not saturate: 7-bit weights are valid int8 there but keep "
    "half the weight resolution (rebuild with --weight-bits 8 for a TensorRT-only deployment)"
)


def parse_weight_bits(value: int | str) -> int | None:
    """8 or 7, or None for "auto"; InputError otherwise."""
    text = str(value).strip().lower()
    if text not in WEIGHT_BITS_CHOICES:
        raise InputError(
            f"--weight-bits {value!r}: use one of {', '.join(WEIGHT_BITS_CHOICES)} "
            "(auto: 7 only where it measurably helps on a CPU without VNNI)"
        )
    return None if text == "auto" else int(text)


def candidates(requested: int | str, cpu: CpuInfo, can_measure: bool) -> list[int]:
    """Weight widths to write and measure, the default (8) first."""
    bits = parse_weight_bits(requested)
    if bits is not None:
        return [bits]
    if cpu.int8_dot_product or not can_measure:
        return [8]
    return [8, 7]


def choose(figures: Mapping[int, Mapping[str, float]]) -> int:
    """The weight width whose held-out figures agree better with fp32; ties -> 8."""
    if 7 not in figures or 8 not in figures:
        return next(iter(figures))
    full, reduced = figures[8], figures[7]
    if reduced["top1_agreement"] != full["top1_agreement"]:
        return 7 if reduced["top1_agreement"] > full["top1_agreement"] else 8
    gain = reduced["cosine_mean"] - full["cosine_mean"]
    if gain >= MIN_COSINE_GAIN and reduced["cosine_min"] >= full["cosine_min"]:
        return 7
    return 8


def record(
    cpu: CpuInfo,
    requested: int | str,
    chosen: int,
    figures: Mapping[int, Mapping[str, Any]],
    can_measure: bool,
) -> dict[str, Any]:
    """The manifest's `cpu_kernels` entry: the CPU, the weight width and why."""
    if parse_weight_bits(requested) is not None:
        reason = f"--weight-bits {requested}"
    elif cpu.int8_dot_product:
        reason = "this CPU has an int8 dot product (VNNI/AMX/dotprod): no saturation to remedy"
    elif not can_measure:
        reason = "no held-out images to measure the 7-bit remedy on: full range kept"
    else:
        reason = "held-out agreement with fp32, ORT CPU fused kernels (ties keep 8-bit)"
    keys = ("images", "cosine_mean", "cosine_min", "top1_agreement")
    return {
        "cpu": cpu.name,
        "features": cpu.features,
        "int8_dot_product": cpu.int8_dot_product,
        "weights_bits": chosen,
        "chosen_by": {
            "rule": reason,
            "candidates": {
                str(bits): {k: fig[k] for k in keys if k in fig} for bits, fig in figures.items()
            },
        },
        **({"tensorrt": TENSORRT_NOTE} if chosen == 7 else {}),
    }
