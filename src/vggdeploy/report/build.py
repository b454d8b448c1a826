"""What `vggdeploy build` prints: one line about the engine it built."""

from __future__ import annotations

from pathlib import Path

from vggdeploy.records import EngineRecord
from vggdeploy.report.tables import mib


def render_build(record: EngineRecord, root: Path) -> str:
    check = record.precision_check
    precision = record.precision
    profiles_text = "; ".join(
        ", ".join(f"{k} {v['min']}..{v['max']}" for k, v in p.items()) for p in record.profiles
    )
    return (
        f"built {root / record.path} ({mib(record.size)}) in {record.build_seconds:.1f} s with "
        f"TensorRT {record.tensorrt_version} on {record.gpu.name} (compute capability "
        f"{record.gpu.compute_capability}); profiles: {profiles_text}; precision check: "
        f"{check['by_precision'].get(precision, 0)}/{check['convolutions']} convolutions run "
        f"in {precision} - passed"
    )
