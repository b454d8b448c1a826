"""FP16 conversion: float32 I/O, fp16 weights, overflow detection, atomic writes, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from vggdeploy.bundle import Bundle
from vggdeploy.cli import cli
from vggdeploy.errors import CheckFailedError, InputError
from vggdeploy.exporter import fp16
from vggdeploy.metrics import compare_arrays
from vggdeploy.runtimes.onnxrt import OrtRuntime


def _float_initializers(path: Path) -> dict[str, int]:
    model = onnx.load(str(path))
    return {
        init.name: init.data_type
        for init in model.graph.initializer
        if init.data_type in (TensorProto.FLOAT, TensorProto.FLOAT16)
    }


def _logits(bundle: Bundle, precision: str, x: np.ndarray) -> np.ndarray:
    with OrtRuntime(bundle, precision=precision) as runtime:
        return runtime.infer({bundle.input_name: x})[bundle.output_name]


def _scale_weights(bundle_dir: Path, factors: dict[str, float]) -> None:
    """Multiply initializers of the bundle's fp32 ONNX in place and re-record its sha256."""
    path = bundle_dir / "model.onnx"
    model = onnx.load(str(path))
    for init in model.graph.initializer:
        for prefix, factor in factors.items():
            if init.name.startswith(prefix):
                array = numpy_helper.to_array(init) * np.float32(factor)
                init.CopyFrom(numpy_helper.from_array(array.astype(np.float32), init.name))
    onnx.save(model, str(path))
    bundle = Bundle.load(bundle_dir)
    info = bundle.artifact("onnx.fp32").to_json_dict()
    for key in ("sha256", "size"):
        info.pop(key)
    bundle.add_artifact("onnx.fp32", info.pop("path"), **info)


def test_fp16_model_has_float32_io_fp16_weights_and_matches_fp32(tiny_bundle: Path) -> None:
    bundle = Bundle.load(tiny_bundle)
    report = fp16.convert_fp16(bundle, samples=16)

    path = tiny_bundle / "model.fp16.onnx"
    onnx.checker.check_model(str(path), full_check=True)
    model = onnx.load(str(path))
    assert [i.type.tensor_type.elem_type for i in model.graph.input] == [TensorProto.FLOAT]
    assert [o.type.tensor_type.elem_type for o in model.graph.output] == [TensorProto.FLOAT]
    # Nothing overflows in this model, so every float weight is float16.
    assert set(_float_initializers(path).values()) == {TensorProto.FLOAT16}
    assert report["kept_fp32"] == []
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["vggdeploy.precision"] == "fp16"

    reloaded = Bundle.load(tiny_bundle)
    record = reloaded.artifact("onnx.fp16")
    assert record.precision == "fp16" and record.path == "model.fp16.onnx"
    assert reloaded.artifact_path("onnx.fp16", verify=True) == path
    assert record.parity["passed"] and record.parity["finite"]
    assert "does not compute in fp16" in record.note
    assert "does not compute in fp16" in report["note"]

    x = np.random.default_rng(1).standard_normal((3, 3, 32, 32), dtype=np.float32)
    ref, got = _logits(reloaded, "fp32", x), _logits(reloaded, "fp16", x)
    assert got.dtype == np.float32
    figures = compare_arrays(ref, got)
    assert figures["cosine"] > 0.999
    assert figures["max_rel"] < 1e-2
    # ...but not bit-identical: the weights really were rounded to fp16.
    assert figures["max_abs"] > 0


