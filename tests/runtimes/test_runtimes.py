"""The runtime contract, the PyTorch and ONNX Runtime backends, and provider fallback detection."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vggdeploy.bundle import Bundle, sha256_file
from vggdeploy.errors import BundleError, InputError, RuntimeUnavailableError, WeightsError
from vggdeploy.metrics import compare_arrays
from vggdeploy.records import WeightsRecord
from vggdeploy.runtimes import RUNTIMES, runtime_class
from vggdeploy.runtimes.onnxrt import OrtRuntime
from vggdeploy.runtimes.pytorch import TorchRuntime


def _x(batch: int = 2, size: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((batch, 3, size, size), dtype=np.float32)


def _ort_has(provider: str) -> bool:
    import onnxruntime as ort

    return provider in ort.get_available_providers()


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


# -- registry and laziness ----------------------------------------------------------------------


def test_registry_names_resolve_to_classes():
    assert runtime_class("torch") is TorchRuntime
    assert runtime_class("onnxruntime") is OrtRuntime
    assert set(RUNTIMES) >= {"torch", "onnxruntime", "tensorrt"}
    with pytest.raises(InputError, match="unknown runtime 'onnx'"):
        runtime_class("onnx")


def test_importing_and_constructing_runtimes_imports_no_heavy_library(tiny_bundle_ro):
    code = f"""
import sys
import vggdeploy.runtimes, vggdeploy.validate, vggdeploy.predict
from vggdeploy.runtimes import runtime_class
runtime_class("torch")({str(tiny_bundle_ro)!r}, channels_last=True)
runtime_class("onnxruntime")({str(tiny_bundle_ro)!r}, precision="fp32")
print(sorted(m for m in ("torch", "onnxruntime", "tensorrt", "onnx") if m in sys.modules))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# -- the contract: inputs are checked before the backend runs ----------------------------------


@pytest.fixture(params=["torch", "onnxruntime"])
def loaded(request, tiny_bundle_ro):
    with runtime_class(request.param)(tiny_bundle_ro) as runtime:
        yield runtime


@pytest.mark.parametrize(
    "feed, message",
    [
        ({"image": _x()}, "missing \\['input'\\], unknown \\['image'\\]"),
        ({"input": _x(size=16)}, "axis 2 must be 32"),
        ({"input": _x()[:, :2]}, "axis 1 must be 3"),
        ({"input": _x()[0]}, "3 dimensions"),
        ({"input": _x().astype(np.float64)}, "dtype float64, expected float32"),
        ({"input": _x().tolist()}, "must be a NumPy array"),
    ],
)
def test_bad_feeds_raise_input_error_before_the_backend(loaded, monkeypatch, feed, message):
    calls = []
    monkeypatch.setattr(loaded, "_infer", lambda f: calls.append(f))
    with pytest.raises(InputError, match=message):
        loaded.infer(feed)
    assert calls == []


def test_specs_come_from_the_bundle(loaded, tiny_bundle_ro):
    io = Bundle.load(tiny_bundle_ro).manifest.io.to_json_dict()
    assert [s.to_dict() for s in loaded.inputs] == io["inputs"]
    assert [s.to_dict() for s in loaded.outputs] == io["outputs"]
    out = loaded.infer({"input": _x(batch=3)})
    assert list(out) == ["logits"]
    assert out["logits"].shape == (3, 10) and out["logits"].dtype == np.float32


def test_infer_before_load_is_a_clear_error(tiny_bundle_ro):
    runtime = OrtRuntime(tiny_bundle_ro)
    with pytest.raises(RuntimeError, match="not loaded"):
        runtime.infer({"input": _x()})


# -- PyTorch ------------------------------------------------------------------------------------


def test_torch_and_onnxruntime_agree_on_the_tiny_bundle(tiny_bundle_ro):
    x = _x(batch=4)
    with TorchRuntime(tiny_bundle_ro) as t, OrtRuntime(tiny_bundle_ro) as o:
        ref, got = t.infer({"input": x})["logits"], o.infer({"input": x})["logits"]
    figures = compare_arrays(ref, got)
    assert figures["max_rel"] < 1e-4 and figures["cosine"] > 0.9999
    assert np.array_equal(ref.argmax(1), got.argmax(1))


def test_channels_last_gives_the_same_result(tiny_bundle_ro):
    x = _x(batch=3, seed=1)
    with TorchRuntime(tiny_bundle_ro) as a, TorchRuntime(tiny_bundle_ro, channels_last=True) as b:
        ref, got = a.infer({"input": x})["logits"], b.infer({"input": x})["logits"]
        assert b.label == "torch[cpu] fp32 channels-last"
        assert b.describe().to_dict()["channels_last"] is True
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5 * float(np.abs(ref).max()))


