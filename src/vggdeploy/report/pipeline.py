"""Drawing a pipeline run: `report.md` (and `bench.md`, `bench.png`) from `report.json`, the
summary printed at the end, and `RichPipelineReporter`, the live progress of each stage."""

from __future__ import annotations

import json
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vggdeploy import precision as P
from vggdeploy.pipeline import BUNDLE_DIR, REPORT_JSON, STAGES
from vggdeploy.report.escape import report_lines, shown, write_shown
from vggdeploy.report.tables import markdown_table, mib, text_table

IMAGE_KINDS = {
    "default": "the photographs shipped with vggdeploy (public domain / CC0)",
    "user": "your --images folder",
    "synthetic": "SYNTHETIC generated images (no real photographs found)",
}


# -- files --------------------------------------------------------------------------------------


def write_report(out: str | Path) -> Path | None:
    """Draw OUT/report.md (and OUT/bench.md, OUT/bench.png) from OUT/report.json; None when the
    run wrote no report.json (it stopped before its first stage)."""
    out = Path(out)
    path = out / REPORT_JSON
    if not path.is_file():
        return None
    data = json.loads(path.read_text("utf-8"))
    bench = data.get("bench")
    if bench is not None:
        from vggdeploy.report.bench import render_markdown, write_plot

        write_shown(out / "bench.md", render_markdown(bench))
        if bench.get("cases"):
            write_plot(bench, out / "bench.png")
        else:
            (out / "bench.png").unlink(missing_ok=True)
    write_shown(out / "report.md", render_report_md(data, out))
    return out / "report.md"


# -- the terminal ---------------------------------------------------------------------------------


def stage_line(name: str, status: str, seconds: float, summary: str) -> str:
    """`[3/7] convert-fp16: done in 4.2 s - model.fp16.onnx, ...`: one finished stage."""
    prefix = f"[{STAGES.index(name) + 1}/{len(STAGES)}] {name}" if name in STAGES else name
    if status == "done":
        return f"{prefix}: done in {seconds:.1f} s" + (f" - {summary}" if summary else "")
    if status == "up to date":
        return f"{prefix}: up to date" + (f" ({summary})" if summary else "")
    if status == "failed":
        return f"{prefix}: FAILED - {summary}"
    return f"{prefix}: {status} - {summary}" if summary else f"{prefix}: {status}"


def render_summary(data: dict[str, Any], out: str | Path) -> str:
    """The end of `vggdeploy pipeline`: every stage, the warnings, the verdict, the files."""
    rows = [
        [s["name"], s["status"], _seconds(s), _cut(_note(s), 100)] for s in data.get("stages", [])
    ]
    lines = [text_table(["stage", "status", "seconds", "notes"], rows, "llrl"), ""]
    lines += [f"warning: {w}" for w in data.get("warnings", [])]
    validation = data.get("validate")
    if validation:
        lines.append(f"validation: {validation['summary']}")
    lines.append(accuracy_line(data))
    failures = data.get("failures") or []
    lines.append(f"FAILED: {len(failures)} stage(s)" if failures else "pipeline: done")
    lines.append(f"report: {Path(out) / 'report.md'} (and {REPORT_JSON})")
    return report_lines(lines)


