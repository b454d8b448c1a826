"""What `vggdeploy build` prints: one line about the engine it built, and for a DLA build the
readiness report (which layers run on DLA, which fall back to the GPU, how many subgraphs)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vggdeploy.records import EngineRecord
from vggdeploy.report.escape import report_lines
from vggdeploy.report.tables import mib


def render_build(record: EngineRecord, root: Path) -> str:
    check = record.precision_check
    precision = record.precision
    profiles_text = "; ".join(
        ", ".join(f"{k} {v['min']}..{v['max']}" for k, v in p.items()) for p in record.profiles
    )
    text = (
        f"built {root / record.path} ({mib(record.size)}) in {record.build_seconds:.1f} s with "
        f"TensorRT {record.tensorrt_version} on {record.gpu.name} (compute capability "
        f"{record.gpu.compute_capability}); profiles: {profiles_text}; precision check: "
        f"{check['by_precision'].get(precision, 0)}/{check['convolutions']} convolutions run "
        f"in {precision} - passed"
    )
    dla = getattr(record, "dla", None)
    return report_lines([text, render_dla(dla)] if isinstance(dla, dict) else [text])


def render_dla(dla: dict[str, Any]) -> str:
    """The DLA readiness report: a summary line, then one line per layer on the GPU."""
    on_gpu = dla.get("layers_on_gpu") or []
    lines = [
        f"DLA core {dla['core']}: {dla['layers_on_dla']} of {dla['layers']} layers on DLA in "
        f"{dla['subgraphs']} subgraph{'s' if dla['subgraphs'] != 1 else ''}; GPU fallback "
        f"{'on' if dla['gpu_fallback'] else 'off'}"
        + (f"; {len(on_gpu)} layers fall back to the GPU:" if on_gpu else "")
    ]
    lines += [f"  GPU  {e['name']} ({e['type']})" for e in on_gpu]
    return report_lines(lines)