def test_overflowing_activations_keep_their_ops_in_fp32(tiny_bundle: Path) -> None:
    # First conv x1e5 overflows fp16 (and its largest weight too); the second conv x1e-5 brings
    # the activations back into range, so exactly the ops in between must stay in fp32.
    _scale_weights(tiny_bundle, {"features.0.": 1e5, "features.4.weight": 1e-5})
    bundle = Bundle.load(tiny_bundle)
    report = fp16.convert_fp16(bundle, samples=16)

    kept = {k["node"]: k for k in report["kept_fp32"]}
    assert [kept[n]["op"] for n in sorted(kept)] == sorted(["Conv", "Relu", "MaxPool", "Conv"])
    rows = {r["tensor"]: r for r in report["activations"]}
    risky = [r for r in report["activations"] if r["overflow_risk"]]
    assert len(risky) == 3 and all(r["max_abs"] > fp16.FP16_MAX for r in risky)
    assert not rows[bundle.output_name]["overflow_risk"]
    assert report["weights"]["over_fp16_max"] >= 1
    assert any("weight features.0.weight" in r for k in kept.values() for r in k["reasons"])

    path = tiny_bundle / "model.fp16.onnx"
    onnx.checker.check_model(str(path), full_check=True)
    types = _float_initializers(path)
    # The kept convs keep their exact fp32 weights (no clamp to 65504, no subnormal 1e-6s)...
    for name in ("features.0.weight", "features.4.weight"):
        assert types[name] == TensorProto.FLOAT
    # ...and everything after them is fp16.
    assert types["features.8.weight"] == TensorProto.FLOAT16
    assert types["classifier.6.weight"] == TensorProto.FLOAT16

    x = np.random.default_rng(2).standard_normal((2, 3, 32, 32), dtype=np.float32)
    got = _logits(bundle, "fp16", x)
    assert np.all(np.isfinite(got))
    assert compare_arrays(_logits(bundle, "fp32", x), got)["cosine"] > 0.999


def test_headroom_keeps_tensors_near_the_fp16_maximum() -> None:
    # in -> Relu -> mid -> Neg -> out; `mid` at 40000 fits fp16 but not with 2x headroom.
    graph = helper.make_graph(
        [
            helper.make_node("Relu", ["in"], ["mid"], name="r"),
            helper.make_node("Neg", ["mid"], ["out"], name="n"),
        ],
        "g",
        [helper.make_tensor_value_info("in", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1])],
    )
    model = helper.make_model(graph)
    weights = {"tensors": {}, "summary": {}}
    measured = {"in": 1.0, "mid": 40000.0, "out": 40000.0}
    assert set(fp16.choose_fp32_nodes(model, measured, weights, headroom=2.0)) == {"r", "n"}
    assert fp16.choose_fp32_nodes(model, measured, weights, headroom=1.0) == {}
    measured["mid"] = float("inf")  # already overflowing in fp32: keep it too
    assert "r" in fp16.choose_fp32_nodes(model, measured, weights, headroom=1.0)


def test_keep_fp32_by_op_type_and_node_name(tiny_bundle: Path) -> None:
    bundle = Bundle.load(tiny_bundle)
    ops, nodes = fp16.split_keep_fp32(bundle, ["Gemm"])
    assert (ops, nodes) == (["Gemm"], [])
    conv = next(
        n.name for n in onnx.load(str(tiny_bundle / "model.onnx")).graph.node if n.op_type == "Conv"
    )
    assert fp16.split_keep_fp32(bundle, [conv]) == ([], [conv])

    report = fp16.convert_fp16(bundle, keep_fp32_ops=ops, keep_fp32_nodes=[conv], samples=8)
    kept = {k["node"]: k for k in report["kept_fp32"]}
    assert sum(k["op"] == "Gemm" for k in kept.values()) == 3
    assert kept[conv]["reasons"] == ["asked (--keep-fp32)"]
    types = _float_initializers(tiny_bundle / "model.fp16.onnx")
    assert types["classifier.0.weight"] == TensorProto.FLOAT
    assert types["features.0.weight"] == TensorProto.FLOAT
    assert types["features.4.weight"] == TensorProto.FLOAT16

    with pytest.raises(InputError, match="neither an op type nor a node name.*Conv"):
        fp16.split_keep_fp32(bundle, ["conv"])


def test_measures_on_images_through_the_bundle_preprocessing(
    tiny_bundle: Path, tmp_path: Path
) -> None:
    from PIL import Image

    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(5):
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(images / f"{i}.png")
    report = fp16.convert_fp16(Bundle.load(tiny_bundle), images=images, samples=4, batch_size=3)
    assert report["measured_on"]["source"] == "images"
    assert report["measured_on"]["samples"] == 4
    assert report["parity"]["images"] == 4
    # ImageNet normalisation bounds the input at (1 - 0.406) / 0.225.
    assert 0 < report["activations"][0]["max_abs"] <= 2.65


