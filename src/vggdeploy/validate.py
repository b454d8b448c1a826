"""Run one input set through several runtimes and precisions of a bundle and compare them.

Every target is compared with a reference (PyTorch fp32 by default) on the same inputs: max
and p99 absolute error, the max error relative to the reference's largest magnitude and to its
range, cosine similarity, top-1 agreement and top-5 overlap. Which of these must hold, and how
tightly, depends on the target's precision and lives in `TOLERANCES` (data, overridable from
the command line with `--tol fp16.cosine=0.9995`). The report lists every check with PASS or
FAIL, then every failing check once more, optimum-style (`-[x]`).

Runtimes run one after another over the same input stream (re-generated or re-read for each),
so only one model is in memory at a time and only the (small) outputs are kept.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vggdeploy.bundle import Bundle
from vggdeploy.errors import InputError, RuntimeUnavailableError, VggDeployError
from vggdeploy.exporter.onnx_export import compare_arrays

log = logging.getLogger(__name__)

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
    "int8-u8": {"cosine": 0.98, "top1": 0.9},
}

RANDOM_INT8_NOTE = (
    "random inputs are a poor judge of INT8: its activation ranges were calibrated on real "
    "images and noise drives other ranges, so these INT8 figures say little either way - "
    "pass --images DIR with real images for a meaningful INT8 verdict"
)

DEFAULT_SAMPLES = 16
DEFAULT_BATCH = 8


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


# -- targets and inputs -------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """One runtime configuration: a registry name and the keyword options of its class.

    `Target("onnxruntime", {"provider": "cpu", "precision": "int8"})` opens
    `OrtRuntime(bundle, provider="cpu", precision="int8")`.
    """

    runtime: str
    options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def precision(self) -> str:
        return str(self.options.get("precision", "fp32"))

    def describe(self) -> str:
        extra = ", ".join(f"{k}={v}" for k, v in self.options.items() if k != "precision")
        return f"{self.runtime} {self.precision}" + (f" ({extra})" if extra else "")

    def to_dict(self) -> dict[str, Any]:
        return {
            "runtime": self.runtime,
            "options": {k: _jsonable(v) for k, v in self.options.items()},
        }


REFERENCE = Target("torch", {"device": "cpu", "precision": "fp32"})


def parse_target(text: str, precision: str | None = None, **options: Any) -> Target:
    """`NAME[:WHERE][@PRECISION]`: `torch`, `torch:cuda`, `onnxruntime:cpu`,
    `onnxruntime:tensorrt@fp16`, `tensorrt@int8`. WHERE is the torch device or the ONNX
    Runtime provider. `precision` applies when the text has no `@`; `options` are added for the
    runtimes they apply to (threads, allow_fallback: onnxruntime; threads: torch)."""
    from vggdeploy.runtimes import RUNTIMES

    body, _, at = text.partition("@")
    name, _, where = body.partition(":")
    aliases = {"ort": "onnxruntime", "trt": "tensorrt", "pytorch": "torch"}
    name = aliases.get(name, name)
    if name not in RUNTIMES:
        raise InputError(
            f"unknown runtime {name!r} in {text!r}: choose one of {', '.join(RUNTIMES)}"
        )
    opts: dict[str, Any] = {}
    if where:
        if name == "torch":
            opts["device"] = where
        elif name == "onnxruntime":
            opts["provider"] = where
        else:
            raise InputError(f"runtime {name} takes no ':{where}' (use {name} or {name}@PRECISION)")
    if at or precision:
        opts["precision"] = at or precision
    if name == "onnxruntime":
        for key in ("threads", "allow_fallback"):
            if options.get(key):
                opts[key] = options[key]
    if name == "torch" and options.get("threads"):
        opts["threads"] = options["threads"]
    return Target(name, opts)


def default_targets(bundle: Bundle, **options: Any) -> list[Target]:
    """ONNX Runtime CPU on every ONNX in the bundle, then every TensorRT engine."""
    targets = []
    for key in sorted(bundle.artifacts, key=_artifact_order):
        kind, _, precision = key.partition(".")
        if kind == "onnx" and bundle.has_artifact(key):
            targets.append(parse_target("onnxruntime:cpu", precision, **options))
        elif kind == "engine" and bundle.has_artifact(key):
            targets.append(Target("tensorrt", {"precision": precision}))
    return targets


def expand_targets(
    bundle: Bundle,
    runtimes: Sequence[str] = (),
    precisions: Sequence[str] = (),
    **options: Any,
) -> list[Target] | None:
    """Targets for `vggdeploy validate --runtime ... --precision ...`; None means the defaults.

    A runtime text with `@PRECISION` is taken as is. Otherwise each `--precision` gives one
    target; with none given, `onnxruntime` expands to every ONNX in the bundle, `tensorrt`
    to every engine, and `torch` is fp32. `--precision` alone compares ONNX Runtime CPU at
    those precisions.
    """
    if not runtimes and not precisions:
        return None
    targets: list[Target] = []
    for text in runtimes or ["onnxruntime:cpu"]:
        if "@" in text:
            targets.append(parse_target(text, **options))
            continue
        name = parse_target(text).runtime
        wanted = list(precisions)
        if not wanted and name in ("onnxruntime", "tensorrt"):
            kind = "onnx" if name == "onnxruntime" else "engine"
            wanted = [
                key.partition(".")[2]
                for key in sorted(bundle.artifacts, key=_artifact_order)
                if key.startswith(kind + ".")
            ]
            if not wanted:
                raise InputError(
                    f"bundle {bundle.root} has no {kind} artifacts for --runtime {text}"
                )
        targets.extend(parse_target(text, p, **options) for p in wanted or ["fp32"])
    return targets


def _artifact_order(key: str) -> tuple[int, int, str]:
    kind, _, precision = key.partition(".")
    order = {"fp32": 0, "fp16": 1, "int8": 2, "int8-u8": 3}
    return ({"onnx": 0, "engine": 1}.get(kind, 2), order.get(precision, 9), key)


class InputSet:
    """A re-iterable stream of input batches: seeded random tensors or preprocessed images.

    Each call of `batches()` yields the same arrays again (regenerated from the seed, or the
    images read again), so runtimes can run one after another without holding every input.
    """

    def __init__(
        self,
        kind: str,
        shape: tuple[int, int, int],
        *,
        samples: int,
        batch: int,
        seed: int = 0,
        paths: Sequence[Path] = (),
        preprocessing: Any = None,
    ) -> None:
        if batch < 1:
            raise InputError(f"--batch {batch} must be a positive integer")
        if samples < 1:
            raise InputError(f"--samples {samples} must be a positive integer")
        self.kind, self.shape, self.samples, self.batch, self.seed = (
            kind,
            shape,
            samples,
            batch,
            seed,
        )
        self.paths = list(paths)
        self.preprocessing = preprocessing

    @classmethod
    def random(
        cls,
        bundle: Bundle,
        *,
        samples: int = DEFAULT_SAMPLES,
        batch: int = DEFAULT_BATCH,
        seed: int = 0,
    ) -> InputSet:
        """Standard-normal tensors (like normalised images) of the bundle's input shape."""
        return cls("random", bundle_input_shape(bundle), samples=samples, batch=batch, seed=seed)

    @classmethod
    def images(
        cls,
        bundle: Bundle,
        folder: str | os.PathLike[str],
        *,
        samples: int | None = None,
        batch: int = DEFAULT_BATCH,
    ) -> InputSet:
        """Images under `folder` (sorted; the first `samples` if given) via the bundle's
        preprocessing."""
        from vggdeploy.preprocess import Preprocessing, find_images

        paths = find_images(folder)
        if samples is not None:
            paths = paths[:samples]
        pre = Preprocessing.from_dict(bundle.preprocessing)
        shape = (3, pre.crop, pre.crop)
        return cls("images", shape, samples=len(paths), batch=batch, paths=paths, preprocessing=pre)

    def batches(self) -> Iterator[np.ndarray]:
        if self.kind == "random":
            rng = np.random.default_rng(self.seed)
            for start in range(0, self.samples, self.batch):
                n = min(self.batch, self.samples - start)
                yield rng.standard_normal((n, *self.shape), dtype=np.float32)
        else:
            from vggdeploy.preprocess import iter_batches

            for _, array in iter_batches(self.paths, self.preprocessing, self.batch):
                yield array

    def describe(self) -> str:
        size = "x".join(str(d) for d in self.shape)
        if self.kind == "random":
            return f"{self.samples} random inputs {size} (seed {self.seed}, batch {self.batch})"
        folder = os.path.commonpath([str(p.parent) for p in self.paths]) if self.paths else ""
        return f"{self.samples} images from {folder} ({size}, batch {self.batch})"

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "kind": self.kind,
            "samples": self.samples,
            "batch": self.batch,
            "shape": list(self.shape),
        }
        if self.kind == "random":
            data["seed"] = self.seed
        else:
            data["files"] = [str(p) for p in self.paths]
        return data


