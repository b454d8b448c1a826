"""`vggdeploy build --dla-core N [--gpu-fallback]`: DLA builds for Jetson Orin.

Exercises only the TensorRT double (tests/trt_double; both API generations, 10.16 and 11.4):
no real DLA, TensorRT or GPU is used. What the double models of DLA is written in
tests/trt_double/fake_tensorrt.py (DLA cores, can_run_on_DLA, GPU fallback, runtime DLA_core).
"""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from vggdeploy.bundle import Bundle
from vggdeploy.errors import InputError, RuntimeUnavailableError
from vggdeploy.exporter.dla import NO_DLA, check_pool_scales
from vggdeploy.exporter.engine import BuildOptions, ProfileSpec, build_engine
from vggdeploy.report.build import render_build
from vggdeploy.runtimes.registry import parse_spec
from vggdeploy.runtimes.trt import TrtRuntime

# trt (the TensorRT double per API generation), gpu, precision_bundle(_ro)
pytest_plugins = ("trt_double.fixtures",)


#: The tiny 32x32 bundle's adaptive average pool (1x1 -> 7x7) exports as index ops DLA cannot
#: run; at 224x224 (VGG-16) it is an AveragePool, which DLA runs. The fake DLA is told to accept
#: them, so the tiny graph stands in for a VGG that DLA runs whole.
ADAPTIVE_POOL_OPS = ["Transpose", "GatherND", "ReduceMean", "Gather", "Shape", "Concat"]


@pytest.fixture
def orin(gpu):
    """The fake GPU as a Jetson AGX Orin: Ampere (8.7) with two DLA cores."""
    gpu.update(name="Orin", compute_capability="8.7", jetson=True, dla_cores=2)
    gpu["dla_accepts"] = list(ADAPTIVE_POOL_OPS)
    return gpu


def test_tiny_graphs_adaptive_pool_is_not_dla(trt, orin, no_build, precision_bundle) -> None:
    orin["dla_accepts"] = []
    with pytest.raises(InputError, match=r"GatherND_\d+ \(UNARY\)"):
        build(precision_bundle, precision="fp16", dla_core=0)


@pytest.fixture
def no_build(monkeypatch, trt):
    """Fails the test if TensorRT is asked to build: refusals must come before the build."""

    def refuse(self, network, config):
        raise AssertionError("build_serialized_network was called")

    monkeypatch.setattr(trt.Builder, "build_serialized_network", refuse)


def plan_header(path: Path) -> dict:
    data = path.read_bytes()
    (size,) = struct.unpack("<I", data[4:8])
    return json.loads(data[8 : 8 + size])


def build(root: Path, **options):
    return build_engine(Bundle.load(root), BuildOptions(**options))


# -- the happy path ---------------------------------------------------------------------------------


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_dla_build_on_core_0(trt, orin, precision_bundle, precision) -> None:
    record = build(precision_bundle, precision=precision, dla_core=0)
    dla = record.dla
    assert dla["core"] == 0 and dla["gpu_fallback"] is False
    assert dla["layers_on_gpu"] == [] and dla["subgraphs"] == 1
    assert dla["layers_on_dla"] == dla["layers"] > 0
    assert all(entry["dla"] for entry in dla["per_layer"])
    # one static profile, batch 1 (the bundle's batch is dynamic)
    assert record.profiles == [{"input": {"min": [1, 3, 32, 32], "opt": [1, 3, 32, 32],
                                          "max": [1, 3, 32, 32]}}]  # fmt: skip
    header = plan_header(precision_bundle / record.path)
    assert header["dla_core"] == 0
    assert [layer["LayerType"] for layer in header["layers"]] == ["DLA"]
    assert record.precision_check["passed"] and record.precision_check["dla_subgraphs"] == 1
    # recorded in the manifest as an extra field of the engine record
    saved = json.loads((precision_bundle / "manifest.json").read_text())
    assert saved["artifacts"][f"engine.{precision}"]["dla"]["core"] == 0
    text = render_build(record, precision_bundle)
    assert "DLA core 0:" in text and "in 1 subgraph;" in text and "GPU fallback off" in text


