"""Drawing `predict`'s results."""

from __future__ import annotations

from collections.abc import Sequence

from vggdeploy.predict import Prediction


def render_predictions(results: Sequence[Prediction]) -> str:
    """Each file, then its top-k as `rank. label  probability%`; errors on one line each."""
    lines = []
    for pred in results:
        if pred.error is not None:
            lines.append(f"{pred.path}: error: {pred.error}")
            continue
        lines.append(str(pred.path))
        width = max(len(label) for _, label, _ in pred.top)
        for rank, (_index, label, prob) in enumerate(pred.top, 1):
            lines.append(f"  {rank}. {label.ljust(width)}  {prob * 100:6.2f}%")
    return "\n".join(lines)
