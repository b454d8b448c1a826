"""One runtime spec grammar in every command that takes a runtime.

`validate`, `predict`, `evaluate`, `bench` and `pipeline` each run `torch:channels-last`,
`onnxruntime:cpu@fp32`, `tensorrt@int8` and (when installed) `openvino@int8` / `openvino:cpu@fp32`,
OpenVINO for real on the CPU. The TensorRT cases exercise only the project's
TensorRT double (tests/trt_double), with engines built by it from the bundle's Q/DQ ONNX.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vggdeploy.bundle import Bundle
from vggdeploy.cli import main
from vggdeploy.errors import CheckFailedError
from vggdeploy.exporter.engine import BuildOptions, build_engine

pytest_plugins = ("trt_double.fixtures",)

SPECS = ["torch:channels-last", "onnxruntime:cpu@fp32", "tensorrt@int8"]
HAS_OPENVINO = importlib.util.find_spec("openvino") is not None
OPENVINO_SPECS = ["openvino@int8", "openvino:cpu@fp32"] if HAS_OPENVINO else []


@pytest.fixture
def engine_bundle(trt, precision_bundle) -> Path:
    """The tiny bundle with fp32/fp16/int8 ONNX and an int8 engine built by the double."""
    build_engine(Bundle.load(precision_bundle), BuildOptions(precision="int8"))
    return precision_bundle


@pytest.fixture
def labelled(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    for c in range(2):
        for i in range(2):
            path = tmp_path / "labelled" / f"class_{c}" / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(path)
    return tmp_path / "labelled"


def run_cli(args, capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    return exc.value.code, out, err


@pytest.mark.parametrize("spec", SPECS + OPENVINO_SPECS)
def test_validate_predict_evaluate_bench_take_every_spec(
    engine_bundle, labelled, tmp_path, capsys, spec
):
    from vggdeploy.metrics import TOLERANCES, images_needed

    image = next(labelled.rglob("*.png"))
    # int8 is judged on no fewer images than its verdict needs (fewer: "not judged", exit 2)
    samples = images_needed(TOLERANCES["int8"]) if "int8" in spec else 4
    commands = {
        "validate": ["validate", engine_bundle, "--runtime", spec, "--samples", samples],
        "predict": ["predict", engine_bundle, image, "--runtime", spec, "--top", "2"],
        "evaluate": ["evaluate", engine_bundle, "--images", labelled, "--runtime", spec],
        "bench": ["bench", engine_bundle, "--runtime", spec, "--batch", "1"]
        + ["--warmup", "1", "--iterations", "2"],
    }
    name_, _, precision = spec.partition("@")
    want_runtime = name_.split(":")[0]
    want_precision = precision or "fp32"
    for name, args in commands.items():
        code, out, err = run_cli([*args, "--json", tmp_path / f"{name}.json"], capsys)
        assert code == 0, f"{name} {spec}: {err}"
        ran = what_ran(name, json.loads((tmp_path / f"{name}.json").read_text()))
        # the runtime's own description of what it loaded, not any mention of its name (every
        # result carries every library's version, so a name alone always appears)
        assert (ran["runtime"], ran["precision"]) == (want_runtime, want_precision), (name, ran)
        if "channels-last" in spec:
            assert ran["channels_last"] is True, (name, ran)


def what_ran(command: str, data: dict) -> dict:
    """The description of the one runtime a command's --json says it ran."""
    if command == "validate":
        [target] = [t for t in data["targets"] if t["status"] == "compared"]
        return target["runtime"]
    if command == "predict":
        return data["runtime"]
    if command == "evaluate":
        [result] = data["results"]
        return result["describe"]
    [case] = data["cases"]
    return case["describe"]


def test_pipeline_takes_every_spec(first_export_dir, trt10, tmp_path, capsys):
    """The pipeline's --bench-runtime takes the same specs (TensorRT through the double)."""
    out = tmp_path / "run"
    shutil.copytree(first_export_dir, out)
    args = [
        "pipeline", "vgg11_bn", "--out", out, "--width-divisor", "16", "--hidden", "64",
        "--num-classes", "10", "--image-size", "32", "--batch", "1", "--bench-iterations", "2",
        "--validate-samples", "4", "--bench-runtime", ",".join(SPECS + OPENVINO_SPECS),
        "--json", "-",
    ]  # fmt: skip
    code, out_text, err = run_cli(args, capsys)
    assert code in (0, 2), err  # 2: a random-weights INT8 check may fail; the specs all ran
    report = json.loads(out_text)
    ran = {(c["runtime"], c["precision"]) for c in report["bench"]["cases"]}
    assert {("torch:channels-last", "fp32"), ("onnxruntime", "fp32"), ("tensorrt", "int8")} <= ran
    if HAS_OPENVINO:
        assert {("openvino", "int8"), ("openvino", "fp32")} <= ran


@pytest.fixture
def first_export_dir(tmp_path_factory) -> Path:
    """A pipeline folder whose export already ran (so the test above times the rest)."""
    from vggdeploy.pipeline import PipelineOptions, run_pipeline

    out = tmp_path_factory.mktemp("pipe") / "run"
    options = PipelineOptions(
        width_divisor=16,
        hidden=64,
        num_classes=10,
        image_size=32,
        batches=(1,),
        bench_iterations=2,
        validate_samples=4,
        bench_runtimes=("onnxruntime",),
    )
    with contextlib.suppress(CheckFailedError):  # a random-weights INT8 check may fail
        run_pipeline("vgg11_bn", out, options)
    return out


@pytest.mark.skipif(not HAS_OPENVINO, reason="OpenVINO is not installed")
def test_bench_openvino_end_to_end_and_streams(precision_bundle, labelled, tmp_path, capsys):
    """`--streams N` reaches OpenVINO as its own NUM_STREAMS (read back per stream count)."""
    args = ["bench", precision_bundle, "--runtime", "openvino@int8", "--batch", "1"]
    args += ["--warmup", "1", "--iterations", "3", "--end-to-end", labelled, "--streams", "1,2"]
    code, out, err = run_cli([*args, "--json", tmp_path / "b.json"], capsys)
    assert code == 0, err
    [case] = json.loads((tmp_path / "b.json").read_text())["cases"]
    assert case["end_to_end"] and case["stages"]
    rules = [s["threads_rule"] for s in case["streams"]]
    assert [s["streams"] for s in case["streams"]] == [1, 2]
    assert all("stream(s) of its own" in r for r in rules), rules
    assert case["describe"]["performance_hint"] == "LATENCY"
