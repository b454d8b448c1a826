"""Shared fixtures: small bundles exported once per session.

The tiny spec (conv widths / 16, 64-wide hidden FCs, 10 classes, 32x32 input) keeps every
stage to seconds on two cores while exercising the same code paths as a full VGG-16.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

TINY = {"width_divisor": 16, "hidden": 64, "num_classes": 10}
TINY_IMAGE_SIZE = 32


def _export(root: Path, name: str, **kwargs) -> Path:
    from vggdeploy.exporter.onnx_export import ExportOptions, export_bundle
    from vggdeploy.models import resolve_spec
    from vggdeploy.weights import WeightsSource

    spec = resolve_spec(name, **TINY)
    image_size = kwargs.pop("image_size", TINY_IMAGE_SIZE)
    export_bundle(
        spec, WeightsSource("random", seed=0), root, ExportOptions(image_size=image_size, **kwargs)
    )
    return root


@pytest.fixture(scope="session")
def tiny_bundle_ro(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny vgg11_bn bundle shared by the session: do not modify it (use `tiny_bundle`)."""
    return _export(tmp_path_factory.mktemp("tiny") / "bundle", "vgg11_bn")


@pytest.fixture
def tiny_bundle(tiny_bundle_ro: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny bundle that a test may change."""
    dest = tmp_path / "bundle"
    shutil.copytree(tiny_bundle_ro, dest)
    return dest


@pytest.fixture(scope="session")
def tiny_dense_bundle_ro(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny dense (fully convolutional) config-C bundle with dynamic height and width."""
    return _export(tmp_path_factory.mktemp("dense") / "bundle", "C", image_size=224, dense=True)
