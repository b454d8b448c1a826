"""Drawing `predict`'s results."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from vggdeploy.predict import Prediction
from vggdeploy.report.escape import report_lines, shown


def produced_by(runtime: Mapping[str, Any]) -> str:
    """Which runtime and precision answered, from `Runtime.describe().to_dict()`: its label
    (`onnxruntime[cpu] int8`), with the precision added where the label lacks it."""
    label, precision = str(runtime.get("label") or runtime.get("runtime")), runtime.get("precision")
    return label if not precision or str(precision) in label.split() else f"{label} {precision}"


def render_predictions(results: Sequence[Prediction], by: str | None = None) -> str:
    """Each file (with `by`, the runtime and precision that answered: `produced_by`), then its
    top-k as `rank. label  probability%`; errors on one line each."""
    lines = []
    for pred in results:
        if pred.error is not None:
            lines.append(f"{shown(pred.path)}: error: {shown(pred.error)}")
            continue
        lines.append(shown(pred.path) + (f"  ({shown(by)})" if by else ""))
        labels = [shown(label) for _, label, _ in pred.top]
        width = max(len(label) for label in labels)
        for rank, (label, (_index, _label, prob)) in enumerate(zip(labels, pred.top), 1):
            lines.append(f"  {rank}. {label.ljust(width)}  {prob * 100:6.2f}%")
    return report_lines(lines)
