"""The OpenVINO runtime, run for real on the CPU (no mock): precision forced and read back,
performance hints and streams, the bundle's compiled-model cache, int8 kernels, host probes and
untrusted files."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vggdeploy import host
from vggdeploy.bundle import Bundle
from vggdeploy.errors import BundleError, InputError
from vggdeploy.metrics import TOLERANCES, compare_outputs
from vggdeploy.runtimes.base import infer_array
from vggdeploy.runtimes.onnxrt import OrtRuntime
from vggdeploy.runtimes.registry import parse_spec, unavailable

ov = pytest.importorskip("openvino", reason="OpenVINO is not installed (pip install openvino)")

from vggdeploy.runtimes.openvino_rt import OpenVinoRuntime  # noqa: E402

pytest_plugins = ("trt_double.fixtures",)  # precision_bundle(_ro): fp32, fp16 and int8 ONNX


def _x(batch: int = 4, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((batch, 3, 32, 32), dtype=np.float32)


def _ort(bundle: Path, x: np.ndarray, precision: str = "fp32") -> np.ndarray:
    with OrtRuntime(bundle, precision=precision) as rt:
        return infer_array(rt, x)


def _cpu_default_precision() -> str:
    return str(ov.Core().get_property("CPU", "INFERENCE_PRECISION_HINT"))


# -- precision --------------------------------------------------------------------------------


def test_fp32_is_forced_to_f32_and_passes_the_fp32_tolerance_bf16_would_not(precision_bundle_ro):
    """On a CPU whose OpenVINO default is bf16 (AVX-512 BF16 / AMX), the un-forced compile fails
    validate's fp32 tolerance and the runtime passes it; elsewhere only the second half runs."""
    x = _x(8)
    ref = _ort(precision_bundle_ro, x)
    limit = TOLERANCES["fp32"]["max_rel"]
    with OpenVinoRuntime(precision_bundle_ro, precision="fp32", cache=False) as rt:
        got = infer_array(rt, x)
        assert rt.describe().details["inference_precision"] == "f32"
    assert compare_outputs(ref, got)["max_rel"] <= limit
    if "bf16" not in _cpu_default_precision() and "bfloat16" not in _cpu_default_precision():
        pytest.skip("this CPU's OpenVINO default is not bf16: nothing to show un-forced")
    compiled = ov.Core().compile_model(str(Bundle.load(precision_bundle_ro).root / "model.onnx"))
    unforced = compiled.create_infer_request().infer({"input": x})[compiled.outputs[0]]
    assert compare_outputs(ref, np.asarray(unforced))["max_rel"] > limit


def test_fp16_never_runs_in_bf16(precision_bundle_ro):
    """fp16 asks for f16; a device that offers bf16 instead runs f32 and says so."""
    with OpenVinoRuntime(precision_bundle_ro, precision="fp16", cache=False) as rt:
        details = rt.describe().details
        got = infer_array(rt, _x())
    assert details["requested_inference_precision"] == "f16"
    assert details["inference_precision"] in ("f16", "f32")
    assert (details["inference_precision"] == "f32") == bool(details["inference_precision_note"])
    ref = _ort(precision_bundle_ro, _x())
    assert compare_outputs(ref, got)["max_rel"] <= TOLERANCES["fp16"]["max_rel"]


