"""Issue 18, cause 12: the manifest's `io` is checked against the ONNX file before validate or
predict runs it: a renamed input, another dtype or another class count is one error line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vggdeploy.bundle import Bundle
from vggdeploy.cli import main
from vggdeploy.errors import BundleError

SETTINGS = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


def run_cli(args, capsys):
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    return exc.value.code, out, err


@pytest.fixture
def image(tmp_path: Path) -> Path:
    from PIL import Image

    path = tmp_path / "x.png"
    Image.new("RGB", (40, 40), (120, 30, 200)).save(path)
    return path


def _edit_io(root: Path, change) -> None:
    data = json.loads((root / "manifest.json").read_text())
    change(data["io"])
    (root / "manifest.json").write_text(json.dumps(data))


# every way the manifest's io can disagree with the file, generated
MISMATCH = st.one_of(
    st.tuples(
        st.just("input name"), st.text(min_size=1, max_size=12).filter(lambda s: s != "input")
    ),
    st.tuples(
        st.just("output name"), st.text(min_size=1, max_size=12).filter(lambda s: s != "logits")
    ),
    st.tuples(
        st.just("input dtype"), st.sampled_from(["float16", "float64", "int8", "uint8", "int64"])
    ),
    st.tuples(st.just("classes"), st.integers(1, 100_000).filter(lambda n: n != 10)),
    st.tuples(st.just("channels"), st.integers(1, 64).filter(lambda n: n != 3)),
    st.tuples(st.just("rank"), st.integers(0, 6).filter(lambda n: n != 2)),
)


def _apply(io: dict, kind: str, value) -> None:
    inp, out = io["inputs"][0], io["outputs"][0]
    if kind == "input name":
        inp["name"] = value
    elif kind == "output name":
        out["name"] = value
    elif kind == "input dtype":
        inp["dtype"] = value
    elif kind == "classes":
        out["shape"] = ["batch", value]
    elif kind == "channels":
        inp["shape"] = ["batch", value, 32, 32]
    else:
        out["shape"] = ["batch", 10, 1, 1, 1, 1][:value]


@SETTINGS
@given(mismatch=MISMATCH)
def test_any_io_mismatch_is_refused_before_running(
    tiny_bundle_ro: Path, tmp_path_factory, mismatch
) -> None:
    root = tmp_path_factory.mktemp("io") / "b"
    shutil.copytree(tiny_bundle_ro, root)
    _edit_io(root, lambda io: _apply(io, *mismatch))
    with pytest.raises(BundleError, match="does not match the manifest's io") as exc:
        Bundle.load(root).artifact_path("onnx.fp32", verify=True)
    assert "\n" not in str(exc.value)


def _five_class_onnx(root: Path) -> None:
    """The regression case: the ONNX file (re-recorded) says 5 classes, the manifest 10."""
    import onnx

    model = onnx.load(str(root / "model.onnx"))
    model.graph.output[0].type.tensor_type.shape.dim[1].dim_value = 5
    onnx.save(model, str(root / "model.onnx"))
    Bundle.load(root).add_artifact("onnx.fp32", "model.onnx", kind="onnx", precision="fp32")


@pytest.mark.parametrize("command", ["validate", "predict"])
@pytest.mark.parametrize(
    "case, says",
    [
        ("renamed input", "inputs are ['input']"),
        ("fp16 input", "is float32, the manifest says float16"),
        ("5-class output", "has shape ['batch', 5]"),
    ],
)
def test_the_issue_cases_are_one_line_in_validate_and_predict(
    tiny_bundle: Path, image: Path, capsys, command, case, says
) -> None:
    if case == "renamed input":
        _edit_io(tiny_bundle, lambda io: io["inputs"][0].update(name="pixels"))
    elif case == "fp16 input":
        _edit_io(tiny_bundle, lambda io: io["inputs"][0].update(dtype="float16"))
    else:
        _five_class_onnx(tiny_bundle)
    args = [command, tiny_bundle, "--runtime", "onnxruntime"]
    code, _, err = run_cli(args + ([image] if command == "predict" else []), capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code != 0 and "Traceback" not in err
    assert lines[-1].startswith("error: ") and says in lines[-1], lines
