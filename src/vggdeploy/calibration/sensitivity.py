"""Per-layer INT8 sensitivity: how much quantizing one Conv/Gemm alone costs.

For each quantizable layer the fp32 model is quantized with that layer alone in int8 (every
other layer kept float, `quantize_model(..., keep_float=...)`), run on ONNX Runtime CPU, and
compared with one fp32 reference pass on the same images:

- on a labelled folder (ImageFolder layout, `--accuracy-images`): top-1 accuracy and its drop
  against fp32 in points, the figure the accuracy budget works in;
- always: top-1 agreement with fp32 and the per-image cosine of the logits (mean and worst), so
  unlabelled images (the held-out calibration images) still rank the layers.

One variant model exists at a time (built, serialized, run, dropped), so memory stays at the
fp32 model plus one variant. Preprocessed images are kept in memory when they fit in
`FEED_CACHE_BYTES`, else decoded again for each variant.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vggdeploy.calibration.calibrators import TensorRange
from vggdeploy.calibration.data import ImageBatchReader
from vggdeploy.calibration.qdq import quantizable_nodes, quantize_model
from vggdeploy.errors import InputError
from vggdeploy.inputs import map_class_folders
from vggdeploy.ortsession import cpu_session
from vggdeploy.preprocess import Preprocessing

log = logging.getLogger(__name__)

#: preprocessed accuracy images kept in memory up to this size (VGG at 224 px: ~1,300 images)
FEED_CACHE_BYTES = 768 << 20

#: called after each measured variant with (done, total)
VariantProgress = Callable[[int, int], None]


# -- labelled images --------------------------------------------------------------------------


@dataclass(frozen=True)
class LabelledImages:
    """Image files with the output index of their class folder, and how folders were mapped."""

    paths: list[Path]
    targets: np.ndarray  # int64, one per path
    method: str  # "labels" or "alphabetical"


def read_labelled_folder(root: str | Path, labels: Sequence[str] | None) -> LabelledImages:
    """`root/<class>/...` images with their class index, read as `vggdeploy evaluate` reads
    them (`inputs.map_class_folders`)."""
    try:
        mapping = map_class_folders(root, labels)
    except InputError as exc:
        raise InputError(f"--accuracy-images: {exc}") from None
    paths = [p for p, _ in mapping.samples]
    targets = np.asarray([c for _, c in mapping.samples], dtype=np.int64)
    return LabelledImages(paths, targets, mapping.method)


# -- scoring variants against one fp32 reference ----------------------------------------------


class _Feeds:
    """The image batches, decoded once and kept when small, else re-read for each pass."""

    def __init__(self, reader: ImageBatchReader, pre: Preprocessing) -> None:
        self.reader = reader
        per_image = 3 * pre.crop * pre.crop * 4
        self.cached: list[dict[str, np.ndarray]] | None = (
            [] if per_image * len(reader.paths) <= FEED_CACHE_BYTES else None
        )
        self._filled = False

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        if self.cached is not None and self._filled:
            yield from self.cached
            return
        for feed in self.reader:
            if self.cached is not None:
                self.cached.append(feed)
            yield feed
        self._filled = self.cached is not None


class OutputScorer:
    """Scores candidate models against one fp32 reference pass on fixed images."""

    def __init__(
        self,
        fp32: Any,
        paths: Sequence[Path],
        pre: Preprocessing,
        input_name: str,
        targets: np.ndarray | None = None,
        batch_size: int = 16,
        images: str = "",
        class_mapping: str | None = None,
    ) -> None:
        if not paths:
            raise InputError("no images to measure INT8 sensitivity on")
        self.feeds = _Feeds(ImageBatchReader(paths, pre, input_name, batch_size), pre)
        self.targets = targets
        self.images = images
        self.class_mapping = class_mapping
        self.count = len(paths)
        self.reference = self._logits(fp32)
        if targets is not None and int(targets.max()) >= self.reference.shape[1]:
            raise InputError(
                f"--accuracy-images has class index {int(targets.max())} but the model has "
                f"{self.reference.shape[1]} outputs: remove the extra class folders"
            )
        self.fp32_top1 = self._top1(self.reference)
        self.passes = 1

    def _logits(self, model: Any) -> np.ndarray:
        source = model if isinstance(model, (str, Path, bytes)) else model.SerializeToString()
        session = cpu_session(source, memory_arena=False)
        del source
        name = session.get_outputs()[0].name
        out = [session.run([name], feed)[0] for feed in self.feeds]
        del session
        logits = np.concatenate(out)
        return logits.reshape(len(logits), -1).astype(np.float64)

    def _top1(self, logits: np.ndarray) -> float | None:
        if self.targets is None:
            return None
        return float(np.mean(logits.argmax(1) == self.targets)) * 100

    def score(self, model: Any) -> dict[str, Any]:
        """Top-1 (labelled), its drop in points, top-1 agreement and cosine against fp32."""
        got = self._logits(model)
        self.passes += 1
        ref = self.reference
        norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1)
        cos = np.divide((ref * got).sum(axis=1), norms, out=np.ones(len(ref)), where=norms > 0)
        cos = np.nan_to_num(cos, nan=-1.0)
        agreement = float(np.mean(ref.argmax(1) == got.argmax(1)))
        figures: dict[str, Any] = {
            "top1_agreement": round(agreement, 6),
            "cosine_mean": round(float(cos.mean()), 6),
            "cosine_min": round(float(cos.min()), 6),
        }
        top1 = self._top1(got)
        if top1 is not None and self.fp32_top1 is not None:
            figures["top1"] = round(top1, 4)
            figures["top1_drop"] = round(self.fp32_top1 - top1, 4)
            figures["loss"] = figures["top1_drop"]
        else:
            figures["loss"] = round(100 * (1 - agreement), 4)
        return figures

    def describe(self) -> dict[str, Any]:
        return {
            "images": self.count,
            "source": self.images,
            "metric": "top-1 drop (points)"
            if self.targets is not None
            else "top-1 disagreement with fp32 (points)",
            **({"class_mapping": self.class_mapping} if self.class_mapping else {}),
            **({"fp32_top1": round(self.fp32_top1, 4)} if self.fp32_top1 is not None else {}),
        }


# -- the sensitivity table --------------------------------------------------------------------


def build_variant(
    fp32: Any,
    ranges: Mapping[str, TensorRange],
    target: str,
    weight_bits: int = 8,
    *,
    keep_float: Collection[str],
) -> bytes:
    """The serialized Q/DQ model with `keep_float` nodes left float (one copy, then dropped)."""
    qmodel, _ = quantize_model(
        fp32, ranges, target, keep_float=sorted(keep_float), weight_bits=weight_bits
    )
    data = qmodel.SerializeToString()
    del qmodel
    return data


def layer_sensitivity(
    fp32: Any,
    ranges: Mapping[str, TensorRange],
    target: str,
    scorer: OutputScorer,
    progress: VariantProgress | None = None,
    weight_bits: int = 8,
) -> list[dict[str, Any]]:
    """One row per quantizable layer, most sensitive first (quantized alone, others float).

    Sorted by `loss` (top-1 drop in points on labelled images, else top-1 disagreement with
    fp32), then by the lowest mean cosine, so layers that cost no top-1 still rank by how far
    they move the logits.
    """
    table = [row for row in quantizable_nodes(fp32) if _has_range(fp32, row[0], ranges)]
    every = [node for node, _, _ in table]
    rows: list[dict[str, Any]] = []
    for done, (node, op, layer) in enumerate(table, 1):
        others = [n for n in every if n != node]
        figures = scorer.score(build_variant(fp32, ranges, target, weight_bits, keep_float=others))
        rows.append({"node": node, "layer": layer, "op": op, **figures})
        log.debug("sensitivity %s (%s): %s", layer, node, figures)
        if progress:
            progress(done, len(table))
    rows.sort(key=lambda r: (-r["loss"], r["cosine_mean"]))
    for rank, row in enumerate(rows, 1):
        row["rank"] = rank
    return rows


def _has_range(model: Any, node_name: str, ranges: Mapping[str, TensorRange]) -> bool:
    for index, node in enumerate(model.graph.node):
        if (node.name or f"{node.op_type}_{index}") == node_name:
            return bool(node.input) and node.input[0] in ranges
    return False


def names_of(table: Iterable[tuple[str, str, str]], nodes: Collection[str]) -> list[dict[str, str]]:
    """[{node, layer}] for `nodes`, in graph order."""
    return [{"node": n, "layer": layer} for n, _, layer in table if n in nodes]
