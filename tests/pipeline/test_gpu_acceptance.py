"""The GPU acceptance run (`benchmarks/gpu_acceptance.py`): its refusal here, and the run itself
where a GPU and TensorRT exist."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_acceptance_script_refuses_in_one_line_without_gpu_or_tensorrt(tmp_path):
    pytest.importorskip("onnx")
    try:
        import tensorrt  # noqa: F401

        pytest.skip("TensorRT is installed: the refusal is not reachable here")
    except ImportError:
        pass
    run = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_acceptance.py"), str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "TensorRT is not installed" in lines[0]
    assert "Traceback" not in run.stderr and not (tmp_path / "out").exists()


@pytest.mark.gpu
@pytest.mark.tensorrt
def test_gpu_acceptance_small_vgg(tmp_path):
    """On a GPU with TensorRT: the small VGG's part of the acceptance run passes."""
    pytest.importorskip("tensorrt")
    from vggdeploy.pipeline.acceptance import MODELS, run_acceptance

    report = run_acceptance(tmp_path, models=MODELS[:1], bench_iterations=5)
    assert report["passed"], json.dumps(report["runs"], default=str)[:2000]