def test_failed_parity_writes_nothing(tiny_bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = sorted(p.name for p in tiny_bundle.iterdir())
    monkeypatch.setattr(fp16, "PARITY_MAX_REL", 0.0)
    with pytest.raises(CheckFailedError, match="nothing was written"):
        fp16.convert_fp16(Bundle.load(tiny_bundle), samples=4)
    assert sorted(p.name for p in tiny_bundle.iterdir()) == before
    assert "onnx.fp16" not in Bundle.load(tiny_bundle).artifacts


def test_cli_convert_reports_kept_ops_and_the_cpu_caveat(tiny_bundle: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(
        cli,
        [
            "convert",
            str(tiny_bundle),
            "--precision",
            "fp16",
            "--samples",
            "8",
            "--keep-fp32",
            "Gemm",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "wrote" in result.output and "model.fp16.onnx" in result.output
    assert "kept in fp32 (3 nodes)" in result.output
    assert "does not compute in fp16" in result.output

    result = runner.invoke(
        cli, ["convert", str(tiny_bundle), "--precision", "fp16", "--samples", "4", "--json", "-"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["precision"] == "fp16" and report["parity"]["passed"]


def test_cli_convert_bad_keep_fp32_is_one_line(
    tiny_bundle: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from vggdeploy.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["convert", str(tiny_bundle), "--precision", "fp16", "--keep-fp32", "NoSuchOp"])
    assert exc.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("error: --keep-fp32 NoSuchOp: neither an op type nor a node name")
    assert err.count("\n") == 1
    assert not (tiny_bundle / "model.fp16.onnx").exists()


def test_weight_ranges_count_like_the_plain_formula() -> None:
    """The fast path (two reductions, integer bits) gives the |w| float comparisons' figures."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    from vggdeploy.exporter.fp16_measure import FP16_MAX, FP16_MIN_NORMAL, weight_ranges

    values = [
        np.array([1e-6, -1e-6, 0.0, -0.0, 7e4, -1e5, np.inf, 3.0], np.float32),
        np.array([np.nan, 1e-5, 7e4], np.float32),
        np.zeros((0, 3), np.float32),
        np.random.default_rng(0).standard_normal((5, 7)).astype(np.float32) * 1e-4,
        np.array([[6.1e-5, 6.2e-5, -6.0e-5, FP16_MIN_NORMAL]], np.float32),
    ]
    inits = [numpy_helper.from_array(v, f"w{i}") for i, v in enumerate(values)]
    model = onnx.helper.make_model(onnx.helper.make_graph([], "g", [], [], inits))
    got = weight_ranges(model)
    for i, v in enumerate(values):
        expected = float(np.abs(v).max(initial=0.0))
        assert np.array_equal(got["tensors"][f"w{i}"]["max_abs"], expected, equal_nan=True)
    a = np.abs(np.concatenate([v.ravel() for v in values]))
    assert got["summary"]["count"] == a.size
    assert got["summary"]["over_fp16_max"] == np.count_nonzero(a > FP16_MAX)
    assert got["summary"]["subnormal_in_fp16"] == np.count_nonzero((a > 0) & (a < FP16_MIN_NORMAL))


def test_the_cpu_note_says_what_this_hosts_cpu_provider_computes(
    tiny_bundle: Path, monkeypatch
) -> None:
    """The recorded note follows the probe: fp32 arithmetic (weight rounding only) where the
    CPU provider has no fp16 kernels, fp16 arithmetic where it has them."""
    import platform

    from vggdeploy.ortsession import cpu_computes_fp16

    if platform.machine().lower() in ("x86_64", "amd64"):
        # ONNX Runtime's x86-64 CPU builds have no fp16 Conv kernel (insert_cast_transformer.cc
        # casts such nodes up to float32): the probe must see float32 arithmetic here.
        assert cpu_computes_fp16() is False
    for computes, note in ((False, fp16.CPU_CAVEAT), (True, fp16.CPU_FP16_NOTE)):
        monkeypatch.setattr(fp16, "cpu_computes_fp16", lambda computes=computes: computes)
        bundle = Bundle.load(tiny_bundle)
        report = fp16.convert_fp16(bundle, samples=4)
        assert report["note"] == note and report["parity"]["note"] == note
        assert Bundle.load(tiny_bundle).artifacts["onnx.fp16"].model_extra["note"] == note
