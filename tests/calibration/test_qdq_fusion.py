"""One INT8 file in NVIDIA's Q/DQ placement: ONNX Runtime's CPU runtime rewrites it on load
into integer kernels with the file's outputs bit for bit, and layers can be kept float by name."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vggdeploy.calibration.calibrators import TensorRange, select_calibration_tensors
from vggdeploy.calibration.qdq import quantizable_nodes, quantize_model, verify_qdq
from vggdeploy.errors import InputError
from vggdeploy.ortsession import cpu_session


@pytest.fixture(scope="module")
def fp32(tmp_path_factory: pytest.TempPathFactory):
    """The tiny VGG at 224 px: its adaptive pool is then the identity, as in the real models
    (at 32 px it is a true average, which no output Q/DQ pair can pass bit-identically)."""
    import onnx

    from vggdeploy.exporter.onnx_export import ExportOptions, export_bundle
    from vggdeploy.models import resolve_spec
    from vggdeploy.weights import WeightsSource

    root = tmp_path_factory.mktemp("tiny224") / "bundle"
    spec = resolve_spec("vgg11_bn", width_divisor=16, hidden=64, num_classes=10)
    export_bundle(spec, WeightsSource("random", seed=0), root, ExportOptions(image_size=224))
    return onnx.load(str(root / "model.onnx"))


@pytest.fixture(scope="module")
def ranges(fp32) -> dict[str, TensorRange]:
    # Fixed, plausible ranges: the placement is what is under test, not the calibration.
    return {
        name: TensorRange(-4.0 - i, 4.0 + i, 4.0 + i, True)
        for i, name in enumerate(select_calibration_tensors(fp32))
    }


def _ops(path: Path, tmp_path: Path) -> Counter:
    import onnx

    optimized = tmp_path / (path.stem + ".optimized.onnx")
    cpu_session(path, optimized_model_path=optimized)
    return Counter(n.op_type for n in onnx.load(str(optimized)).graph.node)


def _save(model, path: Path) -> Path:
    import onnx

    onnx.save(model, str(path))
    return path


def _run(path: Path, x: np.ndarray, optimize: bool) -> np.ndarray:
    session = cpu_session(path, optimize=optimize)
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def _relus(model) -> int:
    return sum(n.op_type == "Relu" for n in model.graph.node)


def test_the_file_has_nvidias_placement(fp32, ranges) -> None:
    """Q/DQ on Conv/Gemm inputs and on MaxPool inputs (the scale of the pool's output), none
    on a Conv/Gemm output (ModelOpt's placement; node by node in test_modelopt_placement.py)."""
    from onnx import numpy_helper

    model, summary = quantize_model(fp32, ranges, "tensorrt")
    assert verify_qdq(model, "tensorrt") == []
    producers = {o: n for n in model.graph.node for o in n.output}
    inits = {i.name: i for i in model.graph.initializer}
    qs = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    assert all(
        producers[q.input[0]].op_type not in ("Conv", "Gemm") for q in qs if q.input[0] in producers
    )
    pools = [n for n in model.graph.node if n.op_type == "MaxPool"]
    assert len(summary["pool_inputs"]) == len(pools) == 5
    scale = {q.input[0]: float(numpy_helper.to_array(inits[q.input[1]])) for q in qs}
    for pool_input, shared in summary["pool_inputs"].items():
        assert producers[pool_input].op_type == "Relu"
        assert scale[pool_input] == scale[shared]
    weighted = sum(n.op_type in ("Conv", "Gemm") for n in fp32.graph.node)
    assert len(qs) == weighted + len(pools)


def test_onnxruntime_fuses_no_convolution_in_the_file_as_written(fp32, ranges, tmp_path) -> None:
    """Why the runtime rewrites the file: no Q follows a Conv, so ORT finds no DQ -> Conv -> Q
    to turn into QLinearConv and runs every convolution in float."""
    model, _ = quantize_model(fp32, ranges, "tensorrt")
    ops = _ops(_save(model, tmp_path / "as_written.onnx"), tmp_path)
    assert ops["QLinearConv"] == 0 and ops["Conv"] + ops["FusedConv"] > 0


def _cpu_form(model):
    import onnx

    from vggdeploy.onnxutil import cpu_int8_form

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    return copy, cpu_int8_form(copy)


def test_the_cpu_form_runs_every_conv_and_fc_on_integers(fp32, ranges, tmp_path) -> None:
    model, _ = quantize_model(fp32, ranges, "tensorrt")
    rewritten, changed = _cpu_form(model)
    convs = sum(n.op_type == "Conv" for n in fp32.graph.node)
    gemms = sum(n.op_type == "Gemm" for n in fp32.graph.node)
    relus = _relus(model)
    # A pair on every Conv and on every Gemm but the logits; every ReLU an integer Max.
    assert changed["output_pairs"] == convs + gemms - 1
    assert changed["relu_as_max"] == relus
    assert verify_qdq(model, "tensorrt") == []  # the caller's copy: still NVIDIA's form
    import onnx

    onnx.checker.check_model(rewritten)
    ops = _ops(_save(rewritten, tmp_path / "cpu.onnx"), tmp_path)
    assert ops["QLinearConv"] == convs
    assert ops["QGemm"] == gemms - 1  # the logits Gemm has no output Q: ORT keeps it float
    assert ops["Conv"] == ops["FusedConv"] == 0
    assert ops["Max"] == relus and ops["Relu"] == 0
    # Float passes left: the input's Q, and the logits Gemm's two DQs (activation, weight).
    assert ops["QuantizeLinear"] + ops["DequantizeLinear"] == 3
    # ORT's fused integer kernels differ from the file evaluated as written (float sums of
    # dequantized products) only by their own requantization rounding.
    x = np.random.default_rng(0).standard_normal((3, 3, 224, 224), dtype=np.float32) * 3
    fused = _run(tmp_path / "cpu.onnx", x, optimize=True).astype(np.float64)
    written = _run(_save(model, tmp_path / "file.onnx"), x, optimize=False).astype(np.float64)
    cos = (fused * written).sum() / (np.linalg.norm(fused) * np.linalg.norm(written))
    assert cos > 0.99


@settings(
    max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    amax=st.lists(st.floats(1e-3, 1e3), min_size=32, max_size=32),
    seed=st.integers(0, 2**16),
    gain=st.sampled_from([0.01, 1.0, 3.0, 100.0]),
)
def test_the_cpu_form_gives_the_files_outputs_bit_for_bit(fp32, amax, seed, gain, tmp_path) -> None:
    """Generated ranges (tiny to huge scales, so that values clip) and inputs: evaluated as
    written (no fusion), the CPU form gives exactly the file's outputs."""
    names = select_calibration_tensors(fp32)
    ranges = {n: TensorRange(-a, a, a, True) for n, a in zip(names, amax, strict=False)}
    model, _ = quantize_model(fp32, ranges, "tensorrt")
    rewritten, changed = _cpu_form(model)
    assert changed["relu_as_max"] == _relus(model)
    x = np.random.default_rng(seed).standard_normal((2, 3, 224, 224), dtype=np.float32) * gain
    file, cpu = _save(model, tmp_path / "file.onnx"), _save(rewritten, tmp_path / "cpu.onnx")
    expected = _run(file, x, optimize=False)
    assert np.array_equal(_run(cpu, x, optimize=False), expected)


def test_quantizable_nodes_name_the_torch_layers(fp32) -> None:
    table = quantizable_nodes(fp32)
    layers = [layer for _, _, layer in table]
    assert layers[0] == "features.0" and layers[-1] == "classifier.6"
    assert all(op in ("Conv", "Gemm") for _, op, _ in table)
    names = {node.name for node in fp32.graph.node}
    assert all(node in names for node, _, _ in table)


def test_keep_float_leaves_named_layers_float(fp32, ranges, tmp_path: Path) -> None:
    from onnx import TensorProto

    table = quantizable_nodes(fp32)
    conv_node, _, conv_layer = table[1]
    fc_node = table[-3][0]
    model, summary = quantize_model(fp32, ranges, "tensorrt", keep_float=[conv_layer, fc_node])
    assert summary["kept_float"] == sorted([conv_node, fc_node])
    assert verify_qdq(model, "tensorrt") == []  # kept-float ops are named in the metadata
    inits = {i.name: i for i in model.graph.initializer}
    producers = {o: n for n in model.graph.node for o in n.output}
    for node in model.graph.node:
        if node.name in (conv_node, fc_node):
            assert inits[node.input[1]].data_type == TensorProto.FLOAT
            assert node.input[0] not in producers or producers[node.input[0]].op_type not in (
                "DequantizeLinear",
            )
    ops = _ops(_save(_cpu_form(model)[0], tmp_path / "kf.onnx"), tmp_path)
    # Float in the CPU form: the kept conv, and the convs before it and before the kept FC
    # (their outputs lead to a float op, so no Q follows them: int8 inputs, float outputs).
    assert ops["QLinearConv"] == sum(n.op_type == "Conv" for n in fp32.graph.node) - 3
    x = np.random.default_rng(1).standard_normal((2, 3, 224, 224), dtype=np.float32)
    assert np.all(np.isfinite(_run(tmp_path / "kf.onnx", x, optimize=True)))
    # Without the metadata the float ops are reported as not quantized.
    del model.metadata_props[:]
    assert any("not quantized" in p for p in verify_qdq(model, "tensorrt"))
    assert verify_qdq(model, "tensorrt", keep_float=[conv_node, fc_node]) == []


def test_keep_float_unknown_name_is_one_input_error(fp32, ranges) -> None:
    with pytest.raises(InputError, match="no Conv/Gemm/MatMul named features.99"):
        quantize_model(fp32, ranges, "tensorrt", keep_float=["features.99"])


def test_seven_bit_weights_stay_in_range(fp32, ranges) -> None:
    from onnx import TensorProto, numpy_helper

    model, summary = quantize_model(fp32, ranges, "tensorrt", weight_bits=7)
    assert summary["weight_bits"] == 7 and verify_qdq(model, "tensorrt") == []
    weights = [
        numpy_helper.to_array(i) for i in model.graph.initializer if i.data_type == TensorProto.INT8
    ]
    weights = [w for w in weights if w.size > 1]
    assert weights and all(w.min() >= -63 and w.max() <= 63 for w in weights)
    assert max(int(np.abs(w).max()) for w in weights) == 63
    with pytest.raises(InputError):
        quantize_model(fp32, ranges, "tensorrt", weight_bits=4)


def test_the_cpu_form_leaves_other_models_alone(fp32, ranges) -> None:
    """A float model, uint8 activations, and a model where a quantized tensor is also a graph
    output (refused after the output pairs were planned) are left byte for byte unchanged."""
    from onnx import TensorProto, numpy_helper

    int8, _ = quantize_model(fp32, ranges, "tensorrt")
    odd, _ = quantize_model(fp32, ranges, "tensorrt")
    q = next(n for n in odd.graph.node if n.op_type == "QuantizeLinear")
    odd.graph.output.add().name = q.output[0]  # a quantized tensor is also a graph output
    u8, _ = quantize_model(fp32, ranges, "tensorrt")
    zp = next(i for i in u8.graph.initializer if i.name == q.input[2])
    zp.CopyFrom(numpy_helper.from_array(np.array(128, np.uint8), zp.name))
    assert zp.data_type == TensorProto.UINT8
    nothing = {"output_pairs": 0, "relu_as_max": 0, "integer_chains": 0, "uint8_activations": 0}
    for model in (fp32, odd, u8):
        copy, changed = _cpu_form(model)
        assert changed == nothing
        assert copy.SerializeToString() == model.SerializeToString()
    assert _cpu_form(int8)[1] != nothing


def test_the_onnxruntime_cpu_runtime_loads_int8_in_cpu_form(fp32, ranges, tmp_path: Path) -> None:
    from vggdeploy.runtimes.onnxrt import OrtRuntime

    model, _ = quantize_model(fp32, ranges, "tensorrt")
    path = _save(model, tmp_path / "model.int8.onnx")
    on_disk = path.read_bytes()
    x = np.random.default_rng(4).standard_normal((2, 3, 224, 224)).astype(np.float32)
    runtime = OrtRuntime(path, precision="int8", provider="cpu")
    with runtime:
        got = next(iter(runtime.infer({"input": x}).values()))
        details = runtime.describe().details
    assert details["cpu_int8_form"]["relu_as_max"] == _relus(model)
    cpu = _save(_cpu_form(model)[0], tmp_path / "cpu.onnx")
    assert np.array_equal(got, _run(cpu, x, optimize=True))
    assert path.read_bytes() == on_disk  # the file stays as it was
