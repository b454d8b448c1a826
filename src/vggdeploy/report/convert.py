"""What `vggdeploy convert` prints: the fp16 conversion report as text."""

from __future__ import annotations

from typing import Any

from vggdeploy.report.escape import report_lines


def render_convert(report: dict[str, Any], path: str, *, top: int = 5) -> str:
    """The human-readable summary `vggdeploy convert` prints for `convert_fp16`'s report."""
    lines = [f"wrote {path} (onnx.fp16, float32 inputs and outputs)"]
    measured = report["measured_on"]
    source = (
        f"{measured['samples']} images from {measured['folder']}"
        if measured["source"] == "images"
        else f"{measured['samples']} random inputs (seed {measured['seed']}); "
        "use --images DIR for real data"
    )
    lines.append(f"activations measured on {source}")
    largest = sorted(report["activations"], key=lambda a: -a["max_abs"])[:top]
    lines.append(
        f"largest |activation| vs fp16 max {report['fp16_max']:g} (kept in fp32 at >= 1/{report['headroom']:g} of it):"
    )
    for row in largest:
        lines.append(
            f"  {row['max_abs']:>12.4g}  {100 * row['fraction_of_fp16_max']:7.3f}%  "
            f"{row['op']:<10} {row['tensor']}"
            + ("  <- overflow risk" if row["overflow_risk"] else "")
        )
    w = report["weights"]
    lines.append(
        f"weights: max |w| {w['max_abs']:.4g}; {w['over_fp16_max']} above the fp16 max, "
        f"{w['subnormal_in_fp16']} ({100 * w['subnormal_fraction']:.3f}%) become fp16 subnormals"
    )
    if report["kept_fp32"]:
        lines.append(f"kept in fp32 ({len(report['kept_fp32'])} nodes):")
        for k in report["kept_fp32"]:
            lines.append(f"  {k['op']:<10} {k['node']}: {k['reasons'][0]}")
    else:
        lines.append("kept in fp32: none (every activation fits the fp16 range with headroom)")
    p = report["parity"]
    lines.append(
        f"parity vs fp32 on ONNX Runtime CPU over {p['images']} inputs: max rel diff "
        f"{p['max_rel']:.2e}, cosine {p['cosine']:.6f}, top-1 agreement {100 * p['top1_agreement']:.2f}%"
    )
    lines.append(f"note: {report['note']}")
    return report_lines(lines)