def test_batch_option_gives_one_static_profile(trt, orin, precision_bundle) -> None:
    record = build(precision_bundle, precision="fp16", dla_core=1, profiles=[ProfileSpec((4,) * 3)])
    assert record.profiles[0]["input"]["max"] == [4, 3, 32, 32]
    assert record.dla["core"] == 1


def test_gpu_builds_have_no_dla_entry(trt, precision_bundle) -> None:
    record = build(precision_bundle, precision="fp16")
    assert getattr(record, "dla", None) is None


# -- refusals: one line, before the build -------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"precision": "fp32", "dla_core": 0}, "DLA runs fp16 and int8 only, not fp32"),
        ({"precision": "fp16", "dla_core": -1}, "must be a DLA core index"),
        ({"precision": "fp16", "gpu_fallback": True}, "--gpu-fallback only applies to DLA"),
    ],
)
def test_option_refusals(options, message) -> None:
    with pytest.raises(InputError, match=message) as info:
        BuildOptions(**options)
    assert "\n" not in str(info.value)


def test_int8_u8_is_not_an_engine_precision() -> None:
    with pytest.raises(InputError, match="not supported"):
        BuildOptions(precision="int8-u8", dla_core=0)


@pytest.mark.parametrize(
    ("profiles", "message"),
    [
        ([ProfileSpec((1, 8, 32))], r"batch 1:8:32: use --batch N"),
        ([ProfileSpec((1, 1, 1)), ProfileSpec((8, 8, 8))], "2 profiles were given"),
    ],
)
def test_dynamic_profiles_are_refused(
    trt, orin, no_build, precision_bundle, profiles, message
) -> None:
    with pytest.raises(InputError, match=message) as info:
        build(precision_bundle, precision="fp16", dla_core=0, profiles=profiles)
    assert "\n" not in str(info.value) and "DLA needs static shapes" in str(info.value)


def test_core_out_of_range_names_the_count(trt, orin, no_build, precision_bundle) -> None:
    with pytest.raises(InputError, match=r"--dla-core 2 is out of range: this device has 2 DLA "
                       r"cores \(use 0\.\.1\)"):  # fmt: skip
        build(precision_bundle, precision="fp16", dla_core=2)


def test_host_without_dla_is_refused(trt, gpu, no_build, precision_bundle) -> None:
    assert gpu["dla_cores"] == 0  # the default fake GPU (an A100) has no DLA
    with pytest.raises(RuntimeUnavailableError) as info:
        build(precision_bundle, precision="int8", dla_core=0)
    assert NO_DLA in str(info.value) and "\n" not in str(info.value)
    assert "11.4.1+ on JetPack 7.2.2+" in str(info.value)


def test_layer_dla_cannot_run_is_an_error_naming_it(trt, orin, no_build, precision_bundle) -> None:
    orin["dla_refuses"] = ["Gemm"]
    with pytest.raises(InputError) as info:
        build(precision_bundle, precision="fp16", dla_core=0)
    message = str(info.value)
    assert "cannot run on DLA" in message and "(MATRIX_MULTIPLY)" in message
    assert "--gpu-fallback" in message and "\n" not in message
    gemms = [n.name for n in onnx.load(str(precision_bundle / "model.fp16.onnx")).graph.node
             if n.op_type == "Gemm"]  # fmt: skip
    assert gemms and gemms[0] in message


def test_gpu_fallback_lists_the_layers_that_fall_back(trt, orin, precision_bundle) -> None:
    orin["dla_refuses"] = ["Gemm"]
    record = build(precision_bundle, precision="fp16", dla_core=0, gpu_fallback=True)
    dla = record.dla
    gemms = [n.name for n in onnx.load(str(precision_bundle / "model.fp16.onnx")).graph.node
             if n.op_type == "Gemm"]  # fmt: skip
    assert [e["name"] for e in dla["layers_on_gpu"]] == gemms
    assert {e["type"] for e in dla["layers_on_gpu"]} == {"MATRIX_MULTIPLY"}
    # runs of DLA layers between the GPU layers, in network order
    flags = [e["dla"] for e in dla["per_layer"]]
    runs = sum(1 for i, f in enumerate(flags) if f and (i == 0 or not flags[i - 1]))
    assert dla["subgraphs"] == runs >= 2 and dla["gpu_fallback"] is True
    text = render_build(record, precision_bundle)
    assert f"{len(gemms)} layers fall back to the GPU" in text
    assert all(f"GPU  {name} (MATRIX_MULTIPLY)" in text for name in gemms)
    header = plan_header(precision_bundle / record.path)
    assert sum(layer["LayerType"] == "DLA" for layer in header["layers"]) == runs


