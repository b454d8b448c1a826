"""Issue 18, causes 1 and 2: every file a bundle ships is inside its boundary, listed with its
sha256 and size, and checked; the weights the torch reference reads are one of them, and the
labels are one UTF-8 name per class of the model."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vggdeploy.bundle import MAX_LABELS_BYTES, Bundle
from vggdeploy.errors import BundleError, VggDeployError
from vggdeploy.inspection import inspect_bundle

SETTINGS = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
# class names as export writes them: no line breaks of any kind (str.splitlines' set)
NAME = st.text(
    st.characters(blacklist_categories=("Cc", "Zl", "Zp", "Cs")), min_size=1, max_size=20
)


# -- cause 1: the weights file -----------------------------------------------------------------


@pytest.fixture(scope="module")
def file_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny bundle exported from a weights file that is then deleted: the bundle has a copy."""
    import torch

    from vggdeploy.exporter.onnx_export import ExportOptions, export_bundle
    from vggdeploy.models import random_state_dict, resolve_spec
    from vggdeploy.weights import WeightsSource

    root = tmp_path_factory.mktemp("weights")
    spec = resolve_spec("vgg11_bn", width_divisor=16, hidden=64, num_classes=10)  # conftest's
    ckpt = root / "ckpt.pth"
    torch.save(random_state_dict(spec, seed=3), ckpt)
    export_bundle(
        spec,
        WeightsSource("file", path=str(ckpt)),
        root / "bundle",
        ExportOptions(image_size=32),
    )
    ckpt.unlink()
    return root / "bundle"


def _torch_outputs(bundle: Path) -> object:
    import numpy as np

    from vggdeploy.runtimes.pytorch import TorchRuntime

    x = np.zeros((1, 3, 32, 32), np.float32)
    with TorchRuntime(bundle) as t:
        return t.infer({"input": x})["logits"]


def test_export_copies_the_weights_into_the_bundle(file_bundle: Path, tmp_path, monkeypatch):
    manifest = Bundle.load(file_bundle).manifest
    assert manifest.weights.path == "weights.pth"
    assert manifest.files["weights.pth"].size == (file_bundle / "weights.pth").stat().st_size
    monkeypatch.chdir(tmp_path)  # never relative to the current folder
    _torch_outputs(file_bundle)


def _with_weights(tmp_path: Path, file_bundle: Path, path: str) -> Path:
    import shutil

    root = tmp_path / "b"
    shutil.copytree(file_bundle, root)
    with Bundle.load(root).update() as manifest:
        manifest.weights.path = path
    return root


@pytest.mark.parametrize(
    "path, says",
    [
        ("../weights.pth", "leaves the bundle"),
        ("/etc/passwd", "leaves the bundle"),
        ("other.pth", "not listed in `files`"),
        (None, "does not carry its weights file"),
    ],
)
def test_weights_outside_the_boundary_or_unlisted_are_refused(
    tmp_path: Path, file_bundle: Path, monkeypatch, path, says
) -> None:
    root = _with_weights(tmp_path, file_bundle, path)
    (tmp_path / "weights.pth").write_bytes((root / "weights.pth").read_bytes())
    (root / "other.pth").write_bytes((root / "weights.pth").read_bytes())
    monkeypatch.chdir(root)  # a file of that name in the current folder is never read
    with pytest.raises(VggDeployError) as exc:
        _torch_outputs(root)
    assert says in str(exc.value) and "\n" not in str(exc.value)


def test_a_changed_weights_file_is_refused(tmp_path: Path, file_bundle: Path) -> None:
    root = _with_weights(tmp_path, file_bundle, "weights.pth")
    with open(root / "weights.pth", "ab") as f:
        f.write(b"\0")
    with pytest.raises(VggDeployError, match="does not match the sha256 and size"):
        _torch_outputs(root)
    assert not inspect_bundle(root)["ok"]


def test_pack_carries_the_weights_the_reference_needs(tmp_path: Path, file_bundle: Path) -> None:
    from vggdeploy.packaging.archive import pack_bundle, unpack_bundle

    result = pack_bundle(file_bundle, tmp_path / "b.tar.gz")
    assert "weights.pth" in result.files
    unpack_bundle(tmp_path / "b.tar.gz", tmp_path / "u")
    assert (_torch_outputs(tmp_path / "u") == _torch_outputs(file_bundle)).all()


# -- cause 2: the labels file ------------------------------------------------------------------


def _labels_bundle(root: Path, text: bytes) -> Bundle:
    (root / "labels.txt").write_bytes(text)
    bundle = Bundle.load(root)
    with bundle.update() as manifest:
        manifest.labels = "labels.txt"
    bundle.add_file("labels.txt")
    return Bundle.load(root)


@SETTINGS
@given(names=st.lists(NAME, min_size=0, max_size=25))
def test_labels_must_be_one_name_per_class(tiny_bundle: Path, names: list[str]) -> None:
    bundle = _labels_bundle(tiny_bundle, "".join(f"{n}\n" for n in names).encode())
    if len(names) == 10:
        assert bundle.labels() == names
    else:
        with pytest.raises(BundleError, match=f"has {len(names)} lines but the model has 10"):
            bundle.labels()


def test_three_labels_on_a_ten_class_model_regression(tiny_bundle: Path, capsys) -> None:
    from vggdeploy.cli import main

    _labels_bundle(tiny_bundle, b"cat\ndog\nbird\n")
    with pytest.raises(SystemExit) as exc:
        main(["inspect", str(tiny_bundle)])
    assert exc.value.code != 0
    assert "has 3 lines but the model has 10" in capsys.readouterr().out


@SETTINGS
@given(
    names=st.lists(NAME, min_size=10, max_size=10), other=st.lists(NAME, min_size=10, max_size=10)
)
def test_overwritten_labels_fail_inspect(tiny_bundle: Path, names, other) -> None:
    _labels_bundle(tiny_bundle, "".join(f"{n}\n" for n in names).encode())
    (tiny_bundle / "labels.txt").write_bytes("".join(f"{n}\n" for n in other).encode())
    report = inspect_bundle(tiny_bundle)
    assert report["ok"] == (names == other)
    if names != other:
        assert any("does not match the sha256" in p for p in report["problems"])


@SETTINGS
@given(data=st.binary(min_size=1, max_size=64))
def test_labels_that_are_not_utf8_are_one_line(tiny_bundle: Path, data: bytes) -> None:
    bundle = _labels_bundle(tiny_bundle, data)
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        with pytest.raises(BundleError, match="cannot be read as UTF-8"):
            bundle.labels()


def test_a_3_gb_labels_file_is_refused_by_size_before_reading(tiny_bundle: Path, monkeypatch):
    bundle = _labels_bundle(tiny_bundle, b"".join(b"c\n" for _ in range(10)))
    with open(tiny_bundle / "labels.txt", "r+b") as f:
        f.truncate(3 << 30)  # sparse: no disk used
    monkeypatch.setattr(Path, "read_bytes", lambda self: pytest.fail(f"read {self}"))
    monkeypatch.setattr(os, "read", lambda *a: pytest.fail("read"))
    with pytest.raises(BundleError, match=f"over the {MAX_LABELS_BYTES >> 20} MiB"):
        bundle.labels()


def test_labels_unlisted_in_files_are_refused(tiny_bundle: Path) -> None:
    (tiny_bundle / "labels.txt").write_text("".join(f"{i}\n" for i in range(10)))
    data = json.loads((tiny_bundle / "manifest.json").read_text())
    data["labels"] = "labels.txt"
    (tiny_bundle / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(BundleError, match="not listed in `files`"):
        Bundle.load(tiny_bundle).labels()