@settings(
    max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(batch=st.integers(1, 5), seed=st.integers(0, 2**32 - 1), scale=st.floats(1e-3, 1e3))
def test_fp32_agrees_with_onnxruntime_on_generated_batches(precision_bundle_ro, batch, seed, scale):
    x = (_x(batch, seed) * np.float32(scale)).astype(np.float32)
    with OpenVinoRuntime(precision_bundle_ro, cache=False) as rt:
        got = infer_array(rt, x)
    figures = compare_outputs(_ort(precision_bundle_ro, x), got)
    assert figures["max_rel"] <= TOLERANCES["fp32"]["max_rel"], figures


# -- int8 ---------------------------------------------------------------------------------------


def test_int8_file_runs_int8_convolutions_and_fully_connected_layers(precision_bundle_ro):
    with OpenVinoRuntime(precision_bundle_ro, precision="int8", cache=False) as rt:
        layers = rt.describe().details["layers"]
        got = infer_array(rt, _x(8))
    assert layers["convolutions"] == 8 and layers["int8_convolutions"] == 8  # vgg11: 8 convs
    assert layers["fully_connected"] == 3 and layers["int8_fully_connected"] == 3
    # the same Q/DQ file on ONNX Runtime: both compute the quantized model
    figures = compare_outputs(_ort(precision_bundle_ro, _x(8), "int8"), got)
    assert figures["cosine"] >= 0.99, figures
    with OpenVinoRuntime(precision_bundle_ro, precision="fp32", cache=False) as rt:
        assert rt.describe().details["layers"]["int8_convolutions"] == 0


# -- performance hint, streams, concurrent calls ------------------------------------------------


def test_latency_hint_by_default_and_own_streams_under_streams(precision_bundle_ro):
    with OpenVinoRuntime(precision_bundle_ro, cache=False, threads=1) as rt:
        d = rt.describe().details
    assert d["performance_hint"] == "LATENCY" and d["inference_num_threads"] == 1
    with OpenVinoRuntime(precision_bundle_ro, cache=False, streams=2) as rt:
        d = rt.describe().details
    assert d["performance_hint"] == "THROUGHPUT" and d["num_streams"] == 2


def test_concurrent_callers_each_get_their_own_request(precision_bundle_ro):
    feeds = [_x(2, seed) for seed in range(4)]
    with OpenVinoRuntime(precision_bundle_ro, cache=False, streams=2) as rt:
        serial = [rt.infer({"input": f})["logits"] for f in feeds]
        results: list[np.ndarray | None] = [None] * len(feeds)

        def call(k: int) -> None:
            for _ in range(5):
                results[k] = rt.infer_unchecked({"input": feeds[k]})["logits"]

        threads = [threading.Thread(target=call, args=(k,)) for k in range(len(feeds))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    for want, got in zip(serial, results):
        np.testing.assert_array_equal(want, got)


# -- the bundle's cache -------------------------------------------------------------------------


def test_second_load_imports_the_compiled_model_from_the_bundle_cache(precision_bundle):
    with OpenVinoRuntime(precision_bundle, precision="int8") as rt:
        first = rt.describe().details
        out1 = infer_array(rt, _x())
    with OpenVinoRuntime(precision_bundle, precision="int8") as rt:
        second = rt.describe().details
        out2 = infer_array(rt, _x())
    assert first["loaded_from_cache"] is False and second["loaded_from_cache"] is True
    cache = Path(second["cache_dir"])
    # keyed by OpenVINO build and device, inside the bundle's cache folder
    assert cache.parent.parent == precision_bundle / "cache" / "openvino"
    assert cache.name == "CPU" and ov.get_version().split("-")[0] in cache.parent.name
    assert list(cache.glob("*.blob"))
    np.testing.assert_array_equal(out1, out2)
    from vggdeploy.inspection import inspect_path

    untracked = inspect_path(precision_bundle)["untracked_files"]
    assert not [f for f in untracked if f.startswith("cache/")], untracked


def test_a_damaged_cache_costs_a_compile_not_a_failure(precision_bundle):
    with OpenVinoRuntime(precision_bundle) as rt:
        cache = Path(rt.describe().details["cache_dir"])
    for blob in cache.glob("*.blob"):
        blob.chmod(0o600)
        blob.write_bytes(b"not a compiled model" * 10)
    with OpenVinoRuntime(precision_bundle) as rt:
        assert rt.describe().details["loaded_from_cache"] is False
        infer_array(rt, _x())


def test_a_cache_link_leading_outside_the_bundle_is_refused(precision_bundle, tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (precision_bundle / "cache").symlink_to(outside)
    with pytest.raises(BundleError, match="leads outside the bundle.*remove the link"):
        OpenVinoRuntime(precision_bundle).load()


def test_a_cache_folder_that_cannot_be_made_turns_caching_off(precision_bundle):
    (precision_bundle / "cache").write_text("a file where the folder goes")
    with OpenVinoRuntime(precision_bundle) as rt:
        d = rt.describe().details
        infer_array(rt, _x())
    assert d["cache_dir"] is None and d["cache_note"].startswith("off: cannot create")


# -- specs, host, laziness ----------------------------------------------------------------------


def test_specs_and_precisions(precision_bundle_ro):
    spec = parse_spec("openvino:cpu@int8")
    assert (spec.runtime, spec.kwargs()) == ("openvino", {"device": "cpu", "precision": "int8"})
    assert parse_spec("ov:gpu@fp16").kwargs() == {"device": "gpu", "precision": "fp16"}
    with pytest.raises(InputError, match="unknown precision 'int8-u8'"):
        parse_spec("openvino@int8-u8")
    with pytest.raises(InputError, match="no variant 'cuda'"):
        parse_spec("openvino:cuda")
    assert unavailable(parse_spec("openvino@int8"), Bundle.load(precision_bundle_ro)) is None


def test_a_missing_device_or_package_is_one_line(monkeypatch):
    devices, error = host.openvino_devices()
    assert error is None and "CPU" in devices
    if not any(d.startswith("NPU") for d in devices):
        reason = unavailable(parse_spec("openvino:npu"))
        assert reason is not None and "\n" not in reason
        assert reason.startswith("OpenVINO finds no NPU device") and "NPU driver" in reason
    host.openvino_devices.cache_clear()
    real = host.importlib.util.find_spec
    monkeypatch.setattr(
        host.importlib.util, "find_spec", lambda n, *a: None if n == "openvino" else real(n, *a)
    )
    try:
        reason = unavailable(parse_spec("openvino"))
        assert reason == "the openvino package is not installed (pip install 'vggdeploy[openvino]')"
    finally:
        host.openvino_devices.cache_clear()


def test_constructing_the_runtime_imports_no_openvino(precision_bundle_ro):
    code = f"""
import sys
from vggdeploy.runtimes import runtime_class
runtime_class("openvino")({str(precision_bundle_ro)!r}, precision="int8")
print("openvino" in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# -- untrusted files ----------------------------------------------------------------------------


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.binary(min_size=0, max_size=512))
def test_a_damaged_onnx_file_is_one_line(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("bad") / "model.onnx"
    path.write_bytes(data)
    with pytest.raises(BundleError) as exc:
        OpenVinoRuntime(path).load()
    message = str(exc.value)
    assert "\n" not in message and message.startswith(f"OpenVINO cannot load {path}")
    assert "Exception from" not in message  # OpenVINO's own words, not its source locations


def test_a_missing_precision_names_the_command(tiny_bundle_ro):
    with pytest.raises(BundleError, match="no int8 ONNX.*vggdeploy calibrate"):
        OpenVinoRuntime(tiny_bundle_ro, precision="int8")


# -- int8: OpenVINO's view of the Q/DQ file ------------------------------------------------------


def _qdq_pool_model(path: Path, s1: float, s2: float, kernel: int = 2) -> Path:
    """x -> Relu -> Q/DQ(s1) -> MaxPool(kernel) -> Q/DQ(s2) -> y: int8, zero point 0, the
    ModelOpt placement around a pool."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    def qdq(name: str, tensor: str, scale: float) -> list:
        return [
            helper.make_node("QuantizeLinear", [tensor, f"{name}_s", f"{name}_z"], [f"{name}_q"]),
            helper.make_node(
                "DequantizeLinear", [f"{name}_q", f"{name}_s", f"{name}_z"], [f"{name}_dq"]
            ),
        ]

    nodes = [helper.make_node("Relu", ["x"], ["r"])]
    nodes += qdq("a", "r", s1)
    nodes.append(
        helper.make_node(
            "MaxPool", ["a_dq"], ["p"], kernel_shape=[kernel] * 2, strides=[kernel] * 2
        )
    )
    nodes += qdq("b", "p", s2)
    nodes.append(helper.make_node("Identity", ["b_dq"], ["y"]))
    inits = []
    for name, scale in (("a", s1), ("b", s2)):
        inits.append(numpy_helper.from_array(np.array(scale, np.float32), f"{name}_s"))
        inits.append(numpy_helper.from_array(np.array(0, np.int8), f"{name}_z"))
    graph = helper.make_graph(
        nodes,
        "qdq_pool",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        inits,
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return path


def _run_ov(model, x: np.ndarray) -> np.ndarray:
    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    return np.asarray(compiled.create_infer_request().infer({0: x})[compiled.outputs[0]])


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    scale=st.floats(1 / 1024, 8.0, width=32),
    other=st.sampled_from([None, 0.5, 2.0]),
    seed=st.integers(0, 2**32 - 1),
    spread=st.floats(0.1, 400.0),
)
def test_int8_rewrites_are_exact(tmp_path_factory, scale, other, seed, spread):
    """Relu -> Q/DQ -> MaxPool -> Q/DQ: with one scale the second pair goes and the first becomes
    u8, and OpenVINO's outputs stay bit for bit those of the file as it is, values past the clip
    and negative ones included; with another scale after the pool nothing is dropped."""
    from vggdeploy.runtimes.openvino_qdq import rewrite_int8

    s2 = scale if other is None else scale * other
    path = _qdq_pool_model(tmp_path_factory.mktemp("qdq") / "m.onnx", scale, s2)
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((1, 2, 4, 4)) * scale * spread).astype(np.float32)
    x.ravel()[:3] = np.float32([0.0, 127 * scale, 128 * scale])  # zero, the clip, past it
    core = ov.Core()
    model = core.read_model(str(path))
    counts = rewrite_int8(model, "file")
    assert counts["requantize"] == (1 if other is None else 0)
    assert counts["unsigned"] == 1
    np.testing.assert_array_equal(_run_ov(model, x), _run_ov(core.read_model(str(path)), x))


def test_int8_file_runs_in_u8_with_no_stand_alone_requantization(precision_bundle_ro):
    """The tiny VGG's int8 file as OpenVINO runs it. Rewritten: every convolution and every pool
    that feeds one reads u8, so do the fully connected layers after a ReLU, and no FakeQuantize
    is left after a pool; as it is, a FakeQuantize follows each such pool and those layers read
    i8. (At 32 px the adaptive pool averages, so the first classifier layer keeps its own
    Q/DQ.) Both agree with ONNX Runtime on the file."""

    def runtime_ops(rt):
        ops = rt._compiled.get_runtime_model().get_ordered_ops()
        out = []
        for op in ops:
            info = op.get_rt_info()
            out.append((info["layerType"].astype(str), info["runtimePrecision"].astype(str)))
        return out

    x = _x(4)
    ref = _ort(precision_bundle_ro, x, "int8")
    with OpenVinoRuntime(precision_bundle_ro, precision="int8", cache=False) as rt:
        rewrites = rt.describe().details["int8_rewrites"]
        ops = runtime_ops(rt)
        got = infer_array(rt, x)
    with OpenVinoRuntime(precision_bundle_ro, precision="int8", cache=False, rewrite=False) as rt:
        assert rt.describe().details["int8_rewrites"] is None
        raw_ops = runtime_ops(rt)
        raw = infer_array(rt, x)
    assert rewrites == {"requantize": 4, "identity_pools": 0, "unsigned": 9}  # vgg11: 4 pools
    conv = [p for t, p in ops if t == "Convolution"]
    pools = [p for t, p in ops if t == "Pooling"]
    fc = [p for t, p in ops if t == "FullyConnected"]
    assert conv == ["u8"] * 8 and pools[:4] == ["u8"] * 4 and fc[1:] == ["u8", "u8"], ops
    fq = [t for t, _ in ops].count("FakeQuantize")
    assert fq == [t for t, _ in raw_ops].count("FakeQuantize") - 4
    assert [p for t, p in raw_ops if t == "FullyConnected"][1:] == ["i8", "i8"], raw_ops
    for out in (got, raw):
        assert compare_outputs(ref, out)["cosine"] >= 0.999


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    scale=st.floats(1 / 1024, 8.0, width=32),
    seed=st.integers(0, 2**32 - 1),
    spread=st.floats(0.1, 400.0),
)
def test_the_fine_grid_halves_the_step_on_the_files_thresholds(
    tmp_path_factory, scale, seed, spread
):
    """grid="fine": a ReLU output lands within T / 510 of min(relu(x), T) (256 levels on
    [0, T]), where the file's own grid allows s / 2 = T / 254; the clip T is the file's."""
    from vggdeploy.runtimes.openvino_qdq import rewrite_int8

    path = _qdq_pool_model(tmp_path_factory.mktemp("qdq") / "m.onnx", scale, scale, kernel=1)
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((1, 2, 4, 4)) * scale * spread).astype(np.float32)
    x.ravel()[:3] = np.float32([0.0, 127 * scale, 128 * scale])
    core = ov.Core()
    fine, file = core.read_model(str(path)), core.read_model(str(path))
    assert rewrite_int8(fine, "fine")["unsigned"] == 1
    rewrite_int8(file, "file")
    t = np.float32(127 * scale)
    want = np.minimum(np.maximum(x, 0), t).astype(np.float64)
    err_fine = np.abs(_run_ov(fine, x) - want).max()
    err_file = np.abs(_run_ov(file, x) - want).max()
    assert err_fine <= t / 510 * (1 + 1e-4) + 1e-7, (err_fine, t / 510)
    assert err_file <= t / 254 * (1 + 1e-4) + 1e-7
    assert _run_ov(fine, x).max() <= t * (1 + 1e-6)  # the file's clip


def test_a_graph_the_rewrites_do_not_expect_is_compiled_as_written(
    precision_bundle_ro, monkeypatch
):
    from vggdeploy.runtimes import openvino_qdq

    def refuse(model, grid):
        raise ValueError("an unexpected graph\nwith a second line")

    monkeypatch.setattr(openvino_qdq, "rewrite_int8", refuse)
    with OpenVinoRuntime(precision_bundle_ro, precision="int8", cache=False) as rt:
        d = rt.describe().details
        got = infer_array(rt, _x())
    assert d["int8_rewrites"] is None
    assert d["int8_grid"] == "not rewritten (an unexpected graph): compiled as written"
    assert compare_outputs(_ort(precision_bundle_ro, _x(), "int8"), got)["cosine"] >= 0.999
