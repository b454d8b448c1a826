"""Drawing the model zoo."""

from __future__ import annotations

from typing import Any

from vggdeploy.report.escape import report_lines
from vggdeploy.report.tables import text_table


def render_zoo(data: dict[str, Any]) -> str:
    rows = [
        [
            r["name"],
            r["config"],
            "yes" if r["batch_norm"] else "-",
            r["weight_layers"],
            f"{r['parameters']:,}",
            f"{r['gflops']:.2f}",
            "yes" if r["imagenet_weights"] else "-",
        ]
        for r in data["models"]
    ]
    size = data["image_size"]
    table = text_table(
        ["name", "config", "BN", "layers", "parameters", "GFLOPs", "imagenet"], rows, "lllrrrl"
    )
    note = (
        f"GFLOPs at {size}x{size}, counting a multiply-accumulate as 2 FLOPs. "
        "Paper names (A, A-LRN, B, C, D, E, and -bn) work too."
    )
    return report_lines([table, "", note])
