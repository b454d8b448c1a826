"""The TensorRT runtime against the test double (both API generations), plus the real-GPU test."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from vggdeploy.bundle import Bundle
from vggdeploy.errors import BundleError, InputError, RuntimeUnavailableError
from vggdeploy.exporter.engine import BuildOptions, build_engine, parse_profile
from vggdeploy.metrics import compare_arrays
from vggdeploy.records import EngineRecord
from vggdeploy.runtimes import runtime_class
from vggdeploy.runtimes.trt import TrtRuntime, check_compatibility

# trt, trt10 (the TensorRT double per API generation), gpu, precision_bundle(_ro)
pytest_plugins = ("trt_double.fixtures",)


def x_batch(n: int, size: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 3, size, size), dtype=np.float32)


def ort_logits(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["logits"], {"input": x})[0]


@pytest.fixture
def built(trt, precision_bundle) -> Path:
    """The precision bundle with fp32 and fp16 engines built by the double."""
    for precision in ("fp32", "fp16"):
        build_engine(Bundle.load(precision_bundle), BuildOptions(precision=precision))
    return precision_bundle


def set_record(root: Path, key: str, **changes) -> None:
    """Change fields of a manifest record: `gpu__compute_capability="7.5"` sets record.gpu...."""
    with Bundle.load(root).update() as manifest:
        record = manifest.artifacts[key]
        for path, value in changes.items():
            target = record
            *parents, leaf = path.split("__")
            for p in parents:
                target = getattr(target, p)
            setattr(target, leaf, value)


# -- loading and running ------------------------------------------------------------------------------


def test_registry_and_cheap_construction(monkeypatch, tmp_path) -> None:
    assert runtime_class("tensorrt") is TrtRuntime
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    runtime = TrtRuntime(tmp_path, precision="int8")  # nothing is read or imported yet
    assert not runtime.is_loaded and runtime.label == "tensorrt int8"
    with pytest.raises(InputError, match="precision 'bf16'"):
        TrtRuntime(tmp_path, precision="bf16")


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_runs_and_matches_onnxruntime(built, precision) -> None:
    onnx_path = Bundle.load(built).artifact_path(f"onnx.{precision}")
    with TrtRuntime(built, precision=precision) as runtime:
        assert [s.to_dict() for s in runtime.inputs] == [
            {"name": "input", "shape": ["batch", 3, 32, 32], "dtype": "float32"}
        ]
        assert [s.to_dict() for s in runtime.outputs] == [
            {"name": "logits", "shape": ["batch", 10], "dtype": "float32"}
        ]
        for n in (1, 7, 32):  # the profile's ends and a size in between, buffers re-allocated
            x = x_batch(n, seed=n)
            got = runtime.infer({"input": x})["logits"]
            assert got.shape == (n, 10)
            assert compare_arrays(ort_logits(onnx_path, x), got)["max_abs"] == 0.0
        info = runtime.describe().to_dict()
    assert info["tensorrt_version"] == sys.modules["tensorrt"].__version__
    assert info["gpu"] == "NVIDIA A100-SXM4-80GB" and info["precision"] == precision
    assert info["profiles"] == [
        {"input": {"min": (1, 3, 32, 32), "opt": (8, 3, 32, 32), "max": (32, 3, 32, 32)}}
    ]


def test_engine_file_path_with_manifest_beside_it(built) -> None:
    with TrtRuntime(built / "model.fp16.engine", precision="fp16") as runtime:
        assert runtime.record is not None and runtime.record.precision == "fp16"
        assert runtime.infer({"input": x_batch(2)})["logits"].shape == (2, 10)


def test_feed_checks(built) -> None:
    with TrtRuntime(built, precision="fp32") as runtime:
        with pytest.raises(
            InputError,
            match=r"batch 33\) is outside the engine's optimization profiles \(profile 0: batch 1..32\)",
        ):
            runtime.infer({"input": x_batch(33)})
        with pytest.raises(InputError, match="--max-batch"):
            runtime.infer({"input": x_batch(64)})
        with pytest.raises(InputError, match="dtype float64, expected float32"):
            runtime.infer({"input": x_batch(2).astype(np.float64)})
        with pytest.raises(InputError, match="axis 2 must be 32"):
            runtime.infer({"input": x_batch(2, size=64)})
        with pytest.raises(InputError, match="missing \\['input'\\]"):
            runtime.infer({"x": x_batch(2)})


def test_several_profiles_are_chosen_by_batch(trt, precision_bundle) -> None:
    profiles = [parse_profile("b=1:2:4"), parse_profile("b=16:24:32")]
    build_engine(Bundle.load(precision_bundle), BuildOptions(precision="fp32", profiles=profiles))
    onnx_path = precision_bundle / "model.onnx"
    with TrtRuntime(precision_bundle, precision="fp32") as runtime:
        for n in (3, 20, 2):
            x = x_batch(n, seed=n)
            assert (
                compare_arrays(ort_logits(onnx_path, x), runtime.infer({"input": x})["logits"])[
                    "max_abs"
                ]
                == 0
            )
        with pytest.raises(InputError, match="profile 0: batch 1..4; profile 1: batch 16..32"):
            runtime.infer({"input": x_batch(8)})


def test_dense_bundle_runs_at_several_sizes(trt, tiny_dense_bundle_ro, tmp_path) -> None:
    root = tmp_path / "dense"
    shutil.copytree(tiny_dense_bundle_ro, root)
    profile = parse_profile("b=1:1:2,h=224:256:288,w=224:256:288")
    build_engine(Bundle.load(root), BuildOptions(precision="fp32", profiles=[profile]))
    with TrtRuntime(root, precision="fp32") as runtime:
        assert runtime.inputs[0].shape == ("batch", 3, "height", "width")
        for size in (224, 288):
            x = x_batch(1, size=size)
            got = runtime.infer({"input": x})["logits"]
            assert compare_arrays(ort_logits(root / "model.onnx", x), got)["max_abs"] == 0
        with pytest.raises(
            InputError, match="height 320, width 320.*height 224..288, width 224..288"
        ):
            runtime.infer({"input": x_batch(1, size=320)})


# -- refusing engines that cannot run here ------------------------------------------------------------


def test_other_tensorrt_version_is_refused_with_where_to_rebuild(built) -> None:
    set_record(built, "engine.fp16", tensorrt_version="10.3.0.26")
    with pytest.raises(RuntimeUnavailableError) as info:
        TrtRuntime(built, precision="fp16").load()
    text = str(info.value)
    assert "built with TensorRT 10.3.0.26 but this host has" in text
    assert f"`vggdeploy build {built} --precision fp16`" in text


def test_other_compute_capability_is_refused(built, gpu) -> None:
    gpu.update(name="Tesla T4", compute_capability="7.5")
    with pytest.raises(
        RuntimeUnavailableError,
        match=r"compute capability 8.0 .* is Tesla T4 \(compute capability 7.5\).*vggdeploy build",
    ):
        TrtRuntime(built, precision="fp32").load()


def test_tensorrt_itself_refuses_when_there_is_no_manifest(built, gpu, tmp_path) -> None:
    """A bare engine (no manifest to check) from another GPU: TensorRT's own refusal, reported."""
    lone = tmp_path / "lone" / "model.fp32.engine"
    lone.parent.mkdir()
    shutil.copy(built / "model.fp32.engine", lone)
    gpu.update(compute_capability="8.6", name="NVIDIA GeForce RTX 3090")
    with pytest.raises(
        RuntimeUnavailableError, match="could not load .*incompatible device.*vggdeploy build"
    ):
        TrtRuntime(lone, precision="fp32").load()