def bundle_input_shape(bundle: Bundle) -> tuple[int, int, int]:
    """(C, H, W) of the bundle's input; dynamic H/W (dense models) take the export image size."""
    dims = bundle.manifest["io"]["inputs"][0]["shape"][1:]
    size = int(bundle.model.get("image_size", 224))
    c, h, w = (d if isinstance(d, int) and d > 0 else size for d in dims)
    return (c, h, w)


# -- report -------------------------------------------------------------------------------------


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

    def line(self) -> str:
        bad = ">" if self.op == "<=" else "<"
        sign = self.op if self.passed else bad
        return f"{self.target}: {self.metric} {_fmt(self.metric, self.value)} {sign} {_fmt(self.metric, self.limit)}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "metric": self.metric,
            "value": _json_float(self.value),
            "op": self.op,
            "limit": self.limit,
            "passed": self.passed,
        }


@dataclass
class TargetResult:
    """What one target did: compared (metrics and checks) or skipped (with the reason)."""

    target: Target
    label: str
    status: str  # "compared" | "skipped"
    reason: str | None = None
    runtime: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target.to_dict(),
            "label": self.label,
            "status": self.status,
            "reason": self.reason,
            "runtime": self.runtime,
            "metrics": {k: _json_float(v) for k, v in self.metrics.items()},
            "checks": [c.to_dict() for c in self.checks],
            "passed": self.passed if self.status == "compared" else None,
        }


