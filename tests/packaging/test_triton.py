"""Triton model repositories, checked against Triton's own ModelConfig schema (tritonclient)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from packaging_helpers import add_engine, add_onnx_copy, run_cli

from vggdeploy.bundle import Bundle
from vggdeploy.errors import InputError
from vggdeploy.packaging import (
    TritonOptions,
    model_name,
    package_triton,
    plan_triton,
    triton_model_config_pb2,
)
from vggdeploy.packaging.triton import _valid_model_name

pytest_plugins = ("trt_double.fixtures",)


def parse_config(path: Path):
    """Parse a config.pbtxt into Triton's own ModelConfig message (tritonclient's schema)."""
    from google.protobuf import text_format

    pb2 = triton_model_config_pb2()
    assert pb2 is not None, "tritonclient is a dev dependency: pip install -e '.[dev]'"
    return text_format.Parse(path.read_text(), pb2.ModelConfig())


def test_triton_onnx_config_parses(tiny_bundle: Path, tmp_path: Path, capsys) -> None:
    labels = [f"class {i}" for i in range(10)]
    Bundle.load(tiny_bundle).write_labels(labels)
    repo = tmp_path / "repo"
    code, out, _ = run_cli(
        [
            "package", str(tiny_bundle), "--format", "triton", "--out", str(repo),
            "--name", "tiny", "--max-batch", "16", "--instances", "2",
            "--dynamic-batching", "--preferred-batch", "4,8", "--kind", "cpu",
        ],
        capsys,
    )  # fmt: skip
    assert code == 0 and "checked against Triton's ModelConfig schema" in out
    assert "onnx.fp32 (model.onnx)" in out  # which artifact (file) the model came from
    model = repo / "tiny_onnx_fp32"
    assert (model / "1" / "model.onnx").read_bytes() == (tiny_bundle / "model.onnx").read_bytes()
    assert (model / "labels.txt").read_text().splitlines() == labels
    config = parse_config(model / "config.pbtxt")
    assert config.name == "tiny_onnx_fp32"
    assert config.platform == "onnxruntime_onnx"
    assert config.max_batch_size == 16
    assert [(i.name, list(i.dims)) for i in config.input] == [("input", [3, 32, 32])]
    assert [(o.name, list(o.dims)) for o in config.output] == [("logits", [10])]
    assert config.output[0].label_filename == "labels.txt"
    assert list(config.dynamic_batching.preferred_batch_size) == [4, 8]
    assert config.dynamic_batching.max_queue_delay_microseconds == 100
    assert config.instance_group[0].count == 2
    pb2 = triton_model_config_pb2()
    assert config.instance_group[0].kind == pb2.ModelInstanceGroup.KIND_CPU
    assert config.input[0].data_type == pb2.TYPE_FP32


def test_triton_int8_is_one_model_with_a_note(tiny_bundle: Path, tmp_path: Path, capsys) -> None:
    """One INT8 file, one model; its note says Triton's onnxruntime backend runs it as written."""
    s8 = add_onnx_copy(tiny_bundle, "int8", target="tensorrt")
    repo = tmp_path / "repo"
    code, out, _ = run_cli(
        ["package", str(tiny_bundle), "--out", str(repo), "--name", "tiny", "--kind", "cpu"],
        capsys,
    )
    assert code == 0
    for name, source in [("tiny_onnx_fp32", tiny_bundle / "model.onnx"), ("tiny_onnx_int8", s8)]:
        assert (repo / name / "1" / "model.onnx").read_bytes() == source.read_bytes(), name
        config = parse_config(repo / name / "config.pbtxt")
        assert config.name == name and config.platform == "onnxruntime_onnx"
    assert sorted(p.name for p in repo.iterdir()) == ["tiny_onnx_fp32", "tiny_onnx_int8"]
    assert "onnx.int8 (model.int8.onnx)" in out

    # --precision selects exactly that file
    result = package_triton(
        tiny_bundle, tmp_path / "int8only", TritonOptions(name="tiny", precisions=("int8",))
    )
    assert [(m.name, m.artifacts, m.precision) for m in result.models] == [
        ("tiny_onnx_int8", ["onnx.int8"], "int8")
    ]
    assert result.models[0].sources == ["onnx.int8 (model.int8.onnx)"]
    assert any("runs it as written" in n for n in result.models[0].notes)
    code, _, err = run_cli(
        ["package", str(tiny_bundle), "--out", str(tmp_path / "r"), "--precision", "int4"], capsys
    )
    assert code == 1 and "fp32, fp16, int8" in err  # the choices come from precision.NAMES


