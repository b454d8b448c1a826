"""What `vggdeploy calibrate` prints: the calibration summary, the per-layer sensitivity
table and the accuracy-budget outcome, as text."""

from __future__ import annotations

from typing import Any

from vggdeploy.report.escape import report_lines
from vggdeploy.report.tables import text_table


def render_calibration(summary: dict[str, Any]) -> str:
    """The lines after a calibration: what was written, and the held-out comparison."""
    held = summary["holdout"]
    if summary["cache_reused"]:
        source = "reused the cache, no data pass"
    else:
        source = f"{summary['data_pass_seconds']:.1f} s data pass"
    read = summary.get("images_read", summary["samples"])
    images = f"{read} images" + (
        f" ({summary['samples'] - read} unreadable left out)" if read < summary["samples"] else ""
    )
    lines = [
        f"wrote {summary['path']} ({summary['target']}, {summary['method']}, "
        f"{images}, {summary['quantized_ops']} quantized ops; {source}; "
        f"cache {summary['cache']})"
    ]
    asked = summary.get("samples_asked", summary["samples"])
    if summary["samples"] < asked:
        lines.append(used_sentence(summary))
    if held.get("images"):
        verdict = {True: "within tolerance", False: "BELOW TOLERANCE"}.get(
            held.get("passed"), f"not judged: {held.get('unjudged')}"
        )
        lines.append(
            f"held-out int8 vs fp32 on {held['images']} images: cosine {held['cosine']:.4f} "
            f"(worst image {held['cosine_min']:.4f}), top-1 agreement "
            f"{held['top1_agreement']:.3f}, top-5 overlap {held['top5_overlap']:.3f} - " + verdict
        )
    if summary.get("sensitivity"):
        lines += ["", render_sensitivity(summary)]
    if summary.get("accuracy_budget") or summary.get("float_layers"):
        lines += ["", render_budget(summary)]
    return report_lines(lines)


def used_sentence(summary: dict[str, Any]) -> str:
    """Why calibration used fewer images than --samples asked for (`split_counts`)."""
    held = summary["holdout_drawn"]
    hint = (
        " (pass --holdout 0 to calibrate on all of them)"
        if held and summary["samples"] + held == summary["images_found"]
        else ""
    )
    return (
        f"calibrated on {summary['samples']} images, not the {summary['samples_asked']} "
        f"--samples asked for: the folder has {summary['images_found']} and {held} "
        f"{'is' if held == 1 else 'are'} held out for the int8 check{hint}"
    )


def render_sensitivity(summary: dict[str, Any]) -> str:
    """The per-layer table, most sensitive first, with the layers kept float marked."""
    accuracy = summary.get("accuracy", {})
    rows_in = summary["sensitivity"]
    labelled = any("top1" in row for row in rows_in)
    kept = {k["node"] for k in summary.get("float_layers", [])}
    headers = ["#", "layer", "ONNX node", "op"]
    headers += ["top-1 %", "change (points)"] if labelled else []
    headers += ["top-1 agree", "cosine mean", "cosine min", "kept"]
    rows = []
    for row in rows_in:
        cells: list[Any] = [row["rank"], row["layer"], row["node"], row["op"]]
        if labelled:
            cells += [f"{row['top1']:.2f}", f"{0.0 - row['top1_drop']:+.2f}"]
        cells += [
            f"{row['top1_agreement']:.3f}",
            f"{row['cosine_mean']:.4f}",
            f"{row['cosine_min']:.4f}",
            "float" if row["node"] in kept else "int8",
        ]
        rows.append(cells)
    where = f"{accuracy.get('images', '?')} {accuracy.get('source', '')} images"
    fp32 = f", fp32 top-1 {accuracy['fp32_top1']:.2f}%" if "fp32_top1" in accuracy else ""
    title = f"INT8 sensitivity, each layer quantized alone ({where}{fp32})"
    align = "rlll" + ("rr" if labelled else "") + "rrrl"
    return text_table(headers, rows, align=align, title=title)


def render_budget(summary: dict[str, Any]) -> str:
    """What the budget (or --keep-float) decided, with the before/after figures."""
    kept = summary.get("float_layers", [])
    names = ", ".join(f"{k['layer']} ({k['node']})" for k in kept) or "none"
    layers = summary.get("layers", 0)
    lines = [f"layers kept float: {names}; {summary.get('int8_layers', '?')} of {layers} int8"]
    budget = summary.get("accuracy_budget")
    if budget:
        before, after = budget["before"], budget["after"]
        lines.append(
            f"accuracy budget --max-drop {budget['max_drop']:g}: fp32 top-1 "
            f"{budget['fp32_top1']:.2f}%, plain int8 {before['top1']:.2f}% "
            f"({-before['top1_drop']:+.2f} points), with {len(kept)} layer(s) float "
            f"{after['top1']:.2f}% ({-after['top1_drop']:+.2f}) - "
            + ("within budget" if budget["met"] else "NOT MET")
        )
    return report_lines(lines)


def json_summary(summary: dict[str, Any]) -> dict[str, Any]:
    """The summary without the per-tensor ranges (those live in the calibration cache)."""
    return {k: v for k, v in summary.items() if k != "ranges"}
