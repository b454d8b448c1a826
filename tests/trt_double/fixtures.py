"""Pytest fixtures for the TensorRT double; import them into a test module."""

from __future__ import annotations

import pytest

from . import GENERATIONS, fake_cuda, install


@pytest.fixture(params=GENERATIONS, ids=lambda g: f"trt{g}")
def trt(request, monkeypatch):
    """The fake `tensorrt` of one API generation, installed as `tensorrt` (both are run)."""
    module = install(monkeypatch, request.param)
    yield module
    fake_cuda.reset()


@pytest.fixture
def trt10(monkeypatch):
    module = install(monkeypatch, "10.16")
    yield module
    fake_cuda.reset()


@pytest.fixture
def gpu():
    """The fake GPU's description (name, compute_capability, total_memory, jetson, ...)."""
    return fake_cuda.GPU


@pytest.fixture(scope="session")
def precision_bundle_ro(tiny_bundle_ro, tmp_path_factory):
    """The tiny bundle plus model.fp16.onnx (`convert_fp16`) and model.int8.onnx (TensorRT Q/DQ
    from `calibrate_bundle` on a few random images). Read-only: use `precision_bundle`."""
    import shutil

    import numpy as np
    from PIL import Image

    from vggdeploy.bundle import Bundle
    from vggdeploy.calibration import CalibrationOptions, calibrate_bundle
    from vggdeploy.exporter.fp16 import convert_fp16

    root = tmp_path_factory.mktemp("trt") / "bundle"
    shutil.copytree(tiny_bundle_ro, root)
    convert_fp16(Bundle.load(root), samples=4, batch_size=4)
    images = root.parent / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(8):
        pixels = rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(images / f"{i}.png")
    options = CalibrationOptions(
        method="minmax", samples=8, batch_size=4, holdout=0, progress=False
    )
    calibrate_bundle(Bundle.load(root), images, options)
    return root


@pytest.fixture
def precision_bundle(precision_bundle_ro, tmp_path):
    """A private copy of `precision_bundle_ro` that a test may change."""
    import shutil

    dest = tmp_path / "bundle"
    shutil.copytree(precision_bundle_ro, dest)
    return dest
