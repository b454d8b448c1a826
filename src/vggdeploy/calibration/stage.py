"""The `calibrate` stage: calibrate a bundle, write Q/DQ ONNX, check held-out images.

`calibrate_bundle(bundle, images, CalibrationOptions(...))` is the whole stage:

1. draw `samples` calibration images (seeded) and a disjoint held-out set from `images`;
2. collect per-tensor histograms in one streaming pass of the fp32 model through ONNX Runtime,
   or reuse a matching calibration cache;
3. compute ranges (`entropy`, `minmax` or `percentile`) and write `model.int8.onnx` in Q/DQ
   form (NVIDIA's placement, for TensorRT and ONNX Runtime);
4. check the file against TensorRT's Q/DQ rules (`verify_qdq`) and compare int8 with fp32 on the
   held-out images (cosine, top-1 agreement, top-5 overlap), warning loudly below tolerance;
5. record the artifact, its calibration settings and the comparison in the manifest.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vggdeploy.bundle import Bundle, atomic_path
from vggdeploy.calibration import cpu_kernels
from vggdeploy.calibration.cache import DEFAULT_CACHE_NAME, cache_key, load_cache, save_cache
from vggdeploy.calibration.calibrators import (
    METHODS,
    collect_statistics,
    compute_ranges,
    select_calibration_tensors,
)
from vggdeploy.calibration.cpu_kernels import parse_weight_bits
from vggdeploy.calibration.data import (
    ImageBatchReader,
    ImageSplit,
    fingerprint_images,
    split_images,
)
from vggdeploy.calibration.qdq import get_target, quantize_model, verify_qdq
from vggdeploy.errors import CheckFailedError, InputError
from vggdeploy.host import cpu
from vggdeploy.metrics import TOLERANCES, compare_outputs, verdict
from vggdeploy.ortsession import cpu_session
from vggdeploy.precision import onnx_key
from vggdeploy.preprocess import ImageSkips, OnSkip

log = logging.getLogger(__name__)

#: called after each calibration batch with its number of images
BatchProgress = Callable[[int], None]
#: called with a line naming each step as it starts, and its count of images when it has one
#: (the data pass then reports each batch by `BatchProgress`)
StepProgress = Callable[[str, "int | None"], None]


@dataclass
class CalibrationOptions:
    """What `vggdeploy calibrate` was asked for.

    `holdout=None` compares on up to 64 images left over after the calibration draw (none left:
    the comparison is skipped with a warning); an explicit count must be available. `cache=None`
    uses `calibration.cache.json` in the bundle, recomputed when it does not match; a cache
    named explicitly that belongs to another model or image set is refused.
    """

    method: str = "entropy"
    target: str = "tensorrt"
    samples: int = 512
    seed: int = 0
    percentile: float = 99.99
    batch_size: int = 16
    cache: str | Path | None = None
    holdout: int | None = None
    #: ONNX Node names or layer names (`features.10`) to leave in float
    keep_float: tuple[str, ...] = ()
    #: "auto" (7-bit weights only where measured better on a CPU without VNNI), 8 or 7
    weight_bits: int | str = "auto"
    #: called with each batch's image count during the data pass (None or False: no progress)
    progress: BatchProgress | None | bool = None
    #: called with a line as each later step starts (held-out comparison, writing the file)
    step: StepProgress | None = None
    #: stop at the first unreadable image (the default for callers that print nothing), or
    #: leave each out, calling `on_skip` (`ImageSkips`; `vggdeploy calibrate` without --strict)
    strict: bool = True
    #: called once for each unreadable image that is skipped (the command prints the line)
    on_skip: OnSkip | None = None

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise InputError(f"unknown --method {self.method!r}: use one of {', '.join(METHODS)}")
        get_target(self.target)
        if not isinstance(self.samples, int) or self.samples < 1:
            raise InputError(f"--samples {self.samples!r} must be a positive integer")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise InputError(f"--batch {self.batch_size!r} must be a positive integer")
        if not 50.0 <= float(self.percentile) <= 100.0:
            raise InputError(
                f"--percentile {self.percentile} must be between 50 and 100 (e.g. 99.99)"
            )
        parse_weight_bits(self.weight_bits)
        if self.holdout is not None and (not isinstance(self.holdout, int) or self.holdout < 0):
            raise InputError(f"--holdout {self.holdout!r} must be 0 or a positive integer")


def int8_tolerance() -> dict[str, float]:
    """The limits the held-out check judges by: `vggdeploy.metrics.TOLERANCES["int8"]`, the
    ones `validate` judges every INT8 target by (one table for every target)."""
    return {metric: float(limit) for metric, limit in TOLERANCES["int8"].items()}


def calibrate_bundle(
    bundle: Bundle, images: str | Path, options: CalibrationOptions | None = None
) -> dict[str, Any]:
    """Calibrate `bundle`'s fp32 ONNX on `images`, write the Q/DQ model, record it; a summary.

    Raises `InputError` for bad images/options/caches and `CheckFailedError` if the written
    model breaks its target's Q/DQ rules. A held-out comparison below tolerance only warns
    (`summary["warnings"]`), because the file is still what was asked for.
    """
    import onnx

    options = options or CalibrationOptions()
    target = get_target(options.target)
    started = time.perf_counter()
    fp32_path = bundle.artifact_path(onnx_key("fp32"), verify=True)
    model_sha256 = bundle.artifact(onnx_key("fp32")).sha256
    pre = bundle.preprocessing
    split = split_images(images, options.samples, options.seed, options.holdout)
    samples = len(split.calibration)
    skips = ImageSkips(strict=options.strict, on_skip=options.on_skip)
    step = options.step or (lambda _text, _total: None)
    data_sha256 = fingerprint_images(split.calibration, split.root)

    # Parsed once: the tensors to calibrate come from it, and the data pass runs it (the
    # outputs it adds for the pass are removed again: onnxutil.serialize_with_outputs).
    model = onnx.load(str(fp32_path))
    tensors = select_calibration_tensors(model)
    if not tensors:
        raise InputError(f"{fp32_path} has no Conv/Gemm/MatMul inputs to quantize")

    key = cache_key(
        model_sha256=model_sha256,
        data_sha256=data_sha256,
        samples=samples,
        seed=options.seed,
        batch_size=options.batch_size,
        preprocessing=pre.to_dict(),
        tensors=tensors,
    )
    cache_path = Path(options.cache) if options.cache else bundle.root / DEFAULT_CACHE_NAME
    cached = load_cache(cache_path, key, explicit=options.cache is not None)
    collect_seconds = 0.0
    reader = ImageBatchReader(
        split.calibration, pre, bundle.input_name, options.batch_size, skips=skips
    )
    if cached is not None:
        del model  # no data pass: do not hold a 550 MB model while reading the images
        collector, stored_ranges = cached
        log.info("reusing calibration cache %s (no data pass)", cache_path)
        # The histograms were made without the unreadable images; read the images once more
        # (decoding only, no model) so this run reports the same skips as the one that made it.
        step(f"reading the {samples} calibration images (cache reused)", None)
        for _feed in reader:
            pass
    else:
        step(f"calibrating on {samples} images", samples)
        t0 = time.perf_counter()
        collector = collect_statistics(
            model,
            reader,
            tensors,
            on_batch=options.progress if callable(options.progress) else None,
        )
        del model
        collect_seconds = time.perf_counter() - t0
        stored_ranges = {}
    if len(skips.skipped) >= samples:
        raise InputError(
            f"none of the {samples} calibration images drawn from {split.root} could be read "
            "(each is listed above): check the folder"
        )

    ranges = compute_ranges(collector, options.method, options.target, options.percentile)
    range_key = _range_key(options)
    stored_ranges[range_key] = {name: r.to_dict() for name, r in ranges.items()}
    save_cache(
        cache_path,
        key,
        collector,
        stored_ranges,
        images=[p.relative_to(split.root).as_posix() for p in split.calibration],
    )
    calibration_skips = [s.to_dict() for s in skips.skipped]

    calibration_record = {
        "method": options.method,
        **({"percentile": options.percentile} if options.method == "percentile" else {}),
        "samples": samples,
        "samples_asked": split.asked,
        "images_read": samples - len(calibration_skips),
        "seed": options.seed,
        "batch_size": options.batch_size,
        "images": str(images),
        "images_found": split.available,
        "data_sha256": data_sha256,
        "tensors": len(ranges),
        "cache": _display_path(cache_path, bundle.root),
        "cache_reused": cached is not None,
    }
    metadata = {
        "vggdeploy.quantization": json.dumps(
            {"target": target.name, "activations": target.activation_dtype, **calibration_record}
        )
    }
    host_cpu = cpu()
    holdout_reader = (
        ImageBatchReader(split.holdout, pre, bundle.input_name, options.batch_size, skips=skips)
        if split.holdout
        else None
    )
    widths = cpu_kernels.candidates(options.weight_bits, host_cpu, holdout_reader is not None)
    dest = bundle.root / target.filename
    warnings: list[str] = []
    figures: dict[int, dict[str, Any]] = {}
    with bundle.writing(target.filename):
        with atomic_path(dest) as tmp:
            paths = {bits: tmp.with_name(f"{tmp.name}.w{bits}") for bits in widths[1:]}
            paths[widths[0]] = tmp
            try:
                reference = None
                for bits in widths:
                    step(f"writing the Q/DQ model ({bits}-bit weights)", None)
                    qsummary = _write_qdq(
                        fp32_path, ranges, options, metadata, bits, paths[bits], target.name
                    )
                    if holdout_reader is not None:
                        if reference is None:
                            step(f"fp32 on {len(split.holdout)} held-out images", None)
                            reference = _logits(fp32_path, holdout_reader)
                        if len(reference) == 0:
                            continue  # every held-out image was unreadable
                        step(f"int8 ({bits}-bit weights) on {len(reference)} held-out images", None)
                        figures[bits] = compare_on_images(reference, paths[bits], holdout_reader)
                chosen = cpu_kernels.choose(figures) if figures else widths[0]
                if chosen != widths[0]:
                    os.replace(paths[chosen], tmp)
            finally:
                for path in paths.values():
                    if path != tmp:
                        path.unlink(missing_ok=True)
        kernels = cpu_kernels.record(
            host_cpu, options.weight_bits, chosen, figures, holdout_reader is not None
        )
        comparison = _judge_holdout(figures.get(chosen), split, options)
        if comparison.get("unjudged"):
            log.info("held-out check not judged: %s", comparison["unjudged"])
        if comparison.get("passed") is False:
            warnings.append(
                f"INT8 ACCURACY WARNING: on {comparison['images']} held-out images int8 vs fp32 "
                f"cosine {comparison['cosine']:.4f} (worst image {comparison['cosine_min']:.4f}), "
                f"top-1 agreement {comparison['top1_agreement']:.3f}, below the int8 tolerance "
                f"(cosine >= {comparison['tolerance']['cosine']}, top-1 agreement >= "
                f"{comparison['tolerance']['top1']}); try "
                f"{_alternatives(options.method)}, more --samples, or images closer to the "
                "deployment data"
            )
        elif comparison.get("skipped"):
            warnings.append(f"held-out comparison skipped: {comparison['skipped']}")
        for line in warnings:
            log.warning(line)

        record = bundle.add_artifact(
            target.artifact_key,
            target.filename,
            kind="onnx",
            precision="int8",
            target=target.name,
            activations=target.activation_dtype,
            weights=f"int8 per-channel symmetric, {chosen}-bit range"
            if chosen != 8
            else "int8 per-channel symmetric",
            quantized_ops=qsummary["quantized_ops"],
            kept_float=qsummary["kept_float"],
            fc_layers=fc_layers_record(qsummary["fc_layers"]),
            cpu_kernels=kernels,
            calibration=calibration_record,
            holdout=comparison,
        )
    return {
        "artifact": target.artifact_key,
        "path": str(dest),
        "target": target.name,
        "method": options.method,
        "samples": samples,
        "samples_asked": split.asked,
        "images_found": split.available,
        "holdout_drawn": len(split.holdout),
        "images_read": calibration_record["images_read"],
        "skipped": [s.to_dict() for s in skips.skipped],
        "tensors": len(ranges),
        "quantized_ops": qsummary["quantized_ops"],
        "kept_float": qsummary["kept_float"],
        "weight_bits": chosen,
        "cpu_kernels": kernels,
        "cache": str(cache_path),
        "cache_reused": cached is not None,
        "data_pass_seconds": round(collect_seconds, 2),
        "seconds": round(time.perf_counter() - started, 2),
        "holdout": comparison,
        "warnings": warnings,
        "sha256": record.sha256,
        "ranges": {name: r.to_dict() for name, r in ranges.items()},
    }


#: Why the FC layers are int8 (or float) in the one INT8 file, per target.
FC_WHY = {
    "onnxruntime": "int8 FC layers measured faster on ONNX Runtime's CPU (benchmarks/int8_bench.py, "
    "VGG-16 batch 1: int8 weights are a quarter of the bytes of a memory-bound layer)",
    "tensorrt": "not measured here (needs a GPU); NVIDIA ModelOpt keeps batch-1 FC layers float "
    "for TensorRT (its GEMV rule); `--keep-float classifier.0,classifier.3,classifier.6` does "
    "the same",
}


def fc_layers_record(layers: dict[str, str]) -> dict[str, Any]:
    """The manifest's record of the FC (Gemm/MatMul) layers' precision in the one INT8 file:
    what each layer is, and per target what that choice rests on."""
    kept = sorted(layer for layer, precision in layers.items() if precision == "float")
    return {
        "layers": dict(layers),
        "chosen_by": "--keep-float" if kept else "default (int8)",
        "why": dict(FC_WHY),
    }


def _write_qdq(
    fp32_path: Path,
    ranges: dict[str, Any],
    options: CalibrationOptions,
    metadata: dict[str, str],
    bits: int,
    dest: Path,
    target: str,
) -> dict[str, Any]:
    """Quantize a fresh copy of the fp32 model, check it against `target`'s rules, save it."""
    import onnx

    model = onnx.load(str(fp32_path))
    qmodel, qsummary = quantize_model(
        model,
        ranges,
        target,
        metadata=metadata,
        in_place=True,
        keep_float=options.keep_float,
        weight_bits=bits,
    )
    del model
    problems = verify_qdq(qmodel, target)
    if problems:
        raise CheckFailedError(
            f"the written Q/DQ model breaks {target} rules: " + "; ".join(problems[:5])
        )
    onnx.checker.check_model(qmodel)
    onnx.save(qmodel, str(dest))
    return qsummary