# -- INT8 pooling scales ---------------------------------------------------------------------------------


def _pool_graph(scale_in: float, scale_out: float) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 4, 8, 8])
    y = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 4, 4, 4])
    inits = [
        numpy_helper.from_array(np.array(scale_in, np.float32), "s_in"),
        numpy_helper.from_array(np.array(scale_out, np.float32), "s_out"),
        numpy_helper.from_array(np.array(0, np.int8), "zp"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s_in", "zp"], ["q0"], name="q0"),
        helper.make_node("DequantizeLinear", ["q0", "s_in", "zp"], ["d0"], name="d0"),
        helper.make_node(
            "MaxPool", ["d0"], ["p"], name="pool_a", kernel_shape=[2, 2], strides=[2, 2]
        ),  # fmt: skip
        helper.make_node("QuantizeLinear", ["p", "s_out", "zp"], ["q1"], name="q1"),
        helper.make_node("DequantizeLinear", ["q1", "s_out", "zp"], ["y"], name="d1"),
    ]
    graph = helper.make_graph(nodes, "g", [x], [y], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def test_pool_scale_check(tmp_path) -> None:
    same, other = tmp_path / "same.onnx", tmp_path / "other.onnx"
    onnx.save(_pool_graph(0.05, 0.05), same)
    onnx.save(_pool_graph(0.05, 0.1), other)
    assert check_pool_scales(same) == 1
    with pytest.raises(InputError, match="MaxPool pool_a in other.onnx has input scale 0.05 "
                       "and output scale 0.1") as info:  # fmt: skip
        check_pool_scales(other)
    assert "\n" not in str(info.value)


def _mismatch_first_pool(root: Path) -> str:
    """Put a Q/DQ of another scale before the int8 model's first MaxPool; record the file."""
    path = root / "model.int8.onnx"
    model = onnx.load(str(path))
    graph = model.graph
    pool = next(n for n in graph.node if n.op_type == "MaxPool")
    after = next(
        n for n in graph.node if n.op_type == "QuantizeLinear" and n.input[0] == pool.output[0]
    )
    scale = next(i for i in graph.initializer if i.name == after.input[1])
    other = numpy_helper.to_array(scale) * 3
    graph.initializer.append(numpy_helper.from_array(other.astype(np.float32), "dla_test_scale"))
    zero = after.input[2] if len(after.input) > 2 else ""
    q = helper.make_node("QuantizeLinear", [pool.input[0], "dla_test_scale", zero], ["dla_q"])
    dq = helper.make_node("DequantizeLinear", ["dla_q", "dla_test_scale", zero], ["dla_dq"])
    index = list(graph.node).index(pool)
    graph.node.insert(index, dq)
    graph.node.insert(index, q)
    pool.input[0] = "dla_dq"
    onnx.save(model, str(path))
    Bundle.load(root).add_artifact("onnx.int8", path.name, kind="onnx", precision="int8")
    return pool.name


def test_int8_pools_with_two_scales_are_refused(trt, orin, no_build, precision_bundle) -> None:
    name = _mismatch_first_pool(precision_bundle)
    with pytest.raises(InputError, match=f"MaxPool {name} in model.int8.onnx") as info:
        build(precision_bundle, precision="int8", dla_core=0, gpu_fallback=True)
    assert "one scale on both sides" in str(info.value)


def test_the_double_refuses_such_a_pool_on_dla(trt, orin, precision_bundle) -> None:
    name = _mismatch_first_pool(precision_bundle)
    logger = trt.Logger()
    network = trt.Builder(logger).create_network(0)
    assert trt.OnnxParser(network, logger).parse_from_file(
        str(precision_bundle / "model.int8.onnx")
    )
    config = trt.Builder(logger).create_builder_config()
    refused = [network.get_layer(i).name for i in range(network.num_layers)
               if not config.can_run_on_DLA(network.get_layer(i))]  # fmt: skip
    assert refused == [name]


# -- command line, inspect, runtime -----------------------------------------------------------------


def test_cli_build_and_inspect_show_dla(trt, orin, precision_bundle, capsys) -> None:
    from exporter.test_build import run_cli

    code, out, err = run_cli(
        ["build", str(precision_bundle), "--precision", "fp16", "--dla-core", "1", "--batch", "2"],
        capsys,
    )
    assert code == 0, err
    assert "DLA core 1:" in out and "batch" not in err
    record = Bundle.load(precision_bundle).artifacts["engine.fp16"]
    assert record.profiles[0]["input"]["min"][0] == record.profiles[0]["input"]["max"][0] == 2
    code, out, err = run_cli(["inspect", str(precision_bundle)], capsys)
    assert "engine.fp16: DLA core 1:" in out and "GPU fallback no" in out
    code, out, err = run_cli(["inspect", str(precision_bundle / record.path)], capsys)
    assert "DLA core 1:" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--precision", "fp32", "--dla-core", "0"], "DLA runs fp16 and int8 only"),
        (["--precision", "fp16", "--dla-core", "0", "--max-batch", "8"], "DLA needs static"),
        (["--precision", "fp16", "--batch", "2", "--max-batch", "8"], "either --batch N"),
        (["--precision", "fp16", "--dla-core", "5"], "out of range"),
    ],
)
def test_cli_refusals_are_one_line(trt, orin, no_build, precision_bundle, capsys, args, message):
    from exporter.test_build import run_cli

    code, out, err = run_cli(["build", str(precision_bundle), *args], capsys)
    assert code == 1 and message in err
    assert len([line for line in err.splitlines() if line.strip()]) == 1


