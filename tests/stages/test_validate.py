"""`vggdeploy validate`: metrics, tolerances, targets, inputs, the report and exit codes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from vggdeploy.bundle import Bundle
from vggdeploy.cli import main
from vggdeploy.errors import InputError, RuntimeUnavailableError
from vggdeploy.metrics import TOLERANCES, compare_outputs, merge_tolerances, parse_tolerances
from vggdeploy.runtimes.base import infer_array
from vggdeploy.runtimes.registry import RuntimeSpec, expand, parse_spec
from vggdeploy.validate import validate_bundle


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    return exc.value.code, out, err


def perturb_onnx(bundle_dir: Path, key: str = "onnx.fp32", scale: float = 0.05) -> None:
    """Add noise to the last layer's weights of an ONNX in the bundle and re-record its sha256,
    as if a conversion step had produced a wrong but intact model."""
    import onnx
    from onnx import numpy_helper

    bundle = Bundle.load(bundle_dir)
    path = bundle.artifact_path(key)
    model = onnx.load(str(path))
    weights = [i for i in model.graph.initializer if len(i.dims) == 2]
    target = weights[-1]  # the last FC: (classes, hidden) or (hidden, classes)
    array = numpy_helper.to_array(target)
    noise = np.random.default_rng(1).standard_normal(array.shape).astype(array.dtype)
    target.CopyFrom(
        numpy_helper.from_array(array + noise * scale * float(np.abs(array).max()), target.name)
    )
    onnx.save(model, str(path))
    record = bundle.artifact(key).to_json_dict()
    bundle.add_artifact(
        key,
        record["path"],
        **{k: v for k, v in record.items() if k not in ("path", "sha256", "size")},
    )


def add_copy_as(bundle_dir: Path, key: str, filename: str) -> None:
    """Register a copy of model.onnx under another artifact key (tests validate's plumbing for
    that precision, not the quality of a real conversion)."""
    bundle = Bundle.load(bundle_dir)
    shutil.copy(bundle_dir / "model.onnx", bundle_dir / filename)
    bundle.add_artifact(key, filename, kind="onnx", precision=key.split(".", 1)[1])


def make_images(folder: Path, count: int = 5) -> Path:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        h, w = 40 + 7 * i, 60 - 3 * i
        yy, xx = np.mgrid[0:h, 0:w]
        array = np.stack(
            [(xx * (i + 3)) % 256, (yy * 5 + i * 40) % 256, rng.integers(0, 256, (h, w))], -1
        ).astype(np.uint8)
        Image.fromarray(array).save(folder / f"img{i}.{'png' if i % 2 else 'jpg'}")
    return folder


# -- metrics ------------------------------------------------------------------------------------


def test_compare_outputs_identical():
    ref = np.random.default_rng(0).standard_normal((6, 10)).astype(np.float32)
    m = compare_outputs(ref, ref.copy())
    assert m["max_abs"] == 0 and m["p99_abs"] == 0 and m["max_rel"] == 0 and m["range_rel"] == 0
    assert m["cosine"] == pytest.approx(1.0) and m["top1"] == 1.0 and m["top5"] == 1.0


def test_compare_outputs_figures():
    ref = np.array([[0.0, 1.0, 2.0, 3.0, 4.0, 5.0], [5.0, 4.0, 3.0, 2.0, 1.0, 0.0]], np.float32)
    got = ref.copy()
    got[0, 0] = 10.0  # row 0: class 0 becomes top-1
    m = compare_outputs(ref, got)
    assert m["max_abs"] == pytest.approx(10.0)
    assert m["max_rel"] == pytest.approx(10.0 / 5.0)
    assert m["range_rel"] == pytest.approx(10.0 / 5.0)
    assert m["top1"] == 0.5
    # row 0 top-5 was {5,4,3,2,1}, now {0,5,4,3,2}: 4 of 5 shared; row 1 unchanged
    assert m["top5"] == pytest.approx((4 / 5 + 1.0) / 2)
    assert 0 < m["p99_abs"] <= m["max_abs"]


def test_compare_outputs_nan_fails_every_direction():
    ref = np.ones((2, 4), np.float32)
    got = ref.copy()
    got[0, 0] = np.nan
    m = compare_outputs(ref, got)
    assert m["max_abs"] == float("inf") and m["cosine"] == float("-inf")


def test_tolerances_are_data_and_overridable():
    assert TOLERANCES["fp32"]["max_rel"] < TOLERANCES["fp16"]["max_rel"]
    assert set(TOLERANCES["int8"]) == {"cosine", "top1"}
    merged = merge_tolerances(parse_tolerances(["fp16.cosine=0.9995", "int8.top5=0.8"]))
    assert merged["fp16"] == {"max_rel": 1e-2, "cosine": 0.9995}
    assert merged["int8"]["top5"] == 0.8
    assert TOLERANCES["fp16"]["cosine"] == 0.999  # the defaults are not modified


@pytest.mark.parametrize(
    "text, message",
    [
        ("fp16.cosine", "PRECISION.METRIC=VALUE"),
        ("fp16.cosine=high", "PRECISION.METRIC=VALUE"),
        ("fp16.accuracy=0.9", "unknown metric 'accuracy'"),
        ("fp16.cosine=1.5", "at most 1"),
        ("fp32.max_rel=-1", ">= 0"),
    ],
)
def test_bad_tolerances_are_input_errors(text, message):
    with pytest.raises(InputError, match=message):
        parse_tolerances([text])


# -- targets ------------------------------------------------------------------------------------


def test_expand_specs_against_the_bundle(tiny_bundle):
    add_copy_as(tiny_bundle, "onnx.int8", "model.int8.onnx")
    bundle = Bundle.load(tiny_bundle)
    specs = expand(bundle, [parse_spec("onnxruntime:cpu")])
    assert [s.precision for s in specs] == ["fp32", "int8"]
    assert expand(bundle, [RuntimeSpec("onnxruntime")], ["fp16"]) == [
        RuntimeSpec("onnxruntime", (), "fp16")
    ]
    assert expand(bundle, [parse_spec("torch"), parse_spec("ort@fp32")]) == [
        RuntimeSpec("torch", (), "fp32"),
        RuntimeSpec("onnxruntime", (), "fp32"),
    ]
    with pytest.raises(InputError, match="no engine.. artifacts"):
        expand(bundle, [parse_spec("tensorrt")])


class _FixedBatchRuntime:
    """Just enough of a runtime with a fixed batch of 2, to check chunking and padding."""

    def __init__(self) -> None:
        from vggdeploy.runtimes.base import TensorSpec

        self.inputs = [TensorSpec("input", (2, 3), "float16")]
        self.outputs = [TensorSpec("logits", (2, 3), "float32")]
        self.calls: list[tuple[int, ...]] = []

    def infer(self, feed):
        x = feed["input"]
        assert x.dtype == np.float16
        self.calls.append(x.shape)
        return {"logits": x * 2}


def test_infer_array_casts_and_pads_fixed_batches():
    runtime = _FixedBatchRuntime()
    x = np.arange(15, dtype=np.float32).reshape(5, 3)
    out = infer_array(runtime, x)
    assert runtime.calls == [(2, 3), (2, 3), (2, 3)]
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, x * 2)


# -- validate_bundle ----------------------------------------------------------------------------


def test_validate_bundle_api_passes_and_serialises(tiny_bundle_ro):
    report = validate_bundle(tiny_bundle_ro, samples=5, batch=2)
    assert report.passed, report.summary()
    assert report.reference == "torch[cpu] fp32"
    [result] = report.results
    assert result.label == "onnxruntime[cpu] fp32" and result.status == "compared"
    assert {c.metric for c in result.checks} == {"max_rel", "cosine"}
    data = json.loads(json.dumps(report.to_dict()))
    [inputs] = data["inputs"].values()
    assert data["passed"] is True and inputs["samples"] == 5
    assert data["targets"][0]["runtime"]["providers"] == ["CPUExecutionProvider"]


def test_validate_cli_passes_on_the_tiny_bundle(tiny_bundle_ro, capsys, tmp_path):
    code, out, err = run_cli(["validate", tiny_bundle_ro, "--json", tmp_path / "r.json"], capsys)
    assert code == 0, out + err
    assert "onnxruntime[cpu] fp32" in out and "PASS" in out and "FAIL" not in out
    assert "PASSED: 2 checks on 1 target" in out
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["passed"] is True
    assert data["reference"]["label"] == "torch[cpu] fp32"
    assert list(data["inputs"].values()) == [
        {
            "kind": "random",
            "samples": 16,
            "batch": 8,
            "shape": [3, 32, 32],
            "seed": 0,
        }
    ]


def test_validate_cli_fails_with_exit_2_on_a_perturbed_model(tiny_bundle, capsys):
    perturb_onnx(tiny_bundle)
    code, out, err = run_cli(
        ["validate", tiny_bundle, "--runtime", "torch", "--runtime", "onnxruntime:cpu"], capsys
    )
    assert code == 2
    assert "FAIL" in out
    assert "FAILED: 2 of 4 checks on 2 targets" in out
    assert "-[x] onnxruntime[cpu] fp32: max_rel" in out
    assert "-[x] onnxruntime[cpu] fp32: cosine" in out
    assert "-[x] torch" not in out  # torch against itself still passes
    assert err.strip().splitlines()[-1].startswith("error: validation FAILED")
    assert "Traceback" not in err


def test_tolerance_override_changes_the_verdict(tiny_bundle, tiny_bundle_ro, capsys):
    code, out, _ = run_cli(["validate", tiny_bundle_ro, "--tol", "fp32.max_abs=1e-15"], capsys)
    assert code == 2 and "-[x] onnxruntime[cpu] fp32: max_abs" in out
    perturb_onnx(tiny_bundle, scale=0.01)
    code, out, _ = run_cli(["validate", tiny_bundle], capsys)
    assert code == 2
    code, out, _ = run_cli(
        ["validate", tiny_bundle, "--tol", "fp32.max_rel=0.5", "--tol", "fp32.cosine=0.9"], capsys
    )
    assert code == 0, out
    assert "<= 5.00e-01" in out


def test_validate_json_to_stdout(tiny_bundle, capsys):
    perturb_onnx(tiny_bundle)
    code, out, _ = run_cli(["validate", tiny_bundle, "--json", "-", "--samples", "4"], capsys)
    assert code == 2
    data = json.loads(out)
    assert data["passed"] is False
    assert {f["metric"] for f in data["failures"]} == {"max_rel", "cosine"}
    assert all(f["target"] == "onnxruntime[cpu] fp32" for f in data["failures"])


def test_validate_with_images(tiny_bundle_ro, tmp_path, capsys):
    folder = make_images(tmp_path / "imgs", 5)
    code, out, _ = run_cli(
        [
            "validate",
            tiny_bundle_ro,
            "--images",
            folder,
            "--batch",
            "2",
            "--json",
            tmp_path / "r.json",
        ],
        capsys,
    )
    assert code == 0, out
    assert f"5 images from {folder}" in out
    [inputs] = json.loads((tmp_path / "r.json").read_text())["inputs"].values()
    assert inputs["kind"] == "images" and len(inputs["files"]) == 5
    code, out, _ = run_cli(
        ["validate", tiny_bundle_ro, "--images", folder, "--samples", "2"], capsys
    )
    assert code == 0 and "2 images from" in out


def test_validate_images_folder_without_images_is_one_line(tiny_bundle_ro, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code, out, err = run_cli(["validate", tiny_bundle_ro, "--images", tmp_path / "empty"], capsys)
    assert code == 1 and err.startswith("error: no images found") and "Traceback" not in err


def test_every_onnx_is_validated_and_int8_is_judged_on_photographs(tiny_bundle, capsys):
    """Without --images, fp32 is judged on random tensors and INT8 on the shipped photographs:
    random tensors never judge INT8 (the rule `pipeline` uses too)."""
    add_copy_as(tiny_bundle, "onnx.int8", "model.int8.onnx")
    code, out, _ = run_cli(["validate", tiny_bundle, "--json", "-"], capsys)
    data = json.loads(out)
    labels = [t["label"] for t in data["targets"]]
    assert labels == ["onnxruntime[cpu] fp32", "onnxruntime[cpu] int8"]
    fp32, int8 = data["targets"]
    assert "random inputs" in fp32["inputs"]
    assert "photographs shipped with vggdeploy" in int8["inputs"]
    assert {c["metric"] for c in int8["checks"]} == {"cosine", "top1"}
    kinds = sorted(i["kind"] for i in data["inputs"].values())
    assert kinds == ["photographs", "random"]
    assert code == 0


def test_engines_the_host_cannot_run_are_skipped_with_the_reason(tiny_bundle, capsys):
    (tiny_bundle / "model.fp16.engine").write_bytes(b"not a real engine")
    bundle = Bundle.load(tiny_bundle)
    bundle.add_artifact(
        "engine.fp16", "model.fp16.engine", kind="tensorrt-engine", precision="fp16"
    )
    code, out, _ = run_cli(["validate", tiny_bundle], capsys)
    assert code == 0, out
    assert "SKIPPED" in out and "fp16" in out.split("SKIPPED", 1)[1].splitlines()[0]
    # Asked for by name, an engine that cannot run is an error, not a skip.
    with pytest.raises(RuntimeUnavailableError):
        validate_bundle(tiny_bundle, [RuntimeSpec("tensorrt", (), "fp16")])


def test_unavailable_explicit_target_is_a_one_line_error(tiny_bundle_ro, capsys):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this ONNX Runtime has CUDA")
    code, _, err = run_cli(["validate", tiny_bundle_ro, "--runtime", "onnxruntime:cuda"], capsys)
    assert code == 1
    assert "CUDAExecutionProvider is not in this" in err.strip().splitlines()[-1]
    assert err.strip().splitlines()[-1].startswith("error: onnxruntime:cuda@fp32: ")
    code, out, _ = run_cli(
        ["validate", tiny_bundle_ro, "--runtime", "onnxruntime:cuda", "--allow-fallback"], capsys
    )
    assert code == 0
    assert "fell back to CPU" in out and "did not run on the provider asked for" in out


def test_validate_bad_arguments_are_one_line(tiny_bundle_ro, tmp_path, capsys):
    for args, message in [
        (["--tol", "fp32.cosine"], "PRECISION.METRIC=VALUE"),
        (["--runtime", "caffe"], "unknown runtime 'caffe'"),
        (["--precision", "fp16"], "no onnx.fp16 artifact"),
        (["--runtime", "tensorrt@int8-u8"], "unknown precision 'int8-u8'"),  # one INT8 file
        (["--precision", "fp64"], "--precision fp64: choose from fp32, fp16, int8"),
    ]:
        code, _, err = run_cli(["validate", tiny_bundle_ro, *args], capsys)
        assert code == 1, args
        assert message in err and "Traceback" not in err, err
    code, _, err = run_cli(["validate", tmp_path / "nope"], capsys)
    assert code == 1 and "does not exist" in err
    for args in (["--batch", "0"], ["--seed", "-1"], ["--samples", "0"]):
        code, _, err = run_cli(["validate", tiny_bundle_ro, *args], capsys)
        assert code == 2 and err.startswith("error: ") and "Traceback" not in err, args