def test_same_gpu_model_other_name_warns_only(built, gpu, caplog) -> None:
    gpu.update(name="NVIDIA A100-PCIE-40GB")
    with TrtRuntime(built, precision="fp32") as runtime:
        runtime.infer({"input": x_batch(1)})
    assert "kernels were tuned for the other GPU" in caplog.text


def test_hardware_compatible_engines(trt, precision_bundle, gpu) -> None:
    build_engine(
        Bundle.load(precision_bundle), BuildOptions(precision="fp32", hardware_compat="ampere+")
    )
    gpu.update(name="NVIDIA L4", compute_capability="8.9")
    with TrtRuntime(precision_bundle, precision="fp32") as runtime:
        assert runtime.infer({"input": x_batch(1)})["logits"].shape == (1, 10)
    gpu.update(name="Tesla T4", compute_capability="7.5")
    with pytest.raises(RuntimeUnavailableError, match="Ampere and later"):
        TrtRuntime(precision_bundle, precision="fp32").load()


def test_version_compatible_engine_runs_on_a_later_tensorrt(precision_bundle, monkeypatch) -> None:
    from trt_double import install

    install(monkeypatch, "10.16")
    build_engine(
        Bundle.load(precision_bundle), BuildOptions(precision="fp32", version_compatible=True)
    )
    build_engine(
        Bundle.load(precision_bundle),
        BuildOptions(precision="fp16", version_compatible=True, exclude_lean_runtime=True),
    )
    install(monkeypatch, "11.4")
    with TrtRuntime(precision_bundle, precision="fp32") as runtime:  # lean runtime embedded
        assert runtime.infer({"input": x_batch(2)})["logits"].shape == (2, 10)
    with pytest.raises(RuntimeUnavailableError, match="without its lean runtime"):
        TrtRuntime(precision_bundle, precision="fp16").load()