def test_runtime_refuses_a_dla_engine_without_that_core(trt, orin, precision_bundle) -> None:
    build(precision_bundle, precision="fp16", dla_core=1)
    spec = parse_spec("tensorrt@fp16")
    bundle = Bundle.load(precision_bundle)
    assert TrtRuntime.artifact_unavailable(bundle, spec) is None
    x = np.zeros((1, 3, 32, 32), np.float32)
    with TrtRuntime(precision_bundle, precision="fp16") as runtime:
        assert runtime._runtime.DLA_core == 1
        assert runtime.infer({"input": x})["logits"].shape[0] == 1
    orin["dla_cores"] = 1  # a host with one core only (core 1 is missing)
    why = TrtRuntime.artifact_unavailable(bundle, spec)
    assert why and "built for DLA core 1" in why and "only 1 DLA core" in why
    orin["dla_cores"] = 0
    with pytest.raises(RuntimeUnavailableError, match="this device has no DLA") as info:
        TrtRuntime(precision_bundle, precision="fp16").load()
    assert "Thor has none" in str(info.value) and "\n" not in str(info.value)


def test_the_double_refuses_a_dla_plan_on_a_host_without_dla(trt, orin, precision_bundle) -> None:
    record = build(precision_bundle, precision="int8", dla_core=0)
    plan = (precision_bundle / record.path).read_bytes()
    logger = trt.Logger(trt.ILogger.Severity.INTERNAL_ERROR)
    runtime = trt.Runtime(logger)
    assert runtime.deserialize_cuda_engine(plan) is None  # DLA_core not set
    runtime.DLA_core = 0
    assert runtime.deserialize_cuda_engine(plan) is not None
    orin["dla_cores"] = 0
    assert runtime.num_DLA_cores == 0 and runtime.deserialize_cuda_engine(plan) is None


def test_copy_of_bundle_keeps_the_dla_record(trt, orin, precision_bundle, tmp_path) -> None:
    build(precision_bundle, precision="fp16", dla_core=0)
    copy = tmp_path / "copy"
    shutil.copytree(precision_bundle, copy)
    assert Bundle.load(copy).artifacts["engine.fp16"].dla["core"] == 0