def _alternatives(method: str) -> str:
    others = [m for m in METHODS if m != method]
    return " or ".join(f"--method {m}" for m in others)


def _range_key(options: CalibrationOptions) -> str:
    parts = [options.method, options.target]
    if options.method == "percentile":
        parts.append(f"{options.percentile:g}")
    return "/".join(parts)


def _display_path(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(path)


def _logits(
    path: str | Path, reader: ImageBatchReader, output_name: str | None = None
) -> np.ndarray:
    """Logits of `path` on every batch of `reader` (ORT CPU, fused kernels), as (N, classes)."""
    # One model in memory at a time; only the (small) logits are kept.
    session = cpu_session(path, memory_arena=False)
    name = output_name or session.get_outputs()[0].name
    logits = [session.run([name], feed)[0] for feed in reader]
    del session
    if not logits:
        return np.zeros((0, 0), np.float32)
    return np.concatenate(logits).reshape(sum(len(x) for x in logits), -1)


def compare_on_images(
    reference: str | Path | np.ndarray,
    candidate: str | Path,
    reader: ImageBatchReader,
    output_name: str | None = None,
) -> dict[str, Any]:
    """Run two ONNX models on the same batches (ORT CPU, one model loaded at a time).

    `reference` may also be its logits already computed on `reader` (`_logits`), so several
    candidates are compared against one reference run. Returns the cosine of the flattened
    logits (as `validate` computes it), the mean and worst per-image cosine, top-1 agreement
    (fraction of images whose arg-max matches) and top-5 overlap (mean |top5 ref & top5 cand| / 5).
    """
    if isinstance(reference, np.ndarray):
        a = reference.astype(np.float64)
    else:
        a = _logits(reference, reader, output_name).astype(np.float64)
    b = _logits(candidate, reader, output_name).astype(np.float64)
    return compare_logits(a, b)


def compare_logits(a: np.ndarray, b: np.ndarray) -> dict[str, Any]:
    """`compare_on_images`'s figures for reference logits `a` and candidate logits `b`."""
    figures = compare_outputs(a, b)  # the same metrics `validate` judges
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    per_image = np.divide((a * b).sum(axis=1), norms, out=np.ones(len(a)), where=norms > 0)
    return {
        "images": len(a),
        "cosine": figures["cosine"],
        "cosine_mean": float(per_image.mean()),
        "cosine_min": float(per_image.min()),
        "top1_agreement": figures["top1"],
        "top5_overlap": figures["top5"],
    }


def _judge_holdout(
    figures: dict[str, Any] | None, split: ImageSplit, options: CalibrationOptions
) -> dict[str, Any]:
    tolerance = int8_tolerance()
    if figures is None:
        why = (
            f"every one of the {len(split.holdout)} held-out images was unreadable"
            if split.holdout
            else f"no images left for a held-out check ({split.available} found, "
            f"{len(split.calibration)} used for calibration); add images or lower --samples"
        )
        return {"images": 0, "skipped": why, "tolerance": tolerance}
    log.info(
        "held-out int8 vs fp32 on %d images: cosine %.4f (worst image %.4f), top-1 agreement "
        "%.3f, top-5 overlap %.3f",
        figures["images"],
        figures["cosine"],
        figures["cosine_min"],
        figures["top1_agreement"],
        figures["top5_overlap"],
    )
    return {
        **figures,
        "reference": "fp32 model.onnx, onnxruntime CPU",
        **judge_holdout(figures, tolerance),
    }


def judge_holdout(figures: dict[str, Any], tolerance: dict[str, float]) -> dict[str, Any]:
    """The held-out verdict by `metrics.verdict`, the rule `validate` judges INT8 by: `passed`
    True/False, or None with `unjudged` (why) when too few images were compared to judge."""
    outcome = verdict(
        {
            "cosine": figures["cosine"],
            "top1": figures["top1_agreement"],
            "top5": figures["top5_overlap"],
        },
        tolerance,
        figures["images"],
    )
    return {
        "tolerance": tolerance,
        "images_needed": outcome.needed,
        "passed": outcome.passed,
        **({} if outcome.judged else {"unjudged": outcome.too_few()}),
    }