@dataclass
class ValidationReport:
    """The outcome of `validate_bundle`: render with `render()`, serialise with `to_dict()`."""

    bundle: str
    reference: str
    reference_runtime: dict[str, Any]
    inputs: dict[str, Any]
    inputs_text: str
    tolerances: dict[str, dict[str, float]]
    results: list[TargetResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

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
    def passed(self) -> bool:
        """True when every check passed and at least one target was compared."""
        return bool(self.checks) and not self.failures

    def summary(self) -> str:
        checks, failures = self.checks, self.failures
        compared = sum(1 for r in self.results if r.status == "compared")
        if not checks:
            return "FAILED: nothing was compared (every target was skipped)"
        if failures:
            return (
                f"FAILED: {len(failures)} of {len(checks)} checks on {_plural(compared, 'target')}"
            )
        return f"PASSED: {len(checks)} checks on {_plural(compared, 'target')}"

    def render(self) -> str:
        """A readable table of every metric, PASS/FAIL per checked one, then the failures."""
        from vggdeploy.cli import format_table

        lines = [
            f"validate {self.bundle}",
            f"  reference: {self.reference}",
            f"  inputs:    {self.inputs_text}",
            "",
        ]
        rows = []
        for result in self.results:
            if result.status != "compared":
                continue
            limits = {c.metric: c for c in result.checks}
            first = True
            for metric in METRICS:
                check = limits.get(metric)
                rows.append(
                    [
                        result.label if first else "",
                        metric,
                        _fmt(metric, result.metrics[metric]),
                        f"{check.op} {_fmt(metric, check.limit)}" if check else "",
                        ("PASS" if check.passed else "FAIL") if check else "-",
                    ]
                )
                first = False
        if rows:
            lines.append(
                format_table(["target", "metric", "value", "limit", "result"], rows, "llrll")
            )
        for result in self.skipped:
            lines.append(f"SKIPPED {result.label}: {result.reason}")
        for note in self.notes:
            lines.append(f"note: {note}")
        lines += ["", self.summary()]
        for check in self.failures:
            lines.append(f"  -[x] {check.line()}")
        return "\n".join(lines)

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
            "notes": self.notes,
        }