def test_engine_from_a_newer_tensorrt_is_refused(precision_bundle, monkeypatch) -> None:
    from trt_double import install

    install(monkeypatch, "11.4")
    build_engine(
        Bundle.load(precision_bundle), BuildOptions(precision="fp32", version_compatible=True)
    )
    install(monkeypatch, "10.16")
    with pytest.raises(RuntimeUnavailableError, match="newer than this host's 10.16.1.11"):
        TrtRuntime(precision_bundle, precision="fp32").load()


def test_check_compatibility_unit() -> None:
    from vggdeploy.runtimes._cuda import DeviceInfo

    host = DeviceInfo(0, "Orin", "8.7", "12.6", 0, True)
    record = EngineRecord.model_validate(
        {
            "path": "model.int8.engine",
            "sha256": "0" * 64,
            "size": 1,
            "precision": "int8",
            "tensorrt_version": "10.3.0.30",
            "gpu": {"name": "Orin", "compute_capability": "8.7"},
            "flags": {"hardware_compat": "none", "version_compatible": False},
        }
    )
    check_compatibility(record, "10.3.0.30", host)
    with pytest.raises(
        RuntimeUnavailableError, match="not portable across TensorRT|only on the TensorRT version"
    ):
        check_compatibility(record, "10.3.0.31", host)
    # version-compatible: later releases of the same major, and 10 -> 11, but not 10 -> 12
    record.flags.version_compatible = True
    check_compatibility(record, "10.16.1.11", host)
    check_compatibility(record, "11.4.0.106", host)
    with pytest.raises(RuntimeUnavailableError, match="only 8 -> 10 and 10 -> 11"):
        check_compatibility(record, "12.0.0.1", host)
    record.flags.version_compatible = False
    record.flags.hardware_compat = "ampere+"
    with pytest.raises(RuntimeUnavailableError, match="Jetson"):
        check_compatibility(record, "10.3.0.30", host)


# -- bundle and environment problems --------------------------------------------------------------------


def test_missing_engine_points_to_build(trt, precision_bundle) -> None:
    with pytest.raises(
        BundleError,
        match=f"build it on this machine with `vggdeploy build {precision_bundle} --precision int8`",
    ):
        TrtRuntime(precision_bundle, precision="int8").load()


def test_modified_engine_is_refused(built) -> None:
    path = built / "model.fp32.engine"
    path.write_bytes(path.read_bytes() + b"x")
    with pytest.raises(BundleError, match="does not match the sha256"):
        TrtRuntime(built, precision="fp32").load()


