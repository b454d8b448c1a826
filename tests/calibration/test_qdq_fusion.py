"""One INT8 file: the TensorRT-form Q/DQ model is also fused into integer kernels by ONNX
Runtime, unfused outputs are bit-identical to the inputs-only placement, and layers can be
kept float by name."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

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


def test_every_conv_and_fc_is_fused_by_onnxruntime(fp32, ranges, tmp_path: Path) -> None:
    model, summary = quantize_model(fp32, ranges, "tensorrt")
    assert verify_qdq(model, "tensorrt") == []
    convs = sum(n.op_type == "Conv" for n in fp32.graph.node)
    gemms = sum(n.op_type == "Gemm" for n in fp32.graph.node)
    # Each weighted op's output gets a pair, except the last Gemm (the logits stay float).
    assert len(summary["outputs"]) == convs + gemms - 1
    ops = _ops(_save(model, tmp_path / "new.onnx"), tmp_path)
    assert ops["QLinearConv"] == convs
    assert ops["QGemm"] == gemms - 1  # the logits Gemm has no output Q: ORT keeps it float
    assert ops["Conv"] == 0 and ops["FusedConv"] == 0

    # The inputs-only placement (before issue 12): ORT fuses no convolution at int8 zero point 0.
    old, _ = quantize_model(fp32, ranges, "tensorrt", output_qdq=False)
    assert _ops(_save(old, tmp_path / "old.onnx"), tmp_path)["QLinearConv"] == 0


def test_output_pairs_leave_unfused_outputs_bit_identical(fp32, ranges, tmp_path: Path) -> None:
    new, _ = quantize_model(fp32, ranges, "tensorrt")
    old, _ = quantize_model(fp32, ranges, "tensorrt", output_qdq=False)
    x = np.random.default_rng(0).standard_normal((3, 3, 224, 224), dtype=np.float32) * 3
    a = _run(_save(old, tmp_path / "old.onnx"), x, optimize=False)
    b = _run(_save(new, tmp_path / "new.onnx"), x, optimize=False)
    assert np.array_equal(a, b)
    # Fused integer kernels agree with the simulated (unfused) model to int8 rounding.
    fused = _run(tmp_path / "new.onnx", x, optimize=True)
    cos = (fused * b).sum() / (np.linalg.norm(fused) * np.linalg.norm(b))
    assert cos > 0.99


def test_onnxruntime_target_gets_the_same_placement(fp32, tmp_path: Path) -> None:
    ranges = {
        name: TensorRange(0.0 if i else -3.0, 5.0, 5.0, not i)
        for i, name in enumerate(select_calibration_tensors(fp32))
    }
    model, _ = quantize_model(fp32, ranges, "onnxruntime")
    assert verify_qdq(model, "onnxruntime") == []
    ops = _ops(_save(model, tmp_path / "u8.onnx"), tmp_path)
    assert ops["QLinearConv"] == sum(n.op_type == "Conv" for n in fp32.graph.node)


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
    ops = _ops(_save(model, tmp_path / "kf.onnx"), tmp_path)
    # Float: the kept conv, and the convs before it and before the kept FC (their outputs lead
    # to a float op, so they get no output pair: int8 inputs, float outputs).
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


def _cpu_form(model):
    import onnx

    from vggdeploy.onnxutil import cpu_int8_form

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    return copy, cpu_int8_form(copy)


def test_the_cpu_form_runs_relus_as_integer_max_bit_for_bit(fp32, ranges, tmp_path: Path) -> None:
    """ONNX Runtime keeps a float ReLU (DQ -> Relu -> Q) at int8 zero point 0; the CPU form
    runs it as Max on uint8 activations, with the very same outputs, fused or not."""
    model, _ = quantize_model(fp32, ranges, "tensorrt")
    rewritten, changed = _cpu_form(model)
    relus = sum(n.op_type == "Relu" for n in model.graph.node)
    # All but the last conv's ReLU, which reaches the logits' Q through the adaptive pool.
    assert changed["relu_as_max"] == relus - 1
    assert changed["uint8_activations"] > 0
    assert verify_qdq(model, "tensorrt") == []  # the caller's copy: still TensorRT's form
    before = _ops(_save(model, tmp_path / "relu.onnx"), tmp_path)
    after = _ops(_save(rewritten, tmp_path / "cpu.onnx"), tmp_path)
    assert before["Relu"] == relus and before["Max"] == 0
    assert after["Max"] == relus - 1 and after["Relu"] == 1
    assert after["QLinearConv"] == before["QLinearConv"] > 0
    assert after["QGemm"] == before["QGemm"]
    x = np.random.default_rng(3).standard_normal((2, 3, 224, 224)).astype(np.float32)
    for optimize in (True, False):
        expected = _run(tmp_path / "relu.onnx", x, optimize)
        assert np.array_equal(_run(tmp_path / "cpu.onnx", x, optimize), expected)


def test_the_cpu_form_leaves_other_models_alone(fp32, ranges) -> None:
    """uint8 activations (the ONNX Runtime target), a float model, and a model where a
    quantized tensor feeds something else than a DequantizeLinear are left unchanged."""
    u8, _ = quantize_model(fp32, ranges, "onnxruntime")
    int8, _ = quantize_model(fp32, ranges, "tensorrt")
    odd, _ = quantize_model(fp32, ranges, "tensorrt")
    q = next(n for n in odd.graph.node if n.op_type == "QuantizeLinear")
    odd.graph.output.add().name = q.output[0]  # a quantized tensor is also a graph output
    nothing = {"relu_as_max": 0, "uint8_activations": 0}
    for model in (u8, fp32, odd):
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
    relus = sum(n.op_type == "Relu" for n in model.graph.node)
    assert details["cpu_int8_form"]["relu_as_max"] == relus - 1
    assert np.array_equal(got, _run(path, x, optimize=True))
    assert path.read_bytes() == on_disk  # the file stays as it was