def test_triton_model_names() -> None:
    assert model_name("vgg16", "onnx.int8") == "vgg16_onnx_int8"
    assert model_name("vgg16", "engine.fp16") == "vgg16_trt_fp16"
    from vggdeploy import precision as P

    for p in P.NAMES:
        assert _valid_model_name(model_name("vgg16_bn", P.onnx_key(p)))
    assert not _valid_model_name("vgg16.int8") and not _valid_model_name("a/b")
    assert not _valid_model_name("") and not _valid_model_name("vgg\u00e9")
    with pytest.raises(InputError, match="letters, digits"):
        TritonOptions(name="my model")
    with pytest.raises(InputError, match="fp32, fp16, int8"):
        TritonOptions(precisions=("int4",))


def test_triton_engines_per_compute_capability(tiny_bundle: Path, tmp_path: Path) -> None:
    # The documented flow: unpack the same bundle on two devices, build on each, package both.
    orin = tmp_path / "built-on-orin"
    shutil.copytree(tiny_bundle, orin)
    add_engine(tiny_bundle, "engine.fp16", "8.6", max_batch=16)
    add_engine(orin, "engine.fp16", "8.7", max_batch=16)
    result = package_triton(
        tiny_bundle,
        tmp_path / "repo",
        TritonOptions(name="tiny", dynamic_batching=True),
        engines_from=[orin],
    )
    assert result.schema_checked
    names = {m.name for m in result.models}
    assert names == {"tiny_onnx_fp32", "tiny_trt_fp16"}
    (trt_model,) = [m for m in result.models if m.name == "tiny_trt_fp16"]
    assert trt_model.sources == [
        "engine.fp16 (model.fp16.engine)",
        f"engine.fp16 ({orin / 'model.fp16.engine'})",
    ]
    model = tmp_path / "repo" / "tiny_trt_fp16"
    config = parse_config(model / "config.pbtxt")
    assert config.platform == "tensorrt_plan"
    assert dict(config.cc_model_filenames) == {"8.6": "model.sm86.plan", "8.7": "model.sm87.plan"}
    assert (model / "1" / "model.sm86.plan").read_bytes() == b"fake plan for sm8.6"
    assert (model / "1" / "model.sm87.plan").read_bytes() == b"fake plan for sm8.7"
    # no --max-batch: the engine profile's max (16) wins over the default 32
    assert config.max_batch_size == 16
    assert list(config.dynamic_batching.preferred_batch_size) == [8]  # the profile's opt
    pb2 = triton_model_config_pb2()
    assert config.instance_group[0].kind == pb2.ModelInstanceGroup.KIND_GPU


def test_triton_single_engine_uses_model_plan(tiny_bundle: Path, tmp_path: Path) -> None:
    add_engine(tiny_bundle, "engine.fp16", "8.6")
    package_triton(tiny_bundle, tmp_path / "repo", TritonOptions(backends=("trt",)))
    model = tmp_path / "repo" / "vgg11_bn_trt_fp16"
    config = parse_config(model / "config.pbtxt")
    assert config.default_model_filename == "model.plan" and not config.cc_model_filenames
    assert (model / "1" / "model.plan").is_file()
    assert not (tmp_path / "repo" / "vgg11_bn_onnx_fp32").exists()


def test_triton_max_batch_above_engine_profile_refused(tiny_bundle: Path, tmp_path: Path) -> None:
    add_engine(tiny_bundle, "engine.fp16", "8.6", max_batch=16)
    with pytest.raises(
        InputError, match="above the fp16 engine's optimization profile max batch 16"
    ):
        package_triton(tiny_bundle, tmp_path / "repo", TritonOptions(max_batch=32))
    assert not (tmp_path / "repo").exists() or not any((tmp_path / "repo").iterdir())


def test_triton_max_batch_above_onnx_limit_refused(
    tiny_bundle: Path, tmp_path: Path, capsys
) -> None:
    code, _, err = run_cli(
        ["package", str(tiny_bundle), "--out", str(tmp_path / "r"), "--max-batch", "5000"], capsys
    )
    assert code == 1 and "dynamic batch limit 4096" in err


def test_triton_refuses_to_overwrite(tiny_bundle: Path, tmp_path: Path) -> None:
    package_triton(tiny_bundle, tmp_path / "repo")
    with pytest.raises(InputError, match="--force"):
        package_triton(tiny_bundle, tmp_path / "repo")
    package_triton(tiny_bundle, tmp_path / "repo", TritonOptions(force=True))