def test_torch_rebuilds_a_dense_model(tiny_dense_bundle_ro):
    x = _x(batch=1, size=224)
    with TorchRuntime(tiny_dense_bundle_ro) as t, OrtRuntime(tiny_dense_bundle_ro) as o:
        assert t.describe().to_dict()["dense"] is True
        ref, got = t.infer({"input": x})["logits"], o.infer({"input": x})["logits"]
    assert compare_arrays(ref, got)["max_rel"] < 1e-4


def test_torch_fp16_on_cpu_is_refused_not_switched(tiny_bundle_ro):
    with pytest.raises(RuntimeUnavailableError, match="fp16 on CPU is not supported"):
        TorchRuntime(tiny_bundle_ro, precision="fp16").load()


@pytest.mark.skipif("_cuda()", reason="this host has a CUDA GPU")
def test_torch_cuda_without_a_gpu_says_why(tiny_bundle_ro):
    with pytest.raises(RuntimeUnavailableError, match="torch cannot use CUDA here"):
        TorchRuntime(tiny_bundle_ro, device="cuda").load()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"device": "tpu"}, "use cpu or cuda"),
        ({"precision": "int8"}, "INT8 runs in onnxruntime, openvino or tensorrt"),
        ({"threads": 0}, "positive integer"),
    ],
)
def test_torch_rejects_bad_options_at_construction(tiny_bundle_ro, kwargs, message):
    with pytest.raises(InputError, match=message):
        TorchRuntime(tiny_bundle_ro, **kwargs)


def test_torch_weights_file_is_checked_against_the_manifest(tiny_bundle, tmp_path):
    import torch

    from vggdeploy.models import ModelSpec, random_state_dict

    bundle = Bundle.load(tiny_bundle)
    state = random_state_dict(ModelSpec.from_dict(bundle.manifest.model.to_json_dict()), seed=0)
    weights = tiny_bundle / "weights.pth"
    torch.save(state, weights)
    with bundle.update() as manifest:
        manifest.weights = WeightsRecord(
            source="file", path="weights.pth", sha256=sha256_file(weights)
        )
    bundle.add_file("weights.pth")
    x = _x()
    with TorchRuntime(tiny_bundle) as t, OrtRuntime(tiny_bundle) as o:
        assert (
            compare_arrays(t.infer({"input": x})["logits"], o.infer({"input": x})["logits"])[
                "max_rel"
            ]
            < 1e-4
        )
        assert t.describe().to_dict()["weights"]["source"] == "file"

    state["classifier.6.bias"] += 1.0
    torch.save(state, weights)
    with pytest.raises(WeightsError, match="does not match the sha256 and size"):
        TorchRuntime(tiny_bundle).load()
    weights.unlink()
    with pytest.raises(WeightsError, match="listed in the manifest but missing"):
        TorchRuntime(tiny_bundle).load()


# -- ONNX Runtime -------------------------------------------------------------------------------


def test_ort_describe_reports_what_runs(tiny_bundle_ro):
    with OrtRuntime(tiny_bundle_ro, threads=1) as o:
        info = o.describe().to_dict()
    record = Bundle.load(tiny_bundle_ro).artifact("onnx.fp32")
    assert info["providers"] == ["CPUExecutionProvider"]
    assert info["fallback"] is None
    assert info["threads"] == 1
    assert info["sha256"] == record.sha256
    assert info["artifact"].endswith("model.onnx")
    assert info["onnxruntime"]
    assert o.label == "onnxruntime[cpu] fp32"
    json.dumps(info)


def test_ort_runs_a_bare_onnx_file(tiny_bundle_ro):
    path = Path(tiny_bundle_ro) / "model.onnx"
    with OrtRuntime(path) as bare, OrtRuntime(tiny_bundle_ro) as bundled:
        x = _x()
        np.testing.assert_array_equal(
            bare.infer({"input": x})["logits"], bundled.infer({"input": x})["logits"]
        )
        assert bare.describe().to_dict()["sha256"] == sha256_file(path)


def test_ort_refuses_a_modified_artifact(tiny_bundle):
    with open(Path(tiny_bundle) / "model.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(BundleError, match="does not match the sha256"):
        OrtRuntime(tiny_bundle).load()


def test_ort_missing_precision_names_the_command_that_makes_it(tiny_bundle_ro):
    with pytest.raises(BundleError, match=r"no fp16 ONNX \(onnx.fp16\).*vggdeploy convert"):
        OrtRuntime(tiny_bundle_ro, precision="fp16").load()
    with pytest.raises(BundleError, match="vggdeploy calibrate"):
        OrtRuntime(tiny_bundle_ro, precision="int8").load()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"precision": "int4"}, "use one of fp32, fp16, int8"),
        ({"provider": "rocm"}, "use one of cpu, cuda, tensorrt"),
        ({"fp16": True}, "only apply to the tensorrt provider"),
        ({"provider": "cuda", "engine_cache": "/tmp/x"}, "only apply to the tensorrt provider"),
        ({"threads": -1}, "positive integer"),
        ({"provider": "tensorrt", "workspace": 0}, "positive number of bytes"),
    ],
)
def test_ort_rejects_bad_options_at_construction(tiny_bundle_ro, kwargs, message):
    with pytest.raises(InputError, match=message):
        OrtRuntime(tiny_bundle_ro, **kwargs)