def test_no_tensorrt_and_no_gpu(built, gpu, monkeypatch) -> None:
    gpu["available"] = False
    with pytest.raises(RuntimeUnavailableError, match="needs an NVIDIA GPU"):
        TrtRuntime(built, precision="fp32").load()
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(RuntimeUnavailableError, match="pip install tensorrt.*JetPack"):
        TrtRuntime(built, precision="fp32").load()


def test_a_bad_gpu_index(built) -> None:
    with pytest.raises(RuntimeUnavailableError, match="GPU 3 does not exist"):
        TrtRuntime(built, precision="fp32", device_id=3).load()


def test_manifest_records_what_the_runtime_checks(built) -> None:
    record = json.loads((built / "manifest.json").read_text())["artifacts"]["engine.fp16"]
    for key in ("tensorrt_version", "gpu", "cuda_version", "flags", "profiles", "sha256"):
        assert record[key], key


# -- the real thing (skipped without TensorRT and a GPU) ----------------------------------------------


def _real_tensorrt_and_gpu() -> str | None:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return "TensorRT is not installed"
    import torch

    if not torch.cuda.is_available():
        return "no CUDA GPU"
    return None


@pytest.mark.gpu
@pytest.mark.tensorrt
@pytest.mark.skipif(_real_tensorrt_and_gpu() is not None, reason=str(_real_tensorrt_and_gpu()))
def test_real_engines_of_each_precision_pass_validate(precision_bundle) -> None:
    """On a machine with TensorRT and a GPU: build fp32/fp16/int8 engines for real, run them
    through the TensorRT runtime and judge them with `validate` against PyTorch."""
    from vggdeploy.runtimes.registry import parse_spec
    from vggdeploy.validate import validate_bundle

    for precision in ("fp32", "fp16", "int8"):
        record = build_engine(Bundle.load(precision_bundle), BuildOptions(precision=precision))
        assert record.precision_check["passed"]
        with TrtRuntime(precision_bundle, precision=precision) as runtime:
            assert np.isfinite(runtime.infer({"input": x_batch(4)})["logits"]).all()
    report = validate_bundle(
        precision_bundle,
        [parse_spec(f"tensorrt@{p}") for p in ("fp32", "fp16", "int8")],
    )
    assert [r.status for r in report.results] == ["compared"] * 3
    fp = [r for r in report.results if r.precision != "int8"]
    assert all(r.passed for r in fp), report


def test_real_cuda_glue_without_a_gpu() -> None:
    """The real glue (not the fake) on a host without a usable GPU: a clear one-line error."""
    import torch

    from vggdeploy.runtimes import _cuda

    if torch.cuda.is_available():
        pytest.skip("this host has a GPU")
    with pytest.raises(
        RuntimeUnavailableError, match="TensorRT needs an NVIDIA GPU and none is usable"
    ):
        _cuda.device_info(0)


def test_cuda_graphs_capture_once_per_shape_and_replay(built) -> None:
    from trt_double import fake_cuda

    onnx_path = built / "model.fp16.onnx"
    with TrtRuntime(built, precision="fp16", cuda_graphs=True) as runtime:
        assert runtime.describe().details["cuda_graphs"] is True
        for seed in range(3):  # first call: ordinary run + capture; then two replays
            x = x_batch(4, seed=seed)
            got = runtime.infer({"input": x})["logits"]
            assert compare_arrays(ort_logits(onnx_path, x), got)["max_abs"] == 0.0
        assert len(fake_cuda.GRAPHS) == 1 and fake_cuda.GRAPHS[0]._replays == 2
        x = x_batch(2, seed=9)  # a new shape: a new capture
        got = runtime.infer({"input": x})["logits"]
        assert compare_arrays(ort_logits(onnx_path, x), got)["max_abs"] == 0.0
        assert len(fake_cuda.GRAPHS) == 2


def test_benchmark_can_ask_for_cuda_graphs() -> None:
    import inspect

    assert "cuda_graphs" in inspect.signature(TrtRuntime).parameters
