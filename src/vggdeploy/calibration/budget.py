"""`calibrate --sensitivity / --max-drop / --keep-float`: INT8 with an accuracy budget.

`calibrate_with_accuracy(bundle, images, options, AccuracyOptions(...))`:

1. check the request before anything is written (`--keep-float` names, the labelled folder);
2. calibrate as `calibrate_bundle` does and write the plain INT8 file (every layer int8); its
   ranges are reused for everything below, so there is one data pass;
3. measure the plain file and, per layer, the cost of quantizing that layer alone
   (`sensitivity.layer_sensitivity`), against one fp32 reference pass;
4. with `max_drop`: keep layers float greedily, most sensitive first, re-measuring top-1 of the
   whole model after each, until it is within `max_drop` points of fp32. At most
   `(layers - 1) // 2` layers may stay float (most layers stay int8); past that the budget
   cannot be met: the plain INT8 file stays, recorded with `accuracy_budget.met = false`, and
   `CheckFailedError` (exit 2) says so. An fp32 model is never written under the int8 name;
5. write the final file with those layers float through `calibrate_bundle(keep_float=...)`
   (the calibration cache makes it a re-run without a data pass; the stage checks it against
   the target's Q/DQ rules and on the held-out images), and record the sensitivity table, the
   layers kept float (`float_layers`: ONNX node and layer names) and the before/after figures
   on the artifact's manifest record.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Collection, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from vggdeploy.bundle import Bundle
from vggdeploy.calibration.calibrators import TensorRange
from vggdeploy.calibration.data import split_images
from vggdeploy.calibration.qdq import get_target, quantizable_nodes, resolve_keep_float
from vggdeploy.calibration.sensitivity import (
    OutputScorer,
    VariantProgress,
    build_variant,
    layer_sensitivity,
    names_of,
    read_labelled_folder,
)
from vggdeploy.calibration.stage import CalibrationOptions, calibrate_bundle
from vggdeploy.errors import CheckFailedError, InputError
from vggdeploy.precision import onnx_key

log = logging.getLogger(__name__)

_EPS = 1e-9


@dataclass
class AccuracyOptions:
    """The accuracy side of `vggdeploy calibrate` (`--keep-float` is
    `CalibrationOptions.keep_float`).

    `sensitivity`: measure every layer alone. `accuracy_images`: a labelled folder (ImageFolder
    layout) to measure top-1 on (else agreement with fp32 on the held-out calibration images).
    `max_drop`: the budget in top-1 points (needs `accuracy_images`; implies the sensitivity
    table).
    """

    sensitivity: bool = False
    accuracy_images: str | Path | None = None
    max_drop: float | None = None

    def __post_init__(self) -> None:
        if self.max_drop is not None:
            if not math.isfinite(self.max_drop) or self.max_drop < 0:
                raise InputError(f"--max-drop {self.max_drop} must be 0 or more (top-1 points)")
            if self.accuracy_images is None:
                raise InputError(
                    "--max-drop needs --accuracy-images DIR: a labelled folder (one sub-folder "
                    "per class) to measure top-1 on"
                )

    @property
    def measures(self) -> bool:
        """Whether anything is measured (sensitivity table and plain-int8 figures)."""
        return self.sensitivity or self.accuracy_images is not None or self.max_drop is not None


def split_names(values: Iterable[str]) -> tuple[str, ...]:
    """`--keep-float a,b --keep-float c` -> ("a", "b", "c"), stripped, without repeats."""
    names = [n.strip() for value in values for n in str(value).split(",") if n.strip()]
    return tuple(dict.fromkeys(names))


def calibrate_with_accuracy(
    bundle: Bundle,
    images: str | Path,
    options: CalibrationOptions | None = None,
    accuracy: AccuracyOptions | None = None,
    progress: VariantProgress | None = None,
) -> dict[str, Any]:
    """`calibrate_bundle`, plus sensitivity, an accuracy budget and layers kept float.

    Returns `calibrate_bundle`'s summary with `sensitivity`, `accuracy`, `accuracy_budget` and
    `float_layers` ([{node, layer}] of the layers kept float) added. Raises `CheckFailedError`
    when `max_drop` cannot be met with most layers in int8.
    """
    import onnx

    options = options or CalibrationOptions()
    accuracy = accuracy or AccuracyOptions()
    if not accuracy.measures and not options.keep_float:
        return calibrate_bundle(bundle, images, options)
    target = get_target(options.target)
    key = target.artifact_key
    fp32_path = bundle.artifact_path(onnx_key("fp32"), verify=True)

    # 1. refuse a bad request before anything is written
    fp32 = onnx.load(str(fp32_path))
    table = quantizable_nodes(fp32)
    manual = resolve_keep_float(fp32, options.keep_float)
    if table and len(manual) >= len(table):
        raise InputError(
            f"--keep-float names all {len(table)} quantizable layers: nothing would be int8; "
            "use the fp32 model.onnx instead"
        )
    del fp32  # calibrate_bundle loads its own copy; never hold two
    labelled = (
        read_labelled_folder(accuracy.accuracy_images, bundle.labels())
        if accuracy.accuracy_images is not None
        else None
    )
    max_float = (len(table) - 1) // 2  # more than half of the layers stay int8
    outcome: dict[str, Any] = {"layers": len(table)}
    if not accuracy.measures:  # --keep-float by hand only: the stage writes it
        summary = calibrate_bundle(bundle, images, options)
        return _finish(bundle, key, summary, outcome, table, manual, max_float)

    # 2. the plain INT8 file (every layer int8), and its ranges
    summary = calibrate_bundle(bundle, images, replace(options, keep_float=()))
    ranges = {name: TensorRange(**r) for name, r in summary["ranges"].items()}
    bits = summary.get("weight_bits", 8)  # the stage's choice for this CPU, kept throughout
    fp32 = onnx.load(str(fp32_path))

    # 3. measure
    unreadable = {Path(skip["file"]) for skip in summary.get("skipped", [])}
    scorer = _scorer(bundle, images, options, labelled, fp32_path, unreadable)
    plain = scorer.score(bundle.root / target.filename)
    outcome["sensitivity"] = layer_sensitivity(
        fp32, ranges, target.name, scorer, progress, weight_bits=bits
    )
    outcome["accuracy"] = {**scorer.describe(), "plain_int8": plain}

    # 4. the budget
    kept = set(manual)
    if accuracy.max_drop is not None:
        budget = _meet_budget(
            (fp32, ranges, target.name, bits),
            scorer,
            outcome,
            table,
            manual,
            accuracy.max_drop,
            max_float,
        )
        outcome["accuracy_budget"] = budget
        if not budget["met"]:
            outcome["float_layers"] = []
            _record(bundle, key, outcome)
            raise CheckFailedError(_budget_failure(budget, target.filename, len(table)))
        kept = {row["node"] for row in budget["kept_float"]}
    del fp32

    # 5. the final file, written and checked by the stage (the cache makes it a quick re-run)
    if kept:
        final_options = replace(options, keep_float=tuple(sorted(kept)), weight_bits=bits)
        summary = {
            **calibrate_bundle(bundle, images, final_options),
            "plain_int8_holdout": summary["holdout"],
        }
        outcome["accuracy"]["final"] = scorer.score(bundle.root / target.filename)
    else:
        outcome["accuracy"]["final"] = plain
    return _finish(bundle, key, summary, outcome, table, kept, max_float)


def _finish(
    bundle: Bundle,
    key: str,
    summary: dict[str, Any],
    outcome: dict[str, Any],
    table: list[tuple[str, str, str]],
    kept: set[str],
    max_float: int,
) -> dict[str, Any]:
    outcome["float_layers"] = names_of(table, kept)
    outcome["int8_layers"] = len(table) - len(kept)
    warnings = list(summary["warnings"])
    if len(kept) > max_float:
        warnings.append(
            f"--keep-float leaves {len(kept)} of {len(table)} layers float: most of the model "
            "is not int8"
        )
    record = _record(bundle, key, outcome)
    return {**summary, **outcome, "warnings": warnings, "sha256": record.sha256}


def _scorer(
    bundle: Bundle,
    images: str | Path,
    options: CalibrationOptions,
    labelled: Any,
    fp32_path: Path,
    unreadable: Collection[Path] = (),
) -> OutputScorer:
    """Scores on the labelled folder (every image must read: the labels are aligned with
    them), else on the held-out (or calibration) images the stage could read."""
    pre = bundle.preprocessing
    if labelled is not None:
        return OutputScorer(
            fp32_path,
            labelled.paths,
            pre,
            bundle.input_name,
            labelled.targets,
            options.batch_size,
            images="labelled",
            class_mapping=labelled.method,
        )
    split = split_images(images, options.samples, options.seed, options.holdout)
    paths, which = (
        (split.holdout, "held-out") if split.holdout else (split.calibration, "calibration")
    )
    paths = [p for p in paths if p not in unreadable]
    return OutputScorer(
        fp32_path, paths, pre, bundle.input_name, None, options.batch_size, images=which
    )


def _meet_budget(
    model: tuple[Any, dict[str, TensorRange], str, int],
    scorer: OutputScorer,
    outcome: dict[str, Any],
    table: list[tuple[str, str, str]],
    manual: set[str],
    max_drop: float,
    max_float: int,
) -> dict[str, Any]:
    """Greedy: keep the next most sensitive layer float until top-1 is within `max_drop`."""
    kept = set(manual)
    current = (
        scorer.score(build_variant(*model, keep_float=kept))
        if kept
        else outcome["accuracy"]["plain_int8"]
    )
    steps = [{"kept_float": names_of(table, kept), **current}]
    for row in outcome["sensitivity"]:
        if current["top1_drop"] <= max_drop + _EPS or len(kept) >= max_float:
            break
        if row["node"] in kept:
            continue
        kept.add(row["node"])
        current = scorer.score(build_variant(*model, keep_float=kept))
        steps.append({"kept_float": names_of(table, kept), **current})
        log.info(
            "kept %s float: top-1 %.2f%% (%+.2f)",
            row["layer"],
            current["top1"],
            -current["top1_drop"],
        )
    met = current["top1_drop"] <= max_drop + _EPS
    return {
        "max_drop": max_drop,
        "met": met,
        "fp32_top1": scorer.fp32_top1,
        "before": {
            "top1": outcome["accuracy"]["plain_int8"]["top1"],
            "top1_drop": outcome["accuracy"]["plain_int8"]["top1_drop"],
        },
        "after": {"top1": current["top1"], "top1_drop": current["top1_drop"]},
        "kept_float": names_of(table, kept),
        "max_float_layers": max_float,
        "steps": steps,
    }


def _budget_failure(budget: dict[str, Any], filename: str, layers: int) -> str:
    kept = budget["kept_float"]
    return (
        f"--max-drop {budget['max_drop']:g} cannot be met with most layers in INT8: fp32 top-1 "
        f"{budget['fp32_top1']:.2f}%, plain int8 {budget['before']['top1']:.2f}% "
        f"({-budget['before']['top1_drop']:+.2f} points), with {len(kept)} of {layers} layers "
        f"float ({', '.join(k['layer'] for k in kept) or 'none'}) {budget['after']['top1']:.2f}% "
        f"({-budget['after']['top1_drop']:+.2f}); {filename} is the plain INT8 file (recorded "
        "with accuracy_budget.met false): try another --method, more --samples, or a larger "
        "--max-drop"
    )


def _record(bundle: Bundle, key: str, outcome: dict[str, Any]) -> Any:
    """Add the sensitivity/budget facts to the artifact's manifest record (file unchanged)."""
    record = bundle.artifact(key)
    facts = record.to_json_dict()
    for field in ("path", "sha256", "size"):
        facts.pop(field, None)
    facts.update({k: v for k, v in outcome.items() if k in _RECORDED})
    return bundle.add_artifact(key, record.path, **facts)


_RECORDED = ("sensitivity", "accuracy", "accuracy_budget", "float_layers", "int8_layers", "layers")
