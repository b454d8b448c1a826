"""Issue 18, cause 11: `package --format triton` refuses an ONNX file that keeps tensors in
external data (as every other reader of a bundle does), wherever the data location points, and
writes nothing."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vggdeploy.bundle import Bundle
from vggdeploy.errors import BundleError
from vggdeploy.packaging.triton import package_triton

LOCATION = st.one_of(
    st.sampled_from(["../../secret.bin", "/etc/passwd", "weights.bin", "./model.onnx.data"]),
    st.text(st.characters(blacklist_characters="\0"), min_size=1, max_size=30),
)


def _external(root: Path, location: str) -> None:
    """Point the first initializer of model.onnx at `location`, and re-record the file."""
    import onnx

    model = onnx.load(str(root / "model.onnx"))
    tensor = model.graph.initializer[0]
    tensor.ClearField("raw_data")
    tensor.data_location = onnx.TensorProto.EXTERNAL
    entry = tensor.external_data.add()
    entry.key, entry.value = "location", location
    onnx.save(model, str(root / "model.onnx"))
    Bundle.load(root).add_artifact("onnx.fp32", "model.onnx", kind="onnx", precision="fp32")


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(location=LOCATION)
def test_triton_refuses_external_data_and_writes_nothing(
    tiny_bundle_ro: Path, tmp_path_factory, location: str
) -> None:
    work = tmp_path_factory.mktemp("ext")
    root = work / "b"
    shutil.copytree(tiny_bundle_ro, root)
    (work / "secret.bin").write_bytes(b"\0" * 4096)
    _external(root, location)
    with pytest.raises(BundleError, match="external data files") as exc:
        package_triton(root, work / "repo")
    assert "\n" not in str(exc.value)
    assert not (work / "repo").exists() or not any((work / "repo").rglob("*.onnx"))
