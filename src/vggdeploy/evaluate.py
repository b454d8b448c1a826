"""Top-1 / top-5 accuracy of a bundle on a labelled image folder, per runtime and precision.

The folder has one sub-folder per class (torchvision's ImageFolder layout). Folder names are
matched to the bundle's class names (exactly, ignoring case, and with `_` and spaces treated as
the same); a bundle without labels maps the folders, sorted alphabetically, to output indices
0..N-1 as ImageFolder does, and the result says so. Images are decoded once, in batches, and
every chosen runtime/precision runs on each batch, so the comparison is on identical tensors and
memory stays at one batch.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vggdeploy.bundle import Bundle
from vggdeploy.errors import BundleError, InputError, RuntimeUnavailableError
from vggdeploy.inputs import map_class_folders
from vggdeploy.preprocess import ImageSkips, OnSkip
from vggdeploy.runtimes.base import Runtime, infer_array
from vggdeploy.runtimes.registry import (
    RuntimeSpec,
    default_validation_specs,
    expand,
    open_available,
)

TOP_K = 5


# -- runtimes -------------------------------------------------------------------------------------


def choose_specs(
    bundle: Bundle, specs: Sequence[RuntimeSpec] = (), precisions: Sequence[str] = ()
) -> tuple[list[RuntimeSpec], bool]:
    """Targets as `vggdeploy validate` reads them, and whether they are the defaults (ONNX
    Runtime CPU on every ONNX in the bundle, then every TensorRT engine): defaults this host
    cannot run are skipped with a note, while a target the user named must run."""
    if not specs and not precisions:
        return default_validation_specs(bundle), True
    if not specs:
        specs = [RuntimeSpec("onnxruntime")]
    return expand(bundle, specs, precisions), False


# -- scoring --------------------------------------------------------------------------------------


def topk_hits(logits: np.ndarray, targets: np.ndarray, k: int) -> np.ndarray:
    """Per row: is the target among the `k` largest logits? (ties broken by the lower index)"""
    k = min(k, logits.shape[1])
    # A stable sort on -logits keeps the lower index first among equal scores, like argmax.
    order = np.argsort(-logits, axis=1, kind="stable")[:, :k]
    return np.any(order == targets[:, None], axis=1)


@dataclass
class _Score:
    spec: RuntimeSpec
    runtime: Runtime
    top1: int = 0
    topk: int = 0
    agree: int = 0
    per_class: dict[int, list[int]] = field(default_factory=dict)  # index -> [count, top1]


def evaluate_bundle(
    bundle: Bundle,
    images: str | os.PathLike[str],
    *,
    specs: Sequence[RuntimeSpec] = (),
    precisions: Sequence[str] = (),
    batch: int = 32,
    limit: int | None = None,
    seed: int = 0,
    threads: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    runtime_factory: Callable[..., Runtime] = open_available,
    strict: bool = True,
    on_skip: OnSkip | None = None,
) -> dict[str, Any]:
    """Accuracy of every runtime x precision on the labelled folder `images`.

    `progress(done, total)` is called after each batch. `specs` and `precisions` read as in
    `vggdeploy validate`; with neither, every ONNX in
    the bundle runs on ONNX Runtime CPU (plus TensorRT engines where this host can run them).
    `limit` evaluates a seeded random subset of that many images (from every class, not just
    the first folders). Deltas are percentage points against fp32 on the same runtime (else the
    first fp32 target); agreement is the share of images whose top-1 class equals the first
    fp32 target's. An unreadable image raises (`strict`), or is left out of every runtime's
    figures, `on_skip` called for it (`preprocess.ImageSkips`); `count` is the images
    evaluated and `skipped_images` the ones left out.
    """
    if batch < 1:
        raise InputError(f"--batch {batch} must be at least 1")
    if limit is not None and limit < 1:
        raise InputError(f"--limit {limit} must be at least 1")
    started = time.perf_counter()
    labels = bundle.labels()
    num_classes = bundle.model.num_classes
    mapping = map_class_folders(images, labels, num_classes)
    samples = mapping.samples
    if limit is not None and limit < len(samples):
        rng = np.random.default_rng(seed)
        samples = [samples[i] for i in sorted(rng.choice(len(samples), limit, replace=False))]
    options = {"threads": threads} if threads else {}
    targets, defaults = choose_specs(bundle, specs, precisions)
    pre = bundle.preprocessing
    k = min(TOP_K, num_classes)
    paths = [p for p, _ in samples]
    truth_of = dict(samples)
    skips = ImageSkips(strict=strict, on_skip=on_skip)

    skipped: list[dict[str, str]] = []
    with contextlib.ExitStack() as stack:
        scores: list[_Score] = []
        for target in targets:
            try:
                runtime = runtime_factory(bundle, target, **options)
                stack.enter_context(runtime)
            except RuntimeUnavailableError as exc:
                if not defaults:
                    raise
                skipped.append({"target": target.text, "reason": str(exc)})
                continue
            scores.append(_Score(target, runtime))
        if not scores:
            raise RuntimeUnavailableError(
                "no runtime of this bundle can run on this host: "
                + "; ".join(f"{s['target']}: {s['reason']}" for s in skipped)
            )
        reference = _reference_index([s.spec for s in scores])
        done = evaluated = 0
        for start in range(0, len(paths), batch):
            chunk = paths[start : start + batch]
            done += len(chunk)
            kept, array = skips.batch(chunk, pre)
            if array is None:  # every image of this batch was unreadable
                if progress:
                    progress(done, len(paths))
                continue
            n = len(kept)
            truth = np.asarray([truth_of[p] for p in kept], dtype=np.int64)
            preds: list[np.ndarray] = []
            for score in scores:
                logits = infer_array(score.runtime, array)
                if logits.shape != (n, num_classes):
                    raise BundleError(
                        f"{score.runtime.label} returned logits of shape {logits.shape}, "
                        f"expected ({n}, {num_classes}): the artifact does not match the bundle"
                    )
                hit1 = topk_hits(logits, truth, 1)
                score.top1 += int(hit1.sum())
                score.topk += int(topk_hits(logits, truth, k).sum())
                for cls, ok in zip(truth.tolist(), hit1.tolist()):
                    counts = score.per_class.setdefault(cls, [0, 0])
                    counts[0] += 1
                    counts[1] += int(ok)
                preds.append(np.argsort(-logits, axis=1, kind="stable")[:, 0])
            if reference is not None:
                for score, pred in zip(scores, preds):
                    score.agree += int(np.sum(pred == preds[reference]))
            evaluated += n
            if progress:
                progress(done, len(paths))
        described = [s.runtime.describe().to_dict() for s in scores]
        labels_of = [s.runtime.label for s in scores]

    total = evaluated
    if total == 0:
        raise InputError(
            f"none of the {len(paths)} images under {images} could be read (each is listed above)"
        )
    names = labels or sorted(mapping.folders, key=mapping.folders.get)
    results = []
    for i, score in enumerate(scores):
        top1, topk = score.top1 / total, score.topk / total
        results.append(
            {
                "runtime": score.spec.name,
                "spec": score.spec.text,
                "device": score.spec.device,
                "precision": score.spec.precision,
                "label": labels_of[i],
                "top1": top1,
                "top5": topk,
                "correct_top1": score.top1,
                "correct_top5": score.topk,
                "describe": described[i],
                "per_class_top1": {
                    _class_name(names, cls): counts[1] / counts[0]
                    for cls, counts in sorted(score.per_class.items())
                },
            }
        )
    evaluated = [s.spec for s in scores]
    for i, row in enumerate(results):
        ref = _reference_for(evaluated, i, reference)
        if ref is None:
            row.update(delta_top1=None, delta_top5=None, reference=None)
            row.update(agreement_top1=None, agreement_with=None)
            continue
        row["reference"] = results[ref]["label"]
        row["delta_top1"] = round(100 * (row["top1"] - results[ref]["top1"]), 4)
        row["delta_top5"] = round(100 * (row["top5"] - results[ref]["top5"]), 4)
        # Same top-1 prediction as the first fp32 target, image by image.
        row["agreement_top1"] = scores[i].agree / total
        row["agreement_with"] = results[reference]["label"]
    return {
        "bundle": str(bundle.root),
        "model": bundle.model.name,
        "images": str(Path(images)),
        "count": total,
        "skipped_images": [s.to_dict() for s in skips.skipped],
        "limit": {"limit": limit, "seed": seed} if limit is not None else None,
        "classes": len(mapping.folders),
        "top_k": k,
        "class_mapping": {
            "method": mapping.method,
            "note": mapping.note,
            "folders": mapping.folders,
        },
        "batch": batch,
        "results": results,
        "skipped": skipped,
        "seconds": round(time.perf_counter() - started, 2),
        "units": "top1/top5 are fractions; delta_top1/delta_top5 are percentage points vs fp32",
    }


def _reference_index(targets: Sequence[RuntimeSpec]) -> int | None:
    for i, t in enumerate(targets):
        if t.precision == "fp32":
            return i
    return None


def _reference_for(targets: Sequence[RuntimeSpec], i: int, default: int | None) -> int | None:
    """fp32 on the same runtime and options if evaluated, else the first fp32 target."""
    for j, t in enumerate(targets):
        if t.precision == "fp32" and _same_runtime(t, targets[i]):
            return j
    return default


def _same_runtime(a: RuntimeSpec, b: RuntimeSpec) -> bool:
    """The same runtime and variants, whatever the precision."""
    return a.runtime == b.runtime


def _class_name(names: Sequence[str], index: int) -> str:
    return names[index] if index < len(names) else str(index)