def test_triton_engines_from_another_export_refused(tiny_bundle: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    shutil.copytree(tiny_bundle, other)
    with Bundle.load(other).update() as manifest:  # as if exported from other weights
        manifest.artifacts["onnx.fp32"].sha256 = "0" * 64
    with pytest.raises(InputError, match="not made from the same export"):
        package_triton(tiny_bundle, tmp_path / "repo", engines_from=[other])


def test_triton_same_compute_capability_twice_refused(tiny_bundle: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    shutil.copytree(tiny_bundle, other)
    add_engine(tiny_bundle, "engine.fp16", "8.6")
    add_engine(other, "engine.fp16", "8.6")
    with pytest.raises(InputError, match="not one per compute capability"):
        package_triton(tiny_bundle, tmp_path / "repo", engines_from=[other])


def test_triton_fixed_batch_bundle_cannot_batch(tiny_bundle: Path, tmp_path: Path) -> None:
    with Bundle.load(tiny_bundle).update() as manifest:
        manifest.io.inputs[0].shape = [4, 3, 32, 32]  # as `export --batch 4` writes
    with pytest.raises(InputError, match="fixed batch of 4"):
        package_triton(tiny_bundle, tmp_path / "r", TritonOptions(dynamic_batching=True))
    with pytest.raises(InputError, match="fixed batch of 4"):
        package_triton(tiny_bundle, tmp_path / "r", TritonOptions(max_batch=8))


def test_triton_labels_linked_out_of_the_bundle_refused(tiny_bundle: Path, tmp_path: Path) -> None:
    """Labels go through the bundle's one containment rule like every artifact."""
    from vggdeploy.errors import BundleError

    secret = tmp_path / "secret.txt"
    secret.write_text("not yours\n")
    (tiny_bundle / "labels.txt").symlink_to(secret)
    with Bundle.load(tiny_bundle).update() as manifest:
        manifest.labels = "labels.txt"
    with pytest.raises(BundleError, match="outside the bundle"):
        package_triton(tiny_bundle, tmp_path / "repo")
    assert not (tmp_path / "repo").exists() or not any((tmp_path / "repo").iterdir())


def test_triton_from_an_engine_built_by_vggdeploy_build(
    tiny_bundle: Path, tmp_path: Path, trt10, gpu
) -> None:
    """The engine record exactly as `vggdeploy build` writes it (TensorRT double only)."""
    from vggdeploy.exporter.engine import BuildOptions, ProfileSpec, build_engine

    build_engine(
        Bundle.load(tiny_bundle),
        BuildOptions(precision="fp32", profiles=[ProfileSpec(batch=(1, 4, 16))]),
    )
    result = package_triton(tiny_bundle, tmp_path / "repo", TritonOptions(dynamic_batching=True))
    config = parse_config(tmp_path / "repo" / "vgg11_bn_trt_fp32" / "config.pbtxt")
    assert config.platform == "tensorrt_plan" and config.max_batch_size == 16
    assert list(config.dynamic_batching.preferred_batch_size) == [4]
    assert [list(i.dims) for i in config.input] == [[3, 32, 32]]
    plan = tmp_path / "repo" / "vgg11_bn_trt_fp32" / "1" / "model.plan"
    assert plan.read_bytes() == (tiny_bundle / "model.fp32.engine").read_bytes()
    assert {m.name for m in result.models} == {"vgg11_bn_onnx_fp32", "vgg11_bn_trt_fp32"}
    with pytest.raises(InputError, match="profile max batch 16"):
        package_triton(tiny_bundle, tmp_path / "r2", TritonOptions(max_batch=17))
    # and inspect reads the build facts from the same record
    from vggdeploy.inspection import inspect_bundle

    engine = next(a for a in inspect_bundle(tiny_bundle)["artifacts"] if a["key"] == "engine.fp32")
    assert engine["host"]["compute_capability"] == gpu["compute_capability"]
    assert engine["host"]["tensorrt_version"] == trt10.__version__


def test_triton_max_batch_spans_every_engine_profile(tiny_bundle: Path, tmp_path: Path) -> None:
    """Several profiles (b=1:1:8 and b=8:16:32): the engine takes up to 32, tuned for 1 and 16."""
    bundle = Bundle.load(tiny_bundle)
    (tiny_bundle / "model.fp16.engine").write_bytes(b"fake plan for sm89")

    def rng(lo: int, opt: int, hi: int) -> dict:
        return {"input": {k: [b, 3, 32, 32] for k, b in zip(("min", "opt", "max"), (lo, opt, hi))}}

    bundle.add_artifact(
        "engine.fp16",
        "model.fp16.engine",
        kind="tensorrt-engine",
        precision="fp16",
        tensorrt_version="10.16.1.11",
        gpu={"name": "GPU sm89", "compute_capability": "8.9", "jetson": False},
        flags={"strongly_typed": True, "hardware_compat": "none", "version_compatible": False},
        profiles=[rng(1, 1, 8), rng(8, 16, 32)],
    )
    models = plan_triton(Bundle.load(tiny_bundle), TritonOptions(max_batch=32))
    (trt,) = [m for m in models if m.platform == "tensorrt_plan"]
    assert trt.max_batch == 32
    assert list(trt.preferred_batch) == [1, 16]
    with pytest.raises(InputError, match="profile max batch 32"):
        plan_triton(Bundle.load(tiny_bundle), TritonOptions(max_batch=33))
