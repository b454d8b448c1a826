"""Classify image files with any runtime of a bundle: top-k class names and probabilities.

Each file is decoded and preprocessed on its own (EXIF orientation, any Pillow mode to RGB,
the bundle's resize, crop and normalisation), so a file that is not an image, or is
truncated, gets its own error and the others still run. Probabilities are the softmax of the
model's logits.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vggdeploy.bundle import Bundle
from vggdeploy.errors import InputError, VggDeployError
from vggdeploy.metrics import softmax, top_k
from vggdeploy.runtimes.base import infer_array


@dataclass
class Prediction:
    """The result for one file: `top` as (class index, label, probability), best first, or
    `error` when the file could not be read."""

    path: Path
    top: list[tuple[int, str, float]] = field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        if self.error is not None:
            return {"file": str(self.path), "error": self.error}
        return {
            "file": str(self.path),
            "predictions": [
                {"rank": rank, "index": index, "label": label, "probability": prob}
                for rank, (index, label, prob) in enumerate(self.top, 1)
            ],
        }


def class_names(bundle: Bundle, num_classes: int) -> list[str]:
    """The bundle's labels, or "class N" where it has none."""
    labels = bundle.labels() or []
    return [
        labels[i] if i < len(labels) and labels[i] else f"class {i}" for i in range(num_classes)
    ]


def expand_paths(items: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """Files as given (missing ones too: they get a per-file error); folders become their images."""
    from vggdeploy.preprocess import find_images

    paths: list[Path] = []
    for item in items:
        p = Path(item)
        paths.extend(find_images(p) if p.is_dir() else [p])
    return paths


def predict_images(
    runtime: Any,
    bundle: Bundle,
    images: Sequence[str | os.PathLike[str]],
    *,
    top: int = 5,
    batch: int = 8,
) -> list[Prediction]:
    """Classify `images` (files or folders) with a loaded `runtime` of `bundle`.

    Files that cannot be decoded come back with `error` set; the rest are batched and run.
    """
    from vggdeploy.preprocess import load_image, preprocess_image

    if top < 1:
        raise InputError(f"--top {top} must be at least 1")
    if batch < 1:
        raise InputError(f"batch {batch} must be a positive integer")
    num_classes = bundle.model.num_classes
    if top > num_classes:
        raise InputError(f"--top {top} is more than the model's {num_classes} classes")
    pre = bundle.preprocessing
    names = class_names(bundle, num_classes)

    results = [Prediction(p) for p in expand_paths(images)]
    pending: list[tuple[Prediction, np.ndarray]] = []

    def flush() -> None:
        if not pending:
            return
        logits = infer_array(runtime, np.stack([a for _, a in pending]))
        for (pred, _), probs in zip(pending, softmax(logits)):
            pred.top = top_k(probs, top, names)
        pending.clear()

    for pred in results:
        try:
            array = preprocess_image(load_image(pred.path, pre.resize), pre)
        except VggDeployError as exc:
            pred.error = _without_path(str(exc), pred.path)
            continue
        pending.append((pred, array))
        if len(pending) == batch:
            flush()
    flush()
    return results


def _without_path(message: str, path: Path) -> str:
    # load_image's messages start with the path; the report already shows it.
    prefix = f"{path}: "
    return message[len(prefix) :] if message.startswith(prefix) else message
