"""Drawing `evaluate`'s results: accuracy per runtime and precision, deltas against fp32."""

from __future__ import annotations

from typing import Any

from vggdeploy.report.escape import report_lines


def format_results(report: dict[str, Any]) -> list[list[str]]:
    """Table rows: runtime, precision, top-1, top-5, deltas in points, top-1 agreement."""
    rows = []
    for r in report["results"]:

        def delta(value: float | None) -> str:
            return "-" if value is None else f"{value:+.2f}"

        rows.append(
            [
                r["label"],
                r["precision"],
                f"{100 * r['top1']:.2f}%",
                f"{100 * r['top5']:.2f}%",
                delta(r["delta_top1"]),
                delta(r["delta_top5"]),
                "-" if r["agreement_top1"] is None else f"{100 * r['agreement_top1']:.2f}%",
            ]
        )
    return rows


TABLE_HEADERS = ["runtime", "precision", "top-1", "top-5", "top-1 diff", "top-5 diff", "agrees"]


def render_evaluation(report: dict[str, Any], images: str) -> str:
    from vggdeploy.report.tables import text_table

    lines = []
    sample = (
        f" (random {report['count']}, seed {report['limit']['seed']})" if report["limit"] else ""
    )
    lost = len(report.get("skipped_images") or [])
    left_out = f" ({lost} unreadable left out)" if lost else ""
    lines.append(
        f"{report['count']} images{sample}{left_out}, {report['classes']} classes from {images}: "
        f"{report['class_mapping']['note']}"
    )
    lines.append(text_table(TABLE_HEADERS, format_results(report), align="llrrrrr"))
    ref = next((r["agreement_with"] for r in report["results"] if r["agreement_with"]), None)
    if ref:
        lines.append(
            f"diff: percentage points vs fp32 on the same runtime; agrees: same top-1 as {ref}"
        )
    if any(
        r["precision"] == "fp16" and r["device"] == "cpu" and r["runtime"] == "onnxruntime"
        for r in report["results"]
    ):
        from vggdeploy.ortsession import cpu_computes_fp16

        lines.append(
            "note: ONNX Runtime CPU here runs fp16 convolutions in fp16; the GPU's fp16 kernels "
            "still differ"
            if cpu_computes_fp16()
            else "note: ONNX Runtime CPU here runs fp16 models in fp32 with fp16-rounded weights; "
            "fp16 arithmetic is only exercised on a GPU"
        )
    for s in report["skipped"]:
        lines.append(f"skipped {s['target']}: {s['reason']}")
    return report_lines(lines)
