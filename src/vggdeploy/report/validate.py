"""Drawing a `ValidationReport`: a table of every metric, PASS/FAIL per judged one, skipped
targets with their reasons, then every failure once more, optimum-style (`-[x]`)."""

from __future__ import annotations

import math

from vggdeploy.metrics import METRICS
from vggdeploy.report.escape import report_lines
from vggdeploy.report.tables import text_table
from vggdeploy.validate import Check, ValidationReport


def fmt(metric: str, value: float) -> str:
    if not math.isfinite(value):
        return str(value)
    if metric == "cosine":
        return f"{value:.6f}"
    if metric in ("top1", "top5"):
        return f"{value:.3f}"
    return f"{value:.2e}"


def check_line(check: Check) -> str:
    sign = check.op if check.passed else (">" if check.op == "<=" else "<")
    return (
        f"{check.target}: {check.metric} {fmt(check.metric, check.value)} {sign} "
        f"{fmt(check.metric, check.limit)}"
    )


def render_validation(report: ValidationReport) -> str:
    lines = [f"validate {report.bundle}", f"  reference: {report.reference}"]
    for text in report.inputs:
        lines.append(f"  inputs:    {text}")
    lines.append("")
    rows = []
    for result in report.compared:
        limits = {c.metric: c for c in result.checks}
        first = True
        for metric in METRICS:
            check = limits.get(metric)
            rows.append(
                [
                    result.label if first else "",
                    metric,
                    fmt(metric, result.metrics[metric]),
                    f"{check.op} {fmt(metric, check.limit)}" if check else "",
                    ("PASS" if check.passed else "FAIL") if check else "-",
                ]
            )
            first = False
    if rows:
        lines.append(text_table(["target", "metric", "value", "limit", "result"], rows, "llrll"))
    for result in report.compared:
        if result.unjudged:
            lines.append(f"NOT JUDGED {result.label}: {result.unjudged}")
    for result in report.skipped:
        lines.append(f"SKIPPED {result.label}: {result.reason}")
    for text in report.missing:
        lines.append(f"MISSING {text}")
    for note in report.notes:
        lines.append(f"note: {note}")
    lines += ["", report.summary()]
    lines += [f"  -[x] {check_line(c)}" for c in report.failures]
    lines += [f"  -[x] missing: {text}" for text in report.missing]
    return report_lines(lines)