def test_ort_tensorrt_provider_options_follow_the_ort_names(tiny_bundle_ro, tmp_path):
    runtime = OrtRuntime(
        Path(tiny_bundle_ro) / "model.onnx",  # a bare file: no onnx.int8 artifact needed
        provider="tensorrt",
        precision="int8",
        fp16=True,
        engine_cache=tmp_path / "cache",
        workspace=1 << 30,
        device_id=1,
    )
    providers = runtime._provider_list()
    assert [p[0] if isinstance(p, tuple) else p for p in providers] == [
        "TensorrtExecutionProvider",
        "CUDAExecutionProvider",
        "CPUExecutionProvider",
    ]
    assert providers[0][1] == {
        "device_id": 1,
        "trt_fp16_enable": True,
        "trt_int8_enable": True,
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": str(tmp_path / "cache"),
        "trt_max_workspace_size": 1 << 30,
    }
    assert providers[1] == ("CUDAExecutionProvider", {"device_id": 1})


@pytest.mark.skipif(
    "_ort_has('CUDAExecutionProvider')", reason="this ONNX Runtime has the CUDA provider"
)
@pytest.mark.parametrize(
    "provider, wanted",
    [("cuda", "CUDAExecutionProvider"), ("tensorrt", "TensorrtExecutionProvider")],
)
def test_ort_gpu_provider_on_a_cpu_build_is_refused_with_the_reason(
    tiny_bundle_ro, provider, wanted
):
    with pytest.raises(RuntimeUnavailableError) as info:
        OrtRuntime(tiny_bundle_ro, provider=provider).load()
    message = str(info.value)
    assert f"{wanted} is not in this ONNX Runtime build" in message
    assert "onnxruntime-gpu" in message


@pytest.mark.skipif(
    "_ort_has('CUDAExecutionProvider')", reason="this ONNX Runtime has the CUDA provider"
)
def test_ort_allowed_fallback_runs_and_records_the_real_providers(tiny_bundle_ro, caplog):
    x = _x()
    with (
        OrtRuntime(tiny_bundle_ro, provider="cuda", allow_fallback=True) as o,
        OrtRuntime(tiny_bundle_ro) as cpu,
    ):
        info = o.describe().to_dict()
        np.testing.assert_array_equal(
            o.infer({"input": x})["logits"], cpu.infer({"input": x})["logits"]
        )
    assert info["providers"] == ["CPUExecutionProvider"]
    assert info["requested_provider"] == "cuda"
    assert "not in this ONNX Runtime build" in info["fallback"]
    assert "fell back to CPU" in o.label
    assert any("NOT from CUDAExecutionProvider" in r.getMessage() for r in caplog.records)


@pytest.mark.filterwarnings("ignore:Specified provider 'CUDAExecutionProvider'")
def test_ort_provider_available_but_not_loaded_is_detected(tiny_bundle_ro, monkeypatch):
    """ONNX Runtime lists CUDA but the session silently comes up on the CPU (no GPU, no
    libraries): the check on session.get_providers() must catch it."""
    import onnxruntime as ort

    real = ort.get_available_providers()
    if "CUDAExecutionProvider" in real:
        pytest.skip("this ONNX Runtime really has CUDA; the fallback cannot be provoked")
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", *real])
    with pytest.raises(RuntimeUnavailableError) as info:
        OrtRuntime(tiny_bundle_ro, provider="cuda").load()
    message = str(info.value)
    assert "has CUDAExecutionProvider but could not load it" in message
    assert "cuDNN" in message and "fell back to CPUExecutionProvider" in message
    with OrtRuntime(tiny_bundle_ro, provider="cuda", allow_fallback=True) as o:
        assert o.describe().to_dict()["providers"] == ["CPUExecutionProvider"]
        assert "could not load it" in o.describe().to_dict()["fallback"]


def test_torch_runtime_refuses_random_weights_that_regenerate_differently(tiny_bundle):
    """A bundle whose random weights came from another generator is refused, not misjudged."""
    import json

    from vggdeploy.bundle import Bundle
    from vggdeploy.errors import WeightsError
    from vggdeploy.runtimes.pytorch import TorchRuntime

    manifest_path = tiny_bundle / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    assert manifest["weights"]["source"] == "random" and len(manifest["weights"]["sha256"]) == 64
    manifest["weights"]["sha256"] = "0" * 64
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(WeightsError, match="re-export the bundle"):
        TorchRuntime(Bundle.load(tiny_bundle)).load()
