"""Compare a bundle's runtimes and precisions with a reference on the same inputs.

Every target (a runtime spec such as `onnxruntime:cpu@int8` or `tensorrt@fp16`) is compared with
the reference (PyTorch fp32 by default) on the same inputs: the metrics of `vggdeploy.metrics`,
judged by the tolerances of the target's precision. Returns a `ValidationReport`; drawing it is
`vggdeploy.report.validate`.

Which inputs judge a target is one rule, shared by `vggdeploy validate` and `pipeline`
(`inputs_for`): the user's images when given; otherwise seeded random tensors for fp32/fp16
(fine for parity) and the photographs shipped with vggdeploy for INT8, whose activation ranges
were calibrated on real images - random tensors never judge INT8.

Runtimes run one after another over the same input stream (re-generated or re-read for each),
so only one model is in memory at a time and only the (small) outputs are kept.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vggdeploy import precision as P
from vggdeploy.bundle import Bundle
from vggdeploy.errors import InputError, RuntimeUnavailableError, VggDeployError
from vggdeploy.inputs import DEFAULT_BATCH, DEFAULT_SAMPLES, InputSet
from vggdeploy.metrics import METRICS, compare_outputs, merge_tolerances, verdict
from vggdeploy.preprocess import ImageSkips, OnSkip, SkippedImage
from vggdeploy.runtimes.base import Runtime, infer_array
from vggdeploy.runtimes.registry import (
    REFERENCE,
    RuntimeSpec,
    default_validation_specs,
    open_runtime,
    unavailable,
)

log = logging.getLogger(__name__)

Progress = Callable[[str], None]


# -- inputs -------------------------------------------------------------------------------------


def judged_on_images(precision: str) -> bool:
    """INT8 forms are judged on real images, never on random tensors."""
    return P.get(precision).numeric == "int8"


def inputs_for(
    bundle: Bundle,
    precision: str,
    *,
    images: str | os.PathLike[str] | None = None,
    samples: int | None = None,
    batch: int = DEFAULT_BATCH,
    seed: int = 0,
    skips: ImageSkips | None = None,
) -> InputSet:
    """The inputs a target of `precision` is judged on (the rule in the module docstring);
    unreadable images follow `skips` (None: the first one raises)."""
    if images is not None:
        return InputSet.images(bundle, images, samples=samples, batch=batch, skips=skips)
    if judged_on_images(precision):
        return InputSet.photographs(bundle, samples=samples, batch=batch, skips=skips)
    return InputSet.random(bundle, samples=samples or DEFAULT_SAMPLES, batch=batch, seed=seed)


# -- results ------------------------------------------------------------------------------------


@dataclass
class Check:
    """One metric of one target against its limit."""

    target: str
    metric: str
    value: float
    limit: float
    passed: bool

    @property
    def op(self) -> str:
        return "<=" if METRICS[self.metric][0] == "max" else ">="

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "metric": self.metric,
            "value": json_float(self.value),
            "op": self.op,
            "limit": self.limit,
            "passed": self.passed,
        }


@dataclass
class TargetResult:
    """What one target did: compared (metrics and checks) or skipped (with the reason)."""

    spec: RuntimeSpec
    label: str
    status: str  # "compared" | "skipped"
    inputs: str = ""
    reason: str | None = None
    runtime: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)
    #: why a compared target has no verdict (too few images for its limits), else None
    unjudged: str | None = None

    @property
    def precision(self) -> str:
        return self.spec.precision or "fp32"

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.spec.to_dict(),
            "label": self.label,
            "status": self.status,
            "inputs": self.inputs,
            "reason": self.reason,
            "runtime": self.runtime,
            "metrics": {k: json_float(v) for k, v in self.metrics.items()},
            "checks": [c.to_dict() for c in self.checks],
            "passed": self.passed if self.status == "compared" and not self.unjudged else None,
            "unjudged": self.unjudged,
        }


@dataclass
class ValidationReport:
    """The outcome of `validate_bundle`; `passed` is the verdict."""

    bundle: str
    reference: str
    reference_runtime: dict[str, Any]
    inputs: dict[str, dict[str, Any]]  # description -> InputSet.to_dict()
    tolerances: dict[str, dict[str, float]]
    results: list[TargetResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: artifacts the manifest lists whose files are missing: each one fails the validation
    missing: list[str] = field(default_factory=list)
    #: unreadable images left out of every comparison (`preprocess.SkippedImage`)
    skipped_images: list[SkippedImage] = field(default_factory=list)

    @property
    def checks(self) -> list[Check]:
        return [c for r in self.results for c in r.checks]

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]

    @property
    def skipped(self) -> list[TargetResult]:
        return [r for r in self.results if r.status == "skipped"]

    @property
    def compared(self) -> list[TargetResult]:
        return [r for r in self.results if r.status == "compared"]

    @property
    def passed(self) -> bool:
        """True when every check passed, no listed artifact is missing, and at least one target
        was compared."""
        return bool(self.checks) and not self.failures and not self.missing

    def summary(self) -> str:
        checks, failures = self.checks, self.failures
        targets = _count(len([r for r in self.compared if r.checks]), "target")
        if self.missing:
            lost = len(self.missing)
            return f"FAILED: {lost} listed artifact{'' if lost == 1 else 's'} missing" + (
                f"; {len(failures)} of {len(checks)} checks failed on {targets}" if checks else ""
            )
        unjudged = [r for r in self.compared if r.unjudged]
        if not checks and unjudged:
            few = _count(len(unjudged), "target")
            return f"FAILED: nothing was judged ({few} compared on too few images)"
        if not checks and self.compared:
            return "FAILED: nothing was judged (no tolerances for the targets compared)"
        if not checks:
            return "FAILED: nothing was compared (every target was skipped)"
        if failures:
            return f"FAILED: {len(failures)} of {len(checks)} checks on {targets}"
        return f"PASSED: {len(checks)} checks on {targets}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "bundle": self.bundle,
            "passed": self.passed,
            "summary": self.summary(),
            "reference": {"label": self.reference, "runtime": self.reference_runtime},
            "inputs": self.inputs,
            "tolerances": self.tolerances,
            "targets": [r.to_dict() for r in self.results],
            "failures": [c.to_dict() for c in self.failures],
            "missing": self.missing,
            "skipped_images": [s.to_dict() for s in self.skipped_images],
            "notes": self.notes,
        }


# -- running ------------------------------------------------------------------------------------


def run_inputs(runtime: Runtime, inputs: InputSet) -> np.ndarray:
    """Every batch of `inputs` through a loaded runtime; the first output, as float32."""
    outputs = [infer_array(runtime, batch) for batch in inputs.batches()]
    if not outputs:
        raise InputError(f"none of {inputs.key()} could be read (each is listed above)")
    return np.concatenate(outputs)


def validate_bundle(
    bundle: Bundle | str | os.PathLike[str],
    specs: Sequence[RuntimeSpec] | None = None,
    *,
    images: str | os.PathLike[str] | None = None,
    samples: int | None = None,
    batch: int = DEFAULT_BATCH,
    seed: int = 0,
    tolerances: Mapping[str, Mapping[str, float]] | None = None,
    reference: RuntimeSpec = REFERENCE,
    skip_unavailable: bool | None = None,
    options: Mapping[str, Any] | None = None,
    progress: Progress | None = None,
    reference_cache: dict[tuple[str, str, str], tuple[np.ndarray, str, dict[str, Any]]]
    | None = None,
    outputs_cache: dict[tuple[str, ...], tuple[np.ndarray, str, dict[str, Any]]] | None = None,
    strict: bool = True,
    on_skip: OnSkip | None = None,
) -> ValidationReport:
    """Compare each target with `reference` and judge it by its precision's tolerances.

    Args:
        bundle: a `Bundle` or a bundle directory.
        specs: targets, each with a precision (see `registry.expand`); None: every ONNX file
            on ONNX Runtime CPU plus every TensorRT engine (`default_validation_specs`).
        images, samples, batch, seed: the inputs (`inputs_for`).
        tolerances: overrides merged over `metrics.TOLERANCES`.
        reference: what every target is compared with (PyTorch fp32 on the CPU by default).
        skip_unavailable: list a target this host cannot run as skipped, with the reason,
            instead of raising. Default: True for the default targets, False for named ones.
        options: shared runtime options (`threads`, `allow_fallback`), passed where they apply.
        progress: called with a line before each runtime runs.
        reference_cache: a dict the caller keeps between calls on the same bundle (the
            pipeline's two validations): the reference's outputs per (model.onnx sha256,
            reference spec, input set), so identical reference runs happen once.
        outputs_cache: likewise for the targets (the pipeline's validate-export and final
            validation both run model.onnx on ONNX Runtime CPU on the same random inputs): a
            target's outputs per (artifact sha256, target, options, input set), reused only for
            ONNX Runtime on the CPU (`REUSABLE`) and only after the artifact's sha256 is checked
            again, as loading it would; the metrics and verdict are computed afresh.
        strict, on_skip: an unreadable image raises (`strict`), or is left out of every
            comparison, `on_skip` called for it once (`preprocess.ImageSkips`).
    """
    bundle = bundle if isinstance(bundle, Bundle) else Bundle.load(bundle)
    say = progress or (lambda _text: None)
    options = dict(options or {})
    if skip_unavailable is None:
        skip_unavailable = specs is None
    specs = list(specs) if specs is not None else default_validation_specs(bundle)
    if not specs:
        raise InputError(f"nothing to compare in {bundle.root}: give at least one --runtime")
    for spec in specs:
        if not spec.precision:
            raise InputError(f"target {spec.text} has no precision (expand it first)")
    limits = merge_tolerances(tolerances)

    # A file the manifest lists but the bundle lacks fails the validation (never a skip).
    missing = [m for spec in specs if (m := missing_artifact(bundle, spec))]
    specs = [s for s in specs if not missing_artifact(bundle, s)]
    # Construct every runtime first (cheap): a bad option or a missing artifact fails now,
    # not after the reference has run.
    prepared = [_prepare(bundle, spec, skip_unavailable, options) for spec in specs]

    # One input set per rule; the reference runs once on each set that some target needs.
    # Sets are keyed by what they were asked to be (`key`): `describe` counts skipped images.
    skips = ImageSkips(strict=strict, on_skip=on_skip)
    sets: dict[str, InputSet] = {}

    def inputs_of(spec: RuntimeSpec) -> InputSet:
        s = inputs_for(
            bundle,
            spec.precision or "fp32",
            images=images,
            samples=samples,
            batch=batch,
            seed=seed,
            skips=skips,
        )
        return sets.setdefault(s.key(), s)

    for spec, runtime, _reason in prepared:
        if runtime is not None:
            inputs_of(spec)
    ref_outputs: dict[str, np.ndarray] = {}
    ref_label, ref_info = reference.text, {}
    cache = reference_cache if reference_cache is not None else {}
    model_sha = bundle.artifacts["onnx.fp32"].sha256 if "onnx.fp32" in bundle.artifacts else ""

    def key(text: str) -> tuple[str, str, str]:
        return (model_sha, reference.text, text)

    for text in sets:
        if key(text) in cache:
            ref_outputs[text], ref_label, ref_info = cache[key(text)]
    missing_sets = {t: s for t, s in sets.items() if t not in ref_outputs}
    if missing_sets:
        with open_runtime(bundle, reference, **options) as ref_runtime:
            for text, s in missing_sets.items():
                say(f"reference {ref_runtime.label} on {text}")
                ref_outputs[text] = run_inputs(ref_runtime, s)
            ref_label, ref_info = ref_runtime.label, ref_runtime.describe().to_dict()
        for text in missing_sets:
            cache[key(text)] = (ref_outputs[text], ref_label, ref_info)

    report = ValidationReport(
        bundle=str(bundle.root),
        reference=ref_label,
        reference_runtime=ref_info,
        inputs={s.describe(): s.to_dict() for s in sets.values()},
        skipped_images=skips.skipped,
        tolerances={s.precision: limits.get(s.precision, {}) for s in specs if s.precision},
        missing=missing,
    )
    for spec, runtime, reason in prepared:
        if runtime is None:
            report.results.append(TargetResult(spec, spec.text, "skipped", reason=reason))
            continue
        s = inputs_of(spec)
        ref_out = ref_outputs[s.key()]
        reuse = _reuse_key(bundle, spec, options, s, key(s.key()))
        done = outputs_cache.get(reuse) if reuse and outputs_cache is not None else None
        if done is not None:
            # The file is the one that ran (sha256 checked as a load checks it); the outputs of
            # the same file, runtime, options and inputs: judged again, exactly as if re-run.
            bundle.artifact_path(_artifact_key(spec), verify=True)
            say(f"{done[1]} on {s.describe()} (outputs of this run's earlier validation)")
            report.results.append(_compared(spec, *done, s, ref_out, limits))
            continue
        say(f"{runtime.label} on {s.describe()}")
        outcome = _run_one(spec, runtime, s, skip_unavailable)
        if isinstance(outcome, TargetResult):
            report.results.append(outcome)
            continue
        if reuse and outputs_cache is not None:
            outputs_cache[reuse] = outcome
        report.results.append(_compared(spec, *outcome, s, ref_out, limits))
    for result in report.compared:
        if limits_key(result.spec, result.runtime) == "tf32":
            report.tolerances["tf32"] = limits.get("tf32", {})
            report.notes.append(
                f"{result.label} is an fp32 engine whose layers may use TF32: judged by the "
                "tf32 limits"
            )
        if not limits.get(result.precision):
            report.notes.append(
                f"no tolerances for precision {result.precision!r}: {result.label} is "
                "reported but not judged (add --tol)"
            )
        if result.runtime.get("fallback"):
            report.notes.append(f"{result.label} did not run on the provider asked for")
    return report


def limits_key(spec: RuntimeSpec, runtime_info: Mapping[str, Any]) -> str:
    """Which tolerances judge a target: its precision's, or "tf32" for an fp32 TensorRT
    engine whose manifest says fp32 layers may use TF32 (`vggdeploy build --tf32`, or an
    engine built before vggdeploy cleared TensorRT's TF32 default)."""
    precision = spec.precision or "fp32"
    built = runtime_info.get("built_with") if runtime_info else None
    flags = built.get("flags") if isinstance(built, Mapping) else None
    if precision == "fp32" and isinstance(flags, Mapping) and flags.get("tf32") is not False:
        return "tf32"
    return precision


def missing_artifact(bundle: Bundle, spec: RuntimeSpec) -> str | None:
    """Why `spec`'s artifact is listed in the manifest but not on disk, or None."""
    key = _artifact_key(spec)
    if spec.cls.ARTIFACT_KIND is None or key not in bundle.artifacts or bundle.has_artifact(key):
        return None
    return (
        f"{bundle.artifacts[key].path} is listed in the manifest as {key} but missing: re-create "
        f"it with `{P.make_command(key, str(bundle.root))}`"
    )


def _prepare(
    bundle: Bundle, spec: RuntimeSpec, skip_unavailable: bool, options: Mapping[str, Any]
) -> tuple[RuntimeSpec, Runtime | None, str | None]:
    """(spec, constructed runtime or None, why it is skipped)."""
    reason = unavailable(spec, bundle, **options)
    if reason is None:
        try:
            return spec, open_runtime(bundle, spec, **options), None
        except RuntimeUnavailableError as exc:
            reason = str(exc)
    if not skip_unavailable:
        raise RuntimeUnavailableError(f"{spec.text}: {reason}")
    return spec, None, reason


#: runtimes whose outputs `validate_bundle` may take from `outputs_cache`: ONNX Runtime's CPU
#: provider, whose kernels give the same outputs for the same model, session options and inputs
#: (`test_validate_reuse` checks two sessions bit for bit). GPU runtimes may pick kernels per run.
REUSABLE = frozenset({("onnxruntime", "cpu")})


def _artifact_key(spec: RuntimeSpec) -> str:
    return f"{spec.cls.ARTIFACT_KIND}.{spec.precision}"


def _reuse_key(
    bundle: Bundle,
    spec: RuntimeSpec,
    options: Mapping[str, Any],
    inputs: InputSet,
    reference: tuple[str, str, str],
) -> tuple[str, ...] | None:
    """What a target's outputs depend on, or None when they are not reused: only on seeded
    random inputs, which are made, never read (an image set read again reports its unreadable
    files again, as `vggdeploy validate` would)."""
    if (spec.name, spec.device or "cpu") not in REUSABLE or inputs.kind != "random":
        return None
    record = bundle.artifacts.get(_artifact_key(spec))
    if record is None:
        return None
    shown = repr(sorted((k, repr(v)) for k, v in options.items()))
    return (record.sha256, spec.text, spec.precision or "", shown, inputs.key(), *reference)


def _run_one(
    spec: RuntimeSpec,
    runtime: Runtime,
    inputs: InputSet,
    skip_unavailable: bool,
) -> tuple[np.ndarray, str, dict[str, Any]] | TargetResult:
    """The target's (outputs, label, description), or its skipped `TargetResult`."""
    label = runtime.label
    try:
        with runtime:
            log.info("running %s", runtime.label)
            got = run_inputs(runtime, inputs)
            label, info = runtime.label, runtime.describe().to_dict()
    except (RuntimeUnavailableError, ImportError) as exc:
        if not skip_unavailable:
            if isinstance(exc, VggDeployError):
                raise
            raise RuntimeUnavailableError(f"{label}: cannot import what it needs ({exc})") from None
        reason = str(exc) if isinstance(exc, VggDeployError) else f"cannot import ({exc})"
        log.info("skipping %s: %s", label, reason)
        return TargetResult(spec, label, "skipped", reason=reason)
    return got, label, info


def _compared(
    spec: RuntimeSpec,
    got: np.ndarray,
    label: str,
    info: dict[str, Any],
    inputs: InputSet,
    ref_out: np.ndarray,
    limits: Mapping[str, Mapping[str, float]],
) -> TargetResult:
    """The target's metrics against the reference and its checks."""
    if got.shape != ref_out.shape:
        raise InputError(
            f"{label} returned shape {got.shape}, the reference {ref_out.shape}: not the same model"
        )
    metrics = compare_outputs(ref_out, got)
    checks, unjudged = judge_on(label, metrics, limits.get(limits_key(spec, info), {}), len(got))
    return TargetResult(
        spec,
        label,
        "compared",
        inputs.describe(),
        runtime=info,
        metrics=metrics,
        checks=checks,
        unjudged=unjudged,
    )


def judge(target: str, metrics: Mapping[str, float], limits: Mapping[str, float]) -> list[Check]:
    """One `Check` per limit of a precision (`metrics.TOLERANCES[precision]`, merged)."""
    return [Check(target, *check) for check in verdict(metrics, limits, 0).checks]


def judge_on(
    target: str, metrics: Mapping[str, float], limits: Mapping[str, float], images: int
) -> tuple[list[Check], str | None]:
    """`judge` by the one rule `metrics.verdict` (which `calibrate`'s held-out check uses
    too): with too few `images` to judge by `limits`, no checks and the sentence saying why."""
    outcome = verdict(metrics, limits, images)
    if not outcome.judged:
        return [], outcome.too_few()
    return [Check(target, *check) for check in outcome.checks], None


def _count(n: int, what: str) -> str:
    return f"{n} {what}" + ("" if n == 1 else "s")


def json_float(value: float) -> float | str:
    return value if np.isfinite(value) else str(value)


__all__ = [
    "Check",
    "TargetResult",
    "ValidationReport",
    "inputs_for",
    "judge",
    "judge_on",
    "judged_on_images",
    "run_inputs",
    "validate_bundle",
]