class RichPipelineReporter:
    """Stage lines through `echo`; while a stage runs, a spinner with the stage's current step
    and elapsed time on stderr (only when stderr is a terminal; cleared when the stage ends)."""

    def __init__(self, echo: Callable[[str], None], *, live: bool | None = None) -> None:
        self.echo = echo
        self.live = sys.stderr.isatty() if live is None else live
        self._bar: Any = None
        self._task: Any = None
        self._name = ""
        self._started = 0.0

    def stage_started(self, name: str) -> None:
        self._stop()
        self._name, self._started = name, time.perf_counter()
        if not self.live:
            return
        from rich.console import Console
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        self._bar = Progress(
            SpinnerColumn(),
            TimeElapsedColumn(),  # first, so a long step never pushes it off a narrow terminal
            TextColumn("{task.description}"),
            console=Console(stderr=True),
            transient=True,
        )
        self._bar.start()
        self._task = self._bar.add_task(self._label(""), total=None)

    def progress(self, text: str) -> None:
        if self._bar is not None:
            self._bar.update(self._task, description=self._label(shown(text)))

    def stage_finished(self, name: str, status: str, seconds: float, summary: str) -> None:
        self._stop()
        self.echo(shown(stage_line(name, status, seconds, summary)))

    def note(self, text: str) -> None:
        if self._bar is not None:
            self._bar.console.print(shown(text), markup=False, highlight=False, soft_wrap=True)
        else:
            self.echo(shown(text))

    def close(self) -> None:
        self._stop()

    def _label(self, text: str) -> str:
        prefix = (
            f"[{STAGES.index(self._name) + 1}/{len(STAGES)}] {self._name}"
            if self._name in STAGES
            else self._name
        )
        return f"{prefix}: {text}" if text else f"{prefix} ..."

    def _stop(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = self._task = None


# -- report.md ------------------------------------------------------------------------------------


def _seconds(stage: dict[str, Any]) -> str:
    return {"done": f"{stage['seconds']:.1f}", "up to date": f"({stage['seconds']:.1f})"}.get(
        stage["status"], "-"
    )


def _note(stage: dict[str, Any]) -> str:
    if stage["status"] in ("done", "up to date"):
        return stage.get("detail") or ""
    return stage.get("reason") or ""


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def _fmt(value: Any, spec: str) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    return format(value, spec)


def _stage(data: dict[str, Any], name: str) -> dict[str, Any] | None:
    return next((s for s in data["stages"] if s["name"] == name), None)


def render_report_md(data: dict[str, Any], out: str | Path) -> str:
    """report.md from the report data (report.json)."""
    out = Path(out)
    lines = [f"# vggdeploy pipeline: {data['model']}", ""]
    if data.get("command"):
        lines += [f"`{shlex.join(['vggdeploy', *data['command']])}`", ""]
    lines += [
        f"Run {data['started']} on {data['host']['system']} {data['host']['machine']} "
        f"({data['host']['cpus']} CPUs), vggdeploy {data['vggdeploy']}, wall time "
        f"{data['wall_s']:.0f} s. Bundle: `{BUNDLE_DIR}/`.",
        "",
    ]
    lines += _model_section(data)
    if data["warnings"] or data["failures"]:
        lines += [f"> **FAILED** {f}" for f in data["failures"]]
        lines += [f"> **warning**: {w}" for w in data["warnings"]]
        lines.append("")

    rows = [[s["name"], s["status"], _seconds(s), _note(s)] for s in data["stages"]]
    lines += [
        "## Stages",
        "",
        markdown_table(["stage", "status", "seconds", "notes"], rows, "llrl"),
    ]
    lines.append("")
    if any(s["status"] == "up to date" for s in data["stages"]):
        lines += ["Seconds in parentheses: the earlier run that produced an up-to-date stage.", ""]

    if data.get("artifacts"):
        rows = [
            [
                key,
                f"`{a['path']}`",
                a.get("precision") or "-",
                mib(a.get("size")),
                f"`{(a.get('sha256') or '')[:16]}`",
            ]
            for key, a in data["artifacts"].items()
        ]
        headers = ["artifact", "file", "precision", "size", "sha256 (first 16)"]
        lines += ["## Artifacts", "", markdown_table(headers, rows, "lllrl"), ""]

    lines += _images_section(data)
    lines += _parity_section(data)
    lines += _calibration_section(data)
    lines += _validation_section(data)
    lines += _engines_section(data)
    lines += _accuracy_section(data)
    lines += _bench_section(data, out)
    bundle = out / BUNDLE_DIR
    build = P.build_command(data.get("artifacts") or {})
    lines += [
        "## Next steps",
        "",
        f"- `vggdeploy inspect {bundle}`: every artifact, checked against its sha256.",
        f"- `vggdeploy validate {bundle}`: the same validation again (or with `--images DIR`).",
    ]
    if build:
        lines.append(
            f"- `vggdeploy pack {bundle} -o {data['model']}.tar.gz --no-engines`, copy it to the "
            f"GPU machine (e.g. a Jetson), `vggdeploy unpack` it and `{build}` there: engines "
            "are specific to a GPU and TensorRT version."
        )
    lines += [
        f"- `vggdeploy package {bundle} --format triton --out model_repository "
        "--dynamic-batching`: a Triton Inference Server model repository.",
        "",
    ]
    return report_lines(lines)


def _model_section(data: dict[str, Any]) -> list[str]:
    m = data.get("model_facts") or {}
    if not m:
        return []
    gflops = (m.get("flops_per_image") or 0) / 1e9
    weights = data.get("weights", {})
    seed = f" (seed {weights.get('seed')})" if weights.get("source") == "random" else ""
    return [
        f"**Model**: {m.get('name')} (VGG config {m.get('config')}"
        f"{', batch norm' if m.get('batch_norm') else ''}), {m.get('parameters') or 0:,} "
        f"parameters, {gflops:.2f} GFLOPs per image at {m.get('image_size')}x"
        f"{m.get('image_size')}; weights: {weights.get('source')}{seed}",
        "",
    ]


def _images_section(data: dict[str, Any]) -> list[str]:
    images = data["options"].get("images") or {}
    if not images:
        return []
    asked = data["options"].get("validate_samples")
    samples = f"up to {asked} samples" if asked else "its default samples"
    judged = (
        "your --images folder, like `vggdeploy validate --images`"
        if images["kind"] == "user"
        else "the rule of `vggdeploy validate`: seeded random tensors for fp32/fp16, the "
        "photographs shipped with vggdeploy for INT8"
    )
    ran = {s["name"] for s in data["stages"] if s["status"] in ("done", "up to date")}
    users = [
        what
        for stage, what in (
            ("calibrate-int8", "INT8 calibration"),
            ("convert-fp16", "FP16 range measurement"),
        )
        if stage in ran
    ]
    text = (
        f"{' and '.join(users)} used {images['count']} images: {IMAGE_KINDS[images['kind']]}. "
        if users
        else f"The images: {images['count']}, {IMAGE_KINDS[images['kind']]}. "
    )
    targets = ((_stage(data, "calibrate-int8") or {}).get("result") or {}).get("targets") or {}
    drawn = {t["samples"] for t in targets.values()} if "calibrate-int8" in ran else set()
    if len(drawn) == 1:
        (n,) = drawn
        held = images["count"] - n
        text += (
            f"INT8 calibration drew {n} of them and held the other {held} out for its own "
            "int8-vs-fp32 check. "
            if held > 0
            else f"INT8 calibration drew all {n} of them (none held out for its own check). "
        )
    return ["## Images", "", text + f"Validation compares {samples} on {judged}.", ""]


def _parity_section(data: dict[str, Any]) -> list[str]:
    parity = data.get("parity")
    if not parity:
        return []
    return [
        "## Export parity (PyTorch vs ONNX Runtime, fp32)",
        "",
        f"{len(parity.get('checks', []))} checks on seeded random inputs: worst max rel diff "
        f"{parity['worst_max_rel']:.2e}, worst cosine {parity['worst_cosine']:.7f} - "
        f"{'passed' if parity['passed'] else 'FAILED'}.",
        "",
    ]


def _holdout_text(hold: dict[str, Any]) -> str:
    if "cosine" not in hold:
        return hold.get("skipped", "-")
    return (
        f"cosine {hold['cosine']:.4f} (worst image {_fmt(hold.get('cosine_min'), '.4f')}), "
        f"top-1 agreement {_fmt(hold.get('top1_agreement'), '.2f')} on "
        f"{hold.get('images', '?')} held-out images" + _holdout_verdict(hold)
    )


def _holdout_verdict(hold: dict[str, Any]) -> str:
    """`passed` is None when too few images were held out to judge (`metrics.verdict`)."""
    passed = hold.get("passed", True)
    if passed is None:
        return f" - not judged: {hold.get('unjudged') or 'too few images'}"
    return "" if passed else " - BELOW TOLERANCE"


def _calibration_section(data: dict[str, Any]) -> list[str]:
    calib = _stage(data, "calibrate-int8")
    targets = (calib or {}).get("result", {}).get("targets")
    if not targets:
        return []
    rows = [
        [
            key,
            t["target"],
            t["method"],
            t["samples"],
            t["quantized_ops"],
            _holdout_text(t.get("holdout") or {}),
        ]
        for key, t in targets.items()
    ]
    headers = ["artifact", "target", "method", "samples", "quantized ops", "held-out vs fp32"]
    return ["## INT8 calibration", "", markdown_table(headers, rows, "lllrrl"), ""]


def _inputs_text(inputs: dict[str, Any]) -> str:
    return "; ".join(inputs) if inputs else "-"


def _validation_section(data: dict[str, Any]) -> list[str]:
    validation = data.get("validate")
    if not validation:
        return []
    result = (_stage(data, "validate") or {}).get("result") or {}
    informational = bool(result.get("int8_informational"))
    lines = [
        "## Validation (every artifact vs PyTorch fp32, as `vggdeploy validate`)",
        "",
        f"Reference {validation['reference']['label']}; inputs: "
        f"{_inputs_text(validation.get('inputs') or {})}.",
        "",
    ]
    rows = []
    for t in validation["targets"]:
        if t["status"] != "compared":
            rows.append([t["label"], "-", "-", "-", "-", f"skipped: {t['reason']}"])
            continue
        mt = t["metrics"]
        verdict = "PASS" if t["passed"] else "FAIL"
        precision = (t.get("target") or {}).get("precision") or "fp32"
        if not t["checks"]:
            verdict = "not judged"
        elif not t["passed"] and informational and precision.startswith("int8"):
            verdict = "FAIL (informational: random weights)"
        rows.append(
            [
                t["label"],
                _fmt(mt.get("cosine"), ".6f"),
                _fmt(mt.get("max_rel"), ".2e"),
                _fmt(mt.get("top1"), ".3f"),
                _fmt(mt.get("top5"), ".3f"),
                verdict,
            ]
        )
    headers = ["target", "cosine", "max rel", "top-1 agree", "top-5 overlap", "verdict"]
    lines += [markdown_table(headers, rows, "lrrrrl"), ""]
    lines += [f"- {n}" for n in validation.get("notes", [])]
    lines += [f"- {validation['summary']}", ""]
    return lines


# -- accuracy beside latency ---------------------------------------------------------------------


def accuracy_line(data: dict[str, Any]) -> str:
    """One line: each target's top-1 on the labelled --images, or why accuracy was not
    measured."""
    evaluation = data.get("evaluate")
    if not evaluation:
        return f"accuracy: {_not_measured(data)}"
    return f"accuracy on {evaluation['count']} labelled images: " + ", ".join(
        f"{r['label']} top-1 {_pct(r['top1'])}" for r in evaluation["results"]
    )


def _not_measured(data: dict[str, Any]) -> str:
    stage = _stage(data, "evaluate") or {}
    reason = stage.get("reason") or "the evaluate stage did not run"
    if stage.get("status") == "failed":
        return f"not measured: the evaluate stage failed ({reason})"
    return reason if reason.startswith("accuracy not measured") else f"not measured: {reason}"


def _pct(value: Any) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def _latency_by_label(data: dict[str, Any]) -> tuple[list[int], dict[str, dict[int, float]]]:
    """The benchmarked batch sizes, and per runtime label (`onnxruntime[cpu] int8`) the median
    latency at each."""
    cases = (data.get("bench") or {}).get("cases") or []
    batches = sorted({int(c["batch"]) for c in cases})
    latency: dict[str, dict[int, float]] = {}
    for c in cases:
        latency.setdefault(c["label"], {})[int(c["batch"])] = c["latency_ms"]["median"]
    return batches, latency


def _accuracy_section(data: dict[str, Any]) -> list[str]:
    """Top-1/top-5 per runtime and precision on the labelled --images, beside the benchmark's
    median latency of the same runtime: what to ship."""
    lines = ["## Accuracy and latency", ""]
    evaluation = data.get("evaluate")
    if not evaluation:
        return [*lines, f"Accuracy {_not_measured(data).removeprefix('accuracy ')}.", ""]
    batches, latency = _latency_by_label(data)
    headers = ["target", "top-1", "top-5", "top-1 vs fp32"]
    headers += [f"median ms, batch {b}" for b in batches]
    rows = []
    for r in evaluation["results"]:
        delta = r.get("delta_top1")
        row = [
            r["label"],
            _pct(r["top1"]),
            _pct(r["top5"]),
            "-" if delta is None or r["precision"] == "fp32" else f"{delta:+.2f} pts",
        ]
        measured = latency.get(r["label"], {})
        row += [_fmt(measured.get(b), ".2f") for b in batches]
        rows.append(row)
    calib = ((_stage(data, "calibrate-int8") or {}).get("result") or {}).get("targets") or {}
    samples = [t.get("samples") for t in calib.values() if t.get("samples")]
    mapping = evaluation.get("class_mapping") or {}
    lines += [
        f"Top-1/top-5 of every artifact on all {evaluation['count']} images of your --images "
        f"folder ({evaluation['classes']} class folders; {mapping.get('note', '')}), as "
        "`vggdeploy evaluate`; latency is the benchmark's median on this host"
        + (
            " (- where that target was not benchmarked)."
            if any("-" in r[4:] for r in rows)
            else "."
        ),
        "",
        markdown_table(headers, rows, "lrrr" + "r" * len(batches)),
        "",
    ]
    if samples:
        lines += [
            f"INT8 calibration drew {max(samples)} of these images: INT8 accuracy here includes "
            "images it was calibrated on.",
            "",
        ]
    skipped = evaluation.get("skipped") or []
    lines += [f"- not evaluated {s['target']}: {s['reason']}" for s in skipped]
    return [*lines, ""] if skipped else lines


def _engines_section(data: dict[str, Any]) -> list[str]:
    build = _stage(data, "build")
    lines = ["## TensorRT engines", ""]
    if build and build["status"] == "skipped":
        lines += [f"Not built here: {build['reason']}.", ""]
    elif build and build.get("result"):
        rows = [
            [
                p,
                r.get("tensorrt_version"),
                (r.get("gpu") or {}).get("name"),
                (r.get("gpu") or {}).get("compute_capability"),
                r.get("build_seconds"),
            ]
            for p, r in build["result"].items()
        ]
        headers = ["precision", "TensorRT", "GPU", "compute capability", "build s"]
        lines += [markdown_table(headers, rows, "llllr"), ""]
    return lines


def _bench_section(data: dict[str, Any], out: Path) -> list[str]:
    bench_md = out / "bench.md"
    if data.get("bench") is None or not bench_md.is_file():
        return []
    lines = ["## Benchmark", "", bench_md.read_text("utf-8").strip(), ""]
    notes = ort_int8_notes(data["bench"])
    if notes:
        lines += [*notes, ""]
    if (out / "bench.png").is_file():
        lines += ["![latency and throughput](bench.png)", ""]
    return lines


def ort_int8_notes(bench: dict[str, Any]) -> list[str]:
    """How ONNX Runtime ran `model.int8.onnx` in this benchmark: one line per runtime that timed
    it (the CPU provider in vggdeploy's integer form, a GPU provider as written), none when no
    ONNX Runtime case timed it."""
    batches: dict[str, list[int]] = {}
    for c in bench.get("cases") or []:
        if c["runtime"].split(":")[0] == "onnxruntime" and c["precision"] == "int8":
            batches.setdefault(c["runtime"], []).append(c["batch"])
    notes = []
    for runtime, bs in batches.items():
        provider = (runtime.split(":") + ["cpu"])[1]
        how = (
            "in the integer form vggdeploy's runtime rewrites it into on load (`onnxutil."
            "cpu_int8_form`: evaluated unfused, bit for bit the file's outputs)"
            if provider == "cpu"
            else "as written"
        )
        notes.append(
            f"`{runtime}` timed `model.int8.onnx` (Q/DQ in NVIDIA's placement, for TensorRT) "
            f"on ONNX Runtime's {provider} provider {how}, at batch "
            f"{', '.join(str(b) for b in sorted(set(bs)))}."
        )
    return notes