# -- running ------------------------------------------------------------------------------------


def open_runtime(bundle: Bundle, target: Target) -> Any:
    """The (not yet loaded) runtime for `target`, constructed through the registry."""
    from vggdeploy.runtimes import get_runtime

    cls = get_runtime(target.runtime)
    try:
        return cls(bundle, **dict(target.options))
    except TypeError as exc:  # an option this runtime does not take
        raise InputError(
            f"runtime {target.runtime} does not accept {dict(target.options)}: {exc}"
        ) from None


def infer_first(runtime: Any, x: np.ndarray) -> np.ndarray:
    """`x` through a loaded runtime's first input; its first output as float32.

    `x` is cast to the input's dtype (an fp16 ONNX may take float16). A model exported with a
    fixed batch gets `x` in chunks of that size, the last one zero-padded and trimmed again.
    """
    spec = runtime.inputs[0]
    out_name = runtime.outputs[0].name
    x = x.astype(spec.dtype, copy=False)
    fixed = spec.shape[0] if isinstance(spec.shape[0], int) and spec.shape[0] > 0 else None
    if fixed is None or len(x) == fixed:
        return np.asarray(runtime.infer({spec.name: x})[out_name], dtype=np.float32)
    outputs = []
    for start in range(0, len(x), fixed):
        chunk = x[start : start + fixed]
        n = len(chunk)
        if n < fixed:
            chunk = np.concatenate([chunk, np.zeros((fixed - n, *chunk.shape[1:]), chunk.dtype)])
        out = np.asarray(runtime.infer({spec.name: chunk})[out_name], dtype=np.float32)
        outputs.append(out[:n])
    return np.concatenate(outputs)


def run_target(runtime: Any, inputs: InputSet) -> np.ndarray:
    """Every batch of `inputs` through a loaded runtime; the first output, as float32."""
    return np.concatenate([infer_first(runtime, batch) for batch in inputs.batches()])


def validate_bundle(
    bundle: Bundle | str | os.PathLike[str],
    targets: Sequence[Target] | None = None,
    inputs: InputSet | None = None,
    tolerances: Mapping[str, Mapping[str, float]] | None = None,
    *,
    reference: Target = REFERENCE,
    skip_unavailable: bool | None = None,
) -> ValidationReport:
    """Compare each target with `reference` on `inputs` and judge it by `tolerances`.

    Args:
        bundle: a `Bundle` or a bundle directory.
        targets: runtimes to compare; default `default_targets(bundle)` (ONNX Runtime CPU on
            every ONNX in the bundle, plus every TensorRT engine).
        inputs: default `InputSet.random(bundle)` (16 seeded samples, batch 8).
        tolerances: overrides merged over `TOLERANCES` per precision and metric.
        reference: the runtime everything is compared with (PyTorch fp32 on CPU by default).
        skip_unavailable: a target whose runtime cannot run on this host
            (`RuntimeUnavailableError`, or its module cannot be imported) is listed as skipped
            with the reason instead of raising. Default: True for the default targets, False
            for targets the caller named (asking for one and getting nothing is an error).

    Returns a `ValidationReport`; `report.passed` is the verdict. Errors in the bundle or the
    reference raise (`VggDeployError` subclasses).
    """
    bundle = bundle if isinstance(bundle, Bundle) else Bundle.load(bundle)
    if skip_unavailable is None:
        skip_unavailable = targets is None
    targets = list(targets) if targets is not None else default_targets(bundle)
    if not targets:
        raise InputError(f"nothing to compare in {bundle.root}: give at least one --runtime")
    inputs = inputs or InputSet.random(bundle)
    limits = merge_tolerances(tolerances)

    # Construct every runtime first (cheap): a bad option or a missing artifact fails now,
    # not after the reference has run.
    prepared = [_prepare(bundle, target, skip_unavailable) for target in targets]
    ref_runtime = open_runtime(bundle, reference)
    with ref_runtime:
        log.info("reference %s: %s", ref_runtime.label, inputs.describe())
        ref_out = run_target(ref_runtime, inputs)
        ref_label, ref_info = ref_runtime.label, ref_runtime.describe()

    report = ValidationReport(
        bundle=str(bundle.root),
        reference=ref_label,
        reference_runtime=ref_info,
        inputs=inputs.to_dict(),
        inputs_text=inputs.describe(),
        tolerances={t.precision: limits.get(t.precision, {}) for t in targets},
    )
    for target, runtime, reason in prepared:
        if runtime is None:
            report.results.append(TargetResult(target, target.describe(), "skipped", reason=reason))
            continue
        report.results.append(_run_one(target, runtime, inputs, ref_out, limits, skip_unavailable))
    if inputs.kind == "random" and any(t.precision.startswith("int8") for t in targets):
        report.notes.append(RANDOM_INT8_NOTE)
    for result in report.results:
        if result.status == "compared" and not limits.get(result.target.precision):
            report.notes.append(
                f"no tolerances for precision {result.target.precision!r}: {result.label} is "
                "reported but not judged (add --tol)"
            )
        if result.runtime.get("fallback"):
            report.notes.append(f"{result.label} did not run on the provider asked for")
    return report


