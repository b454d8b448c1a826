"""The pipeline's options and images: checks, the calibration split, the shipped photographs
and the synthetic stand-ins."""

from __future__ import annotations

from pathlib import Path

import pytest

from vggdeploy import inputs
from vggdeploy.errors import InputError
from vggdeploy.pipeline import (
    MADE_PRECISIONS,
    MIN_DEFAULT_IMAGES,
    PipelineOptions,
    calibration_split,
    resolve_images,
)
from vggdeploy.precision import ENGINE_NAMES


def test_option_checks() -> None:
    assert MADE_PRECISIONS == ENGINE_NAMES
    with pytest.raises(InputError, match="must include fp32"):
        PipelineOptions(precisions=("int8",))
    with pytest.raises(InputError, match="fp64"):
        PipelineOptions(precisions=("fp32", "fp64"))
    with pytest.raises(InputError, match="int8-u8"):
        PipelineOptions(precisions=("fp32", "int8-u8"))  # one INT8 file: no such precision
    with pytest.raises(InputError, match="unknown runtime"):
        PipelineOptions(bench_runtimes=("nosuchruntime",))
    assert PipelineOptions(bench_runtimes=("ort@fp32",)).bench_runtimes == ("onnxruntime@fp32",)
    assert calibration_split(11, 12) == 8  # up to 12: calibrate's rule, a quarter held out
    assert calibration_split(11, None) == 8  # 3 held out
    assert calibration_split(1000, None) == 64
    assert calibration_split(3, None) == 3


def test_synthetic_images_when_no_photographs(tmp_path: Path, monkeypatch) -> None:
    import numpy as np
    from PIL import Image

    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setattr(inputs, "default_images_dir", lambda: empty)
    images = resolve_images(None, tmp_path / "out")
    assert images.kind == "synthetic" and images.count >= 8
    assert "SYNTHETIC" in images.warning and "mean little" in images.warning
    assert len(images.sha256) == 64
    for path in (tmp_path / "out" / "synthetic_images").iterdir():
        pixels = np.asarray(Image.open(path), dtype=np.float32)
        assert pixels.std() > 20, path  # structured, not flat
        # not noise either: neighbouring pixels are alike
        assert np.abs(np.diff(pixels, axis=1)).mean() < pixels.std() / 2, path


def test_default_images_are_the_shipped_photographs(tmp_path: Path) -> None:
    images = resolve_images(None, tmp_path)
    assert images.kind == "default" and images.warning is None
    assert "photographs shipped with vggdeploy" in images.note
    assert images.to_dict()["sha256"] == images.sha256


def test_shipped_photographs_are_real_and_licensed() -> None:
    from vggdeploy.preprocess import find_images

    folder = inputs.default_images_dir()
    images = find_images(folder)
    assert len(images) >= MIN_DEFAULT_IMAGES
    readme = (folder / "README.md").read_text()
    for path in images:
        assert f"| {path.name} |" in readme, f"{path.name} has no source/licence line"
