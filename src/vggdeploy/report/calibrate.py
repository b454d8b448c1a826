"""What `vggdeploy calibrate` prints: the calibration summary as text."""

from __future__ import annotations

from typing import Any


def render_calibration(summary: dict[str, Any]) -> str:
    """The lines after a calibration: what was written, and the held-out comparison."""
    held = summary["holdout"]
    if summary["cache_reused"]:
        source = "reused the cache, no data pass"
    else:
        source = f"{summary['data_pass_seconds']:.1f} s data pass"
    lines = [
        f"wrote {summary['path']} ({summary['target']}, {summary['method']}, "
        f"{summary['samples']} images, {summary['quantized_ops']} quantized ops; {source}; "
        f"cache {summary['cache']})"
    ]
    if held.get("images"):
        lines.append(
            f"held-out int8 vs fp32 on {held['images']} images: cosine {held['cosine']:.4f} "
            f"(worst image {held['cosine_min']:.4f}), top-1 agreement "
            f"{held['top1_agreement']:.3f}, top-5 overlap {held['top5_overlap']:.3f} - "
            + ("within tolerance" if held["passed"] else "BELOW TOLERANCE")
        )
    return "\n".join(lines)


def json_summary(summary: dict[str, Any]) -> dict[str, Any]:
    """The summary without the per-tensor ranges (those live in the calibration cache)."""
    return {k: v for k, v in summary.items() if k != "ranges"}
