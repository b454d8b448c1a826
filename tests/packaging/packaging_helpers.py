"""Helpers shared by the packaging tests (importable: pytest puts this folder on sys.path)."""

from __future__ import annotations

from pathlib import Path

import pytest

from vggdeploy.bundle import Bundle
from vggdeploy.cli import main


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(args)
    out, err = capsys.readouterr()
    return int(exc.value.code or 0), out, err


def add_engine(root: Path, key: str, cc: str, max_batch: int = 16) -> None:
    """A fake engine recorded the way `vggdeploy build` records a real one."""
    bundle = Bundle.load(root)
    name = f"model.{key.replace('engine.', '')}.engine"
    (root / name).write_bytes(f"fake plan for sm{cc}".encode())

    def shape(b: int) -> list[int]:
        return [b, 3, 32, 32]

    bundle.add_artifact(
        key,
        name,
        kind="tensorrt-engine",
        precision=key.split(".", 1)[1],
        tensorrt_version="10.16.1.11",
        gpu={"name": f"GPU sm{cc}", "compute_capability": cc, "jetson": False},
        flags={"strongly_typed": True, "hardware_compat": "none", "version_compatible": False},
        profiles=[{"input": {"min": shape(1), "opt": shape(8), "max": shape(max_batch)}}],
    )


def add_onnx_copy(root: Path, precision: str, target: str | None = None) -> Path:
    """A stand-in for a converted/calibrated ONNX file: model.onnx re-saved under the
    precision's file name with a metadata entry naming it, so each file's bytes differ."""
    import onnx

    from vggdeploy import precision as P

    name = P.onnx_file(precision)
    model = onnx.load(str(root / "model.onnx"))
    entry = model.metadata_props.add()
    entry.key, entry.value = "test.precision", precision
    onnx.save(model, str(root / name))
    facts = {"target": target} if target else {}
    Bundle.load(root).add_artifact(
        P.onnx_key(precision), name, kind="onnx", precision=P.get(precision).numeric, **facts
    )
    return root / name
