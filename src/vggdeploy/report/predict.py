"""Drawing `predict`'s results."""

from __future__ import annotations

from collections.abc import Sequence

from vggdeploy.predict import Prediction
from vggdeploy.report.escape import report_lines, shown


def render_predictions(results: Sequence[Prediction]) -> str:
    """Each file, then its top-k as `rank. label  probability%`; errors on one line each."""
    lines = []
    for pred in results:
        if pred.error is not None:
            lines.append(f"{shown(pred.path)}: error: {shown(pred.error)}")
            continue
        lines.append(shown(pred.path))
        labels = [shown(label) for _, label, _ in pred.top]
        width = max(len(label) for label in labels)
        for rank, (label, (_index, _label, prob)) in enumerate(zip(labels, pred.top), 1):
            lines.append(f"  {rank}. {label.ljust(width)}  {prob * 100:6.2f}%")
    return report_lines(lines)
