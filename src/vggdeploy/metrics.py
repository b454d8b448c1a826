"""Comparing outputs: the metrics, the tolerances each precision is judged by, and parsing
`--tol` overrides. The one home of these numbers: export parity, `validate`, `calibrate`'s
held-out check, `convert` and `pipeline` all judge with them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from vggdeploy.errors import InputError

#: metric -> (direction, what it is). "max": the value must be <= the limit; "min": >=.
METRICS: dict[str, tuple[str, str]] = {
    "max_abs": ("max", "largest |ref - got|"),
    "p99_abs": ("max", "99th percentile of |ref - got|"),
    "max_rel": ("max", "largest |ref - got| / max |ref|"),
    "range_rel": ("max", "largest |ref - got| / (max ref - min ref)"),
    "cosine": ("min", "cosine similarity of the flattened outputs"),
    "top1": ("min", "fraction of samples whose top-1 class agrees"),
    "top5": ("min", "mean overlap of the top-5 classes (1.0: same five)"),
}

#: Checks per target precision; metrics not listed are reported but not judged.
#: fp32 matches the export's own parity check. fp16 keeps ~3 significant digits. INT8 changes
#: values by design, so it is judged by direction (cosine) and by the decisions (top-1).
TOLERANCES: dict[str, dict[str, float]] = {
    "fp32": {"max_rel": 1e-4, "cosine": 0.9999},
    "fp16": {"max_rel": 1e-2, "cosine": 0.999},
    "int8": {"cosine": 0.98, "top1": 0.9},
    # an fp32 TensorRT engine built with --tf32: TF32 keeps fp32's range with fp16's 10-bit
    # mantissa (NVIDIA's TF32 description), so it is judged like fp16
    "tf32": {"max_rel": 1e-2, "cosine": 0.999},
}


# -- tolerances ---------------------------------------------------------------------------------


def merge_tolerances(
    overrides: Mapping[str, Mapping[str, float]] | None = None,
    base: Mapping[str, Mapping[str, float]] = TOLERANCES,
) -> dict[str, dict[str, float]]:
    """`base` with `overrides` applied per precision and metric (new precisions allowed)."""
    merged = {p: dict(m) for p, m in base.items()}
    for precision, metrics in (overrides or {}).items():
        for metric, value in metrics.items():
            if metric not in METRICS:
                raise InputError(
                    f"unknown metric {metric!r} in tolerance for {precision}: use one of {', '.join(METRICS)}"
                )
            check_limit(metric, float(value), f"tolerance {precision}.{metric}")
            merged.setdefault(precision, {})[metric] = float(value)
    return merged


def parse_tolerance(text: str) -> tuple[str, str, float]:
    """`PRECISION.METRIC=VALUE` (e.g. `fp16.cosine=0.9995`) -> (precision, metric, value)."""
    try:
        key, value_text = text.split("=", 1)
        precision, metric = key.strip().rsplit(".", 1)
        value = float(value_text)
    except ValueError:
        raise InputError(
            f"--tol {text!r} must look like PRECISION.METRIC=VALUE, e.g. fp16.cosine=0.9995"
        ) from None
    if metric not in METRICS:
        raise InputError(
            f"--tol {text!r}: unknown metric {metric!r}; use one of {', '.join(METRICS)}"
        )
    check_limit(metric, value, f"--tol {text!r}")
    return precision, metric, value


def check_limit(metric: str, value: float, where: str) -> None:
    """Refuse a limit the metric can never meet or always meets by construction."""
    if not np.isfinite(value) or value < 0:
        raise InputError(f"{where}: the limit must be a finite number >= 0")
    if metric in ("cosine", "top1", "top5") and value > 1:
        raise InputError(f"{where}: {metric} is at most 1, so a limit of {value:g} can never pass")


def parse_tolerances(texts: Sequence[str]) -> dict[str, dict[str, float]]:
    """Several `--tol` values as an overrides mapping for `merge_tolerances`."""
    overrides: dict[str, dict[str, float]] = {}
    for text in texts:
        precision, metric, value = parse_tolerance(text)
        overrides.setdefault(precision, {})[metric] = value
    return overrides


# -- verdicts -----------------------------------------------------------------------------------

#: metrics counted per image: one image that disagrees moves them by 1/N
PER_IMAGE = ("top1", "top5")


@dataclass(frozen=True)
class Verdict:
    """How outputs on `images` inputs fare against `limits`: one (metric, value, limit, passed)
    per limit, and `passed` (None when too few images were compared to judge: `needed`)."""

    checks: tuple[tuple[str, float, float, bool], ...]
    images: int
    needed: int

    @property
    def judged(self) -> bool:
        return self.images >= self.needed

    @property
    def passed(self) -> bool | None:
        return all(ok for *_, ok in self.checks) if self.judged else None

    def too_few(self) -> str:
        """Why there is no verdict (one sentence, true only when `not judged`)."""
        return (
            f"{self.images} image{'' if self.images == 1 else 's'} cannot judge this: a verdict "
            f"needs at least {self.needed}, the fewest on which one disagreeing image still "
            "passes the per-image limits"
        )


def passes(metric: str, value: float, limit: float) -> bool:
    """Whether `value` of `metric` meets `limit` (<= for "max" metrics, >= for "min")."""
    return bool(value <= limit if METRICS[metric][0] == "max" else value >= limit)


def images_needed(limits: Mapping[str, float]) -> int:
    """The fewest images on which a verdict by `limits` means something: those where one image
    that disagrees (top-1/top-5 drop by 1/N) still passes every per-image limit. Fewer, and a
    single coin-flip image decides the verdict. Computed with `passes`, the comparison the
    verdict itself makes (so 0.9 needs 10 images, whatever 1 - 0.9 rounds to); a limit of 1
    tolerates no disagreeing image at any size, so it needs 1."""
    needed = 1
    for metric in PER_IMAGE:
        if metric not in limits or limits[metric] >= 1:
            continue
        # start just below the closed form 1 / (1 - limit), then step with the verdict's own
        # comparison (float rounding may move the answer by one)
        n = max(1, math.ceil(1 / (1 - limits[metric])) - 2)
        while not passes(metric, (n - 1) / n, limits[metric]):
            n += 1
        needed = max(needed, n)
    return needed


def verdict(metrics: Mapping[str, float], limits: Mapping[str, float], images: int) -> Verdict:
    """The one rule every comparison is judged by (`validate`, `calibrate`'s held-out check):
    each limit met, on at least `images_needed(limits)` images."""
    checks = tuple(
        (metric, float(metrics[metric]), float(limit), passes(metric, metrics[metric], limit))
        for metric, limit in limits.items()
    )
    return Verdict(checks, int(images), images_needed(limits))


# -- metrics ------------------------------------------------------------------------------------


def compare_outputs(ref: np.ndarray, got: np.ndarray) -> dict[str, float]:
    """Every metric in `METRICS` for one (N, classes) output against its reference."""
    if ref.shape != got.shape:
        raise InputError(f"output shapes differ: reference {ref.shape}, target {got.shape}")
    figures = compare_arrays(ref, got)  # max_abs, max_rel, cosine
    ref64, got64 = ref.astype(np.float64), got.astype(np.float64)
    diff = np.abs(ref64 - got64)
    span = float(ref64.max(initial=0.0) - ref64.min(initial=0.0)) if ref64.size else 0.0
    figures["p99_abs"] = float(np.percentile(diff, 99)) if diff.size else 0.0
    figures["range_rel"] = figures["max_abs"] / span if span else figures["max_abs"]
    ref2, got2 = ref64.reshape(len(ref64), -1), got64.reshape(len(got64), -1)
    if len(ref2) and ref2.shape[1]:
        figures["top1"] = float(np.mean(ref2.argmax(1) == got2.argmax(1)))
        k = min(5, ref2.shape[1])
        top_ref = np.argsort(-ref2, axis=1, kind="stable")[:, :k]
        top_got = np.argsort(-got2, axis=1, kind="stable")[:, :k]
        overlap = [len(set(a) & set(b)) / k for a, b in zip(top_ref, top_got)]
        figures["top5"] = float(np.mean(overlap))
    else:
        figures["top1"] = figures["top5"] = 1.0
    for key, value in figures.items():
        if not np.isfinite(value):  # NaN/inf in an output fails every check, not none
            figures[key] = float("inf") if METRICS[key][0] == "max" else float("-inf")
    return {m: figures[m] for m in METRICS}


def compare_arrays(ref: np.ndarray, got: np.ndarray) -> dict[str, float]:
    """Max |diff|, the same relative to max |ref|, and cosine similarity of flattened outputs."""
    ref64, got64 = ref.astype(np.float64).ravel(), got.astype(np.float64).ravel()
    diff = np.abs(ref64 - got64)
    scale = float(np.max(np.abs(ref64))) or 1.0
    denom = float(np.linalg.norm(ref64) * np.linalg.norm(got64))
    cosine = float(ref64 @ got64 / denom) if denom else float(np.array_equal(ref64, got64))
    return {
        "max_abs": float(diff.max(initial=0.0)),
        "max_rel": float(diff.max(initial=0.0) / scale),
        "cosine": cosine,
    }


# -- class scores -----------------------------------------------------------------------------


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64, stable for large logits."""
    z = logits.astype(np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def top_k(probs: np.ndarray, k: int, labels: Sequence[str]) -> list[tuple[int, str, float]]:
    """The `k` most probable classes of one row, highest first (ties: lower index first)."""
    order = np.argsort(-probs, kind="stable")[:k]
    return [(int(i), labels[i], float(probs[i])) for i in order]
