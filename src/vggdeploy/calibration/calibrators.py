"""Streaming activation statistics and the three range methods (entropy, minmax, percentile).

The fp32 model runs in ONNX Runtime with the tensors to quantize (the activation inputs of
Conv, Gemm and MatMul) added as graph outputs. Each batch updates, per tensor, a running
min/max and a fixed 2048-bin histogram of |x|; the batch's arrays are dropped before the next
batch runs, so memory is one batch of activations plus a few kilobytes per tensor, whatever
the number of samples. (ONNX Runtime's stock calibrator keeps every batch's tensors until the
end, which is what made 32 VGG-16 images take 6.3 GB.)

When a batch exceeds the histogram's range, the range grows by a power of two and existing
bins are merged in groups of that size, so the histogram stays 2048 bins and no count moves
to a wrong value range (TensorRT's and ONNX Runtime's collectors also grow the range and
re-bin; ours keeps the bin count fixed so the state size never depends on the data).

Ranges are computed from the histograms afterwards, which is why one data pass (and one
calibration cache) serves every method and target:

- `minmax`: the observed min and max.
- `percentile`: the |x| value below which `percentile` % of the values fall.
- `entropy`: TensorRT's KL-divergence search (Migacz, "8-bit Inference with TensorRT",
  GTC 2017): for every candidate threshold i in [levels, 2048] bins, the reference P is the
  first i bins with everything beyond folded into bin i-1, the candidate Q is those i bins
  merged into `levels` quantization levels and expanded back over the bins that were
  non-empty; the i minimising KL(P || Q) gives the threshold.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from vggdeploy.errors import InputError
from vggdeploy.onnxutil import serialize_with_outputs
from vggdeploy.ortsession import cpu_session

log = logging.getLogger(__name__)

NUM_BINS = 2048
METHODS = ("entropy", "minmax", "percentile")
QUANTIZABLE_OPS = ("Conv", "Gemm", "MatMul")
# Elements histogrammed at once: bounds the temporary index array (4 bytes each) to 16 MB.
_CHUNK = 1 << 22


@dataclass
class TensorStats:
    """Running statistics of one tensor: min, max, value count and a histogram of |x|.

    `hist[k]` counts non-zero values with |x| in [k, k+1) * `hist_max` / `NUM_BINS` (the last
    bin also holds |x| == `hist_max`); exact zeros are counted apart in `zeros`. Its size is
    fixed: it does not grow with the number of batches.

    Why zeros apart: 40-85 % of a ReLU output is exactly 0, which every int8/uint8 encoding
    with zero point 0 represents exactly. Left in bin 0, that spike dominates the KL search
    (Q spreads it over the first quantization level), which then clips at a fraction of the
    range: measured on the digits model, entropy clipped ReLU outputs at ~20 % of their max
    and lost accuracy. NVIDIA's pytorch-quantization histogram calibrator offers the same
    (`skip_zeros`). Percentile still counts the zeros.
    """

    name: str
    hist: np.ndarray
    hist_max: float = 0.0
    min: float = math.inf
    max: float = -math.inf
    count: int = 0
    zeros: int = 0

    @classmethod
    def empty(cls, name: str, num_bins: int = NUM_BINS) -> TensorStats:
        return cls(name=name, hist=np.zeros(num_bins, dtype=np.int64))

    @property
    def num_bins(self) -> int:
        return int(self.hist.size)

    @property
    def amax(self) -> float:
        return max(abs(self.min), abs(self.max)) if self.count else 0.0

    @property
    def signed(self) -> bool:
        """Whether any negative value was seen (post-ReLU activations are unsigned)."""
        return self.count > 0 and self.min < 0.0

    def update(self, values: np.ndarray) -> None:
        """Add one batch of values; `values` is only read, never kept."""
        flat = np.asarray(values).reshape(-1)
        if flat.size == 0:
            return
        if not np.issubdtype(flat.dtype, np.floating):
            flat = flat.astype(np.float32)
        lo, hi = float(np.min(flat)), float(np.max(flat))
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise InputError(
                f"tensor {self.name!r} has NaN or infinite values on the calibration data: "
                "check the model's weights and the images"
            )
        self.min, self.max = min(self.min, lo), max(self.max, hi)
        self.count += int(flat.size)
        self._grow_to(max(abs(lo), abs(hi)))
        if self.hist_max == 0.0:  # every value so far is exactly zero
            self.zeros += int(flat.size)
            return
        factor = np.float32(self.num_bins / self.hist_max)
        last = self.num_bins - 1
        for start in range(0, flat.size, _CHUNK):
            chunk = np.abs(flat[start : start + _CHUNK], dtype=np.float32)
            n_zero = chunk.size - int(np.count_nonzero(chunk))
            np.multiply(chunk, factor, out=chunk)
            idx = chunk.astype(np.int32)
            np.minimum(idx, last, out=idx)
            counts = np.bincount(idx, minlength=self.num_bins)
            counts[0] -= n_zero  # exact zeros fell in bin 0; they are counted apart
            self.hist += counts
            self.zeros += n_zero

    def _grow_to(self, amax: float) -> None:
        if amax <= self.hist_max:
            return
        if self.hist_max == 0.0:
            # Only zeros so far (or nothing), which live outside the histogram.
            self.hist_max = amax
            return
        steps = math.ceil(math.log2(amax / self.hist_max))
        group = 1 << steps
        while self.hist_max * group < amax:  # guard against log2 rounding
            group <<= 1
        if group >= self.num_bins:
            merged = np.zeros_like(self.hist)
            merged[0] = self.hist.sum()
        else:
            merged = np.zeros_like(self.hist)
            merged[: self.num_bins // group] = self.hist.reshape(-1, group).sum(axis=1)
        self.hist = merged
        self.hist_max *= group

    @property
    def bin_width(self) -> float:
        return self.hist_max / self.num_bins

    def to_dict(self) -> dict[str, Any]:
        nonzero = np.flatnonzero(self.hist)
        return {
            "min": self.min if self.count else None,
            "max": self.max if self.count else None,
            "count": self.count,
            "zeros": self.zeros,
            "hist_max": self.hist_max,
            "num_bins": self.num_bins,
            # Sparse: [bin, count] pairs; most of the 2048 bins of a ReLU output are empty.
            "hist": [[int(i), int(self.hist[i])] for i in nonzero],
        }

    @classmethod
    def from_dict(cls, name: str, data: Mapping[str, Any]) -> TensorStats:
        hist = np.zeros(int(data["num_bins"]), dtype=np.int64)
        for index, count in data["hist"]:
            hist[int(index)] = int(count)
        count = int(data["count"])
        return cls(
            name=name,
            hist=hist,
            hist_max=float(data["hist_max"]),
            min=float(data["min"]) if count else math.inf,
            max=float(data["max"]) if count else -math.inf,
            count=count,
            zeros=int(data["zeros"]),
        )


class HistogramCollector:
    """Per-tensor `TensorStats`, updated batch by batch from a dict of arrays."""

    def __init__(self, names: Iterable[str], num_bins: int = NUM_BINS) -> None:
        self.stats = {name: TensorStats.empty(name, num_bins) for name in names}
        self.batches = 0

    def update(self, outputs: Mapping[str, np.ndarray]) -> None:
        for name, stats in self.stats.items():
            stats.update(outputs[name])
        self.batches += 1

    def state_nbytes(self) -> int:
        """Bytes held by the collector: fixed by the tensor and bin counts, not the samples."""
        return sum(s.hist.nbytes + 40 for s in self.stats.values())

    def to_dict(self) -> dict[str, Any]:
        return {name: stats.to_dict() for name, stats in self.stats.items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> HistogramCollector:
        collector = cls([])
        collector.stats = {name: TensorStats.from_dict(name, d) for name, d in data.items()}
        return collector


# -- which tensors, and running the model ---------------------------------------------------


def select_calibration_tensors(model: Any) -> list[str]:
    """Activation inputs of Conv/Gemm/MatMul (not initializers), in graph order, unique."""
    initializers = {init.name for init in model.graph.initializer}
    constants = {
        out for node in model.graph.node if node.op_type == "Constant" for out in node.output
    }
    names: list[str] = []
    for node in model.graph.node:
        if node.op_type not in QUANTIZABLE_OPS or not node.input:
            continue
        name = node.input[0]
        if name and name not in initializers and name not in constants and name not in names:
            names.append(name)
    return names


def collect_statistics(
    model: Any,
    batches: Iterable[Mapping[str, np.ndarray]],
    names: list[str],
    *,
    on_batch: Callable[[int], None] | None = None,
    intra_op_threads: int = 0,
) -> HistogramCollector:
    """Run `model` (fp32 ModelProto) over `batches` in ONNX Runtime CPU, one batch at a time.

    `on_batch(n)` is called after each batch with its number of images (for progress bars).
    """
    serialized = serialize_with_outputs(model, names)
    # Without the arena, each batch's buffers go back to the allocator; with it, VGG-16 at
    # batch 16 grew by ~0.8 GB a batch at first (measured), for no speed gain worth having here.
    session = cpu_session(serialized, threads=intra_op_threads or None, memory_arena=False)
    del serialized
    collector = HistogramCollector(names)
    for feed in batches:
        outputs = session.run(names, dict(feed))
        collector.update(dict(zip(names, outputs)))
        del outputs  # drop this batch's activations before the next batch runs
        if on_batch is not None:
            on_batch(int(next(iter(feed.values())).shape[0]))
    if collector.batches == 0:
        raise InputError("no calibration batches were produced: check --images and --samples")
    return collector


# -- thresholds ------------------------------------------------------------------------------


def _smooth(p: np.ndarray, eps: float = 1e-4) -> np.ndarray | None:
    """Normalise `p` and give its empty bins mass `eps` each, taken proportionally from the
    others, so that KL(P || Q) stays finite where Q is empty and P is not."""
    total = p.sum()
    if total <= 0:
        return None
    out = p.astype(np.float64) / total
    zeros = out == 0
    n_zero = int(zeros.sum())
    if n_zero:
        eps = min(eps, 0.5 / n_zero)
        out *= 1.0 - eps * n_zero
        out[zeros] = eps
    return out


def _kl_divergence(p: np.ndarray, q: np.ndarray) -> float:
    p = p / p.sum()
    q = q / q.sum()
    mask = p > 0
    return float(np.sum(p[mask] * np.log(p[mask] / q[mask])))


def entropy_threshold_bins(hist: np.ndarray, levels: int = 128) -> int:
    """The number of bins i (threshold at the upper edge of bin i-1) minimising KL(P || Q).

    `hist` is a histogram of |x| starting at 0. Candidates run from `levels` bins to the last
    non-empty bin; P folds the outliers beyond i into bin i-1; Q merges the first i bins into
    `levels` equal groups and spreads each group's mass evenly over its non-empty bins.
    """
    hist = np.asarray(hist, dtype=np.float64)
    nonzero = np.flatnonzero(hist)
    if nonzero.size == 0:
        return hist.size
    last = int(nonzero[-1]) + 1
    if last <= levels:
        return last  # fewer occupied bins than levels: nothing to clip
    best_i, best_kl = last, math.inf
    suffix = np.concatenate([np.cumsum(hist[::-1])[::-1], [0.0]])
    for i in range(levels, last + 1):
        sliced = hist[:i]
        p = sliced.copy()
        p[i - 1] += suffix[i]
        # Group boundaries: `levels` groups over i bins, as equal as integer bins allow.
        edges = (np.arange(levels + 1) * i) // levels
        starts = edges[:-1]
        mass = np.add.reduceat(sliced, starts)
        occupied = np.add.reduceat((sliced > 0).astype(np.float64), starts)
        lengths = np.diff(edges)
        per_bin = np.divide(mass, occupied, out=np.zeros_like(mass), where=occupied > 0)
        q = np.repeat(per_bin, lengths) * (sliced > 0)
        ps, qs = _smooth(p), _smooth(q)
        if ps is None or qs is None:
            continue
        kl = _kl_divergence(ps, qs)
        if kl < best_kl:
            best_kl, best_i = kl, i
    return best_i


def percentile_threshold_bins(hist: np.ndarray, percentile: float, zeros: int = 0) -> int:
    """The number of bins holding `percentile` % of the |x| values, `zeros` exact zeros
    included (at least one bin)."""
    hist = np.asarray(hist, dtype=np.float64)
    total = hist.sum() + zeros
    if hist.sum() == 0:
        return hist.size
    cdf = (zeros + np.cumsum(hist)) / total
    # A hair of slack so 999/1000 counts as reaching 99.9 % despite float rounding.
    index = int(np.searchsorted(cdf, percentile / 100.0 - 1e-12, side="left"))
    return min(index + 1, hist.size)


@dataclass(frozen=True)
class TensorRange:
    """The float range [low, high] a tensor is quantized over, and how it was chosen."""

    low: float
    high: float
    amax_observed: float
    signed: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "low": self.low,
            "high": self.high,
            "amax_observed": self.amax_observed,
            "signed": self.signed,
        }


def levels_for(stats: TensorStats, target: str) -> int:
    """Quantization levels on the |x| axis: 128 for symmetric int8 (the one target)."""
    return 128


def compute_range(
    stats: TensorStats, method: str, target: str, percentile: float = 99.99
) -> TensorRange:
    """The quantization range of one tensor for `method` and `target`."""
    if method not in METHODS:
        raise InputError(f"unknown calibration method {method!r}: use one of {', '.join(METHODS)}")
    if stats.count == 0:
        raise InputError(f"tensor {stats.name!r} saw no values during calibration")
    amax = stats.amax
    if method == "minmax":
        threshold = amax
    elif method == "percentile":
        bins = percentile_threshold_bins(stats.hist, percentile, stats.zeros)
        threshold = bins * stats.bin_width
    else:
        threshold = entropy_threshold_bins(stats.hist, levels_for(stats, target)) * stats.bin_width
    threshold = min(threshold, amax)
    # Symmetric int8, zero point 0: the range is [-T, T] whatever the sign of the data.
    return TensorRange(low=-threshold, high=threshold, amax_observed=amax, signed=stats.signed)


def compute_ranges(
    collector: HistogramCollector, method: str, target: str, percentile: float = 99.99
) -> dict[str, TensorRange]:
    return {
        name: compute_range(stats, method, target, percentile)
        for name, stats in collector.stats.items()
    }