def _prepare(
    bundle: Bundle, target: Target, skip_unavailable: bool
) -> tuple[Target, Any, str | None]:
    """(target, constructed runtime or None, why it is skipped)."""
    try:
        return target, open_runtime(bundle, target), None
    except ImportError as exc:
        reason = f"cannot import its runtime ({exc})"
    except RuntimeUnavailableError as exc:
        if not skip_unavailable:
            raise
        reason = str(exc)
    if not skip_unavailable:
        raise RuntimeUnavailableError(f"{target.describe()}: {reason}")
    return target, None, reason


def _run_one(
    target: Target,
    runtime: Any,
    inputs: InputSet,
    ref_out: np.ndarray,
    limits: Mapping[str, Mapping[str, float]],
    skip_unavailable: bool,
) -> TargetResult:
    label = runtime.label
    try:
        with runtime:
            log.info("running %s", runtime.label)
            got = run_target(runtime, inputs)
            label, info = runtime.label, runtime.describe()
    except (RuntimeUnavailableError, ImportError) as exc:
        if not skip_unavailable:
            if isinstance(exc, VggDeployError):
                raise
            raise RuntimeUnavailableError(f"{label}: cannot import what it needs ({exc})") from None
        reason = str(exc) if isinstance(exc, VggDeployError) else f"cannot import ({exc})"
        log.info("skipping %s: %s", label, reason)
        return TargetResult(target, label, "skipped", reason=reason)
    if got.shape != ref_out.shape:
        raise InputError(
            f"{label} returned shape {got.shape}, the reference {ref_out.shape}: not the same model"
        )
    metrics = compare_outputs(ref_out, got)
    checks = []
    for metric, limit in limits.get(target.precision, {}).items():
        value = metrics[metric]
        ok = value <= limit if METRICS[metric][0] == "max" else value >= limit
        checks.append(Check(label, metric, value, limit, bool(ok)))
    return TargetResult(target, label, "compared", runtime=info, metrics=metrics, checks=checks)


# -- formatting ---------------------------------------------------------------------------------


def _fmt(metric: str, value: float) -> str:
    if not np.isfinite(value):
        return str(value)
    if metric in ("cosine",):
        return f"{value:.6f}"
    if metric in ("top1", "top5"):
        return f"{value:.3f}"
    return f"{value:.2e}"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _json_float(value: float) -> float | str:
    return value if np.isfinite(value) else str(value)


def _jsonable(value: Any) -> Any:
    return value if isinstance(value, (str, int, float, bool, type(None))) else str(value)
