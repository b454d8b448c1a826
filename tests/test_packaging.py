"""pack/unpack round trips and refusals, and Triton repositories checked against Triton's schema."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path

import pytest

from vggdeploy.bundle import Bundle
from vggdeploy.cli import main
from vggdeploy.errors import BundleError, InputError
from vggdeploy.packaging import (
    TritonOptions,
    pack_bundle,
    package_triton,
    plan_triton,
    triton_model_config_pb2,
    unpack_bundle,
)

pytest_plugins = ("trt_double.fixtures",)


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(args)
    out, err = capsys.readouterr()
    return int(exc.value.code or 0), out, err


def add_engine(root: Path, key: str, cc: str, max_batch: int = 16) -> None:
    """A fake engine recorded the way `vggdeploy build` records a real one."""
    bundle = Bundle.load(root)
    name = f"model.{key.replace('engine.', '')}.engine"
    (root / name).write_bytes(f"fake plan for sm{cc}".encode())
    shape = lambda b: [b, 3, 32, 32]  # noqa: E731
    bundle.add_artifact(
        key,
        name,
        kind="tensorrt-engine",
        precision="fp16",
        tensorrt_version="10.16.1.11",
        gpu={"name": f"GPU sm{cc}", "compute_capability": cc, "jetson": False},
        flags={"strongly_typed": True, "hardware_compat": "none", "version_compatible": False},
        profiles=[{"input": {"min": shape(1), "opt": shape(8), "max": shape(max_batch)}}],
    )
    bundle.save()


def parse_config(path: Path):
    """Parse a config.pbtxt into Triton's own ModelConfig message (tritonclient's schema)."""
    from google.protobuf import text_format

    pb2 = triton_model_config_pb2()
    assert pb2 is not None, "tritonclient is a dev dependency: pip install -e '.[dev]'"
    return text_format.Parse(path.read_text(), pb2.ModelConfig())


# -- pack / unpack ----------------------------------------------------------------------------


def test_pack_unpack_round_trip(tiny_bundle: Path, tmp_path: Path) -> None:
    bundle = Bundle.load(tiny_bundle)
    # A checkpoint path of this machine must not travel with the bundle.
    bundle.manifest["weights"] = {"source": "file", "path": "/home/me/ckpt/vgg.pth", "sha256": "ab"}
    bundle.save()
    add_engine(tiny_bundle, "engine.fp16", "8.6")

    archive = tmp_path / "b.tar.gz"
    result = pack_bundle(tiny_bundle, archive)
    assert "weights.path" in result.paths_made_relative
    again = pack_bundle(tiny_bundle, tmp_path / "again.tar.gz")
    assert again.sha256 == result.sha256  # reproducible archive

    out = unpack_bundle(archive, tmp_path / "unpacked")
    assert set(out.artifacts) == {"onnx.fp32", "engine.fp16"}
    assert out.manifest["weights"]["path"] == "vgg.pth"
    assert "/home/me" not in (tmp_path / "unpacked" / "manifest.json").read_text()
    for key in out.artifacts:
        out.artifact_path(key, verify=True)
    assert (tmp_path / "unpacked" / "SHA256SUMS").is_file()
    with tarfile.open(archive) as tar:
        members = tar.getmembers()
    assert all(m.mtime == members[0].mtime and m.uid == 0 for m in members)


def test_pack_without_engines(tiny_bundle: Path, tmp_path: Path, capsys) -> None:
    add_engine(tiny_bundle, "engine.fp16", "8.6")
    code, out, _ = run_cli(
        ["pack", str(tiny_bundle), "-o", str(tmp_path / "b.tar.gz"), "--no-engines"], capsys
    )
    assert code == 0 and "left out: engine.fp16" in out
    code, out, _ = run_cli(
        ["unpack", str(tmp_path / "b.tar.gz"), "-o", str(tmp_path / "u")], capsys
    )
    assert code == 0 and "vggdeploy build" in out
    manifest = json.loads((tmp_path / "u" / "manifest.json").read_text())
    assert list(manifest["artifacts"]) == ["onnx.fp32"]
    assert manifest["packed"]["excluded_artifacts"] == ["engine.fp16"]


def test_pack_refuses_tampered_bundle(tiny_bundle: Path, tmp_path: Path) -> None:
    with open(tiny_bundle / "model.onnx", "ab") as f:
        f.write(b"junk")
    with pytest.raises(BundleError, match="does not match its sha256"):
        pack_bundle(tiny_bundle, tmp_path / "b.tar.gz")
    assert not (tmp_path / "b.tar.gz").exists()
    assert list(tmp_path.glob(".*partial")) == []


def test_unpack_detects_corrupted_payload(tiny_bundle: Path, tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    archive = work / "b.tar"
    pack_bundle(tiny_bundle, archive)
    data = bytearray(archive.read_bytes())
    at = data.find(b"onnx") + 20000  # inside model.onnx's bytes, well past the headers
    data[at] ^= 0xFF
    archive.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="corrupt"):
        unpack_bundle(archive, work / "u")
    assert [p.name for p in work.iterdir()] == ["b.tar"]  # staging folder removed


def evil_archive(path: Path, kind: str) -> None:
    with tarfile.open(path, "w:gz") as tar:
        payload = b'{"schema_version": 1}'
        if kind == "symlink":
            info = tarfile.TarInfo("model.onnx")
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
            tar.addfile(info)
            return
        if kind == "hardlink":
            info = tarfile.TarInfo("model.onnx")
            info.type, info.linkname = tarfile.LNKTYPE, "/etc/passwd"
            tar.addfile(info)
            return
        if kind == "device":
            info = tarfile.TarInfo("model.onnx")
            info.type = tarfile.CHRTYPE
            tar.addfile(info)
            return
        name = {"absolute": "/tmp/evil-vggdeploy.json", "dotdot": "../evil.json"}[kind]
        info = tarfile.TarInfo(name)
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))


@pytest.mark.parametrize("kind", ["absolute", "dotdot", "symlink", "hardlink", "device"])
def test_unpack_refuses_malicious_archives(tmp_path: Path, kind: str, capsys) -> None:
    archive = tmp_path / "evil.tar.gz"
    evil_archive(archive, kind)
    code, _, err = run_cli(["unpack", str(archive), "-o", str(tmp_path / "out")], capsys)
    assert code == 1 and err.startswith("error: refusing to unpack")
    assert not (tmp_path / "out").exists()
    assert not (tmp_path.parent / "evil.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evil.tar.gz"]


def test_unpack_refuses_non_empty_destination(tiny_bundle: Path, tmp_path: Path) -> None:
    archive = tmp_path / "b.tar.gz"
    pack_bundle(tiny_bundle, archive)
    (tmp_path / "u").mkdir()
    (tmp_path / "u" / "keep.txt").write_text("mine")
    with pytest.raises(InputError, match="not empty"):
        unpack_bundle(archive, tmp_path / "u")
    assert (tmp_path / "u" / "keep.txt").read_text() == "mine"
    unpack_bundle(archive, tmp_path / "u", force=True)
    assert not (tmp_path / "u" / "keep.txt").exists()


# -- Triton -----------------------------------------------------------------------------------


def test_triton_onnx_config_parses(tiny_bundle: Path, tmp_path: Path, capsys) -> None:
    labels = [f"class {i}" for i in range(10)]
    (tiny_bundle / "labels.txt").write_text("\n".join(labels) + "\n")
    bundle = Bundle.load(tiny_bundle)
    bundle.manifest["labels"] = "labels.txt"
    bundle.save()
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
    model = repo / "tiny_onnx_fp32"
    assert (model / "1" / "model.onnx").read_bytes() == (tiny_bundle / "model.onnx").read_bytes()
    assert (model / "labels.txt").read_text().splitlines() == labels
    config = parse_config(model / "config.pbtxt")
    assert config.name == "tiny_onnx_fp32"
    assert config.platform == "onnxruntime_onnx"
    assert config.max_batch_size == 16
    assert [(i.name, list(i.dims)) for i in config.input] == [("input", [3, 32, 32])]
    assert [(o.name, list(o.dims)) for o in config.output] == [("logits", [10])]
    assert config.input[0].data_type == config.input[0].data_type.__class__(11)  # TYPE_FP32
    assert config.output[0].label_filename == "labels.txt"
    assert list(config.dynamic_batching.preferred_batch_size) == [4, 8]
    assert config.dynamic_batching.max_queue_delay_microseconds == 100
    assert config.instance_group[0].count == 2
    pb2 = triton_model_config_pb2()
    assert config.instance_group[0].kind == pb2.ModelInstanceGroup.KIND_CPU
    assert config.input[0].data_type == pb2.TYPE_FP32


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
    names = {m["name"] for m in result.models}
    assert names == {"tiny_onnx_fp32", "tiny_trt_fp16"}
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
    bundle = Bundle.load(other)
    bundle.artifacts["onnx.fp32"]["sha256"] = "0" * 64  # as if exported from other weights
    bundle.save()
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
    bundle = Bundle.load(tiny_bundle)
    bundle.manifest["io"]["inputs"][0]["shape"] = [4, 3, 32, 32]  # as `export --batch 4` writes
    bundle.save()
    with pytest.raises(InputError, match="fixed batch of 4"):
        package_triton(tiny_bundle, tmp_path / "r", TritonOptions(dynamic_batching=True))
    with pytest.raises(InputError, match="fixed batch of 4"):
        package_triton(tiny_bundle, tmp_path / "r", TritonOptions(max_batch=8))


def test_triton_from_an_engine_built_by_vggdeploy_build(
    tiny_bundle: Path, tmp_path: Path, trt10, gpu
) -> None:
    """The engine record exactly as `vggdeploy build` writes it (TensorRT double)."""
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
    assert {m["name"] for m in result.models} == {"vgg11_bn_onnx_fp32", "vgg11_bn_trt_fp32"}
    with pytest.raises(InputError, match="profile max batch 16"):
        package_triton(tiny_bundle, tmp_path / "r2", TritonOptions(max_batch=17))
    # and inspect reads the build facts from the same record
    from vggdeploy.inspect_bundle import inspect_bundle

    engine = next(a for a in inspect_bundle(tiny_bundle)["artifacts"] if a["key"] == "engine.fp32")
    assert engine["host"]["compute_capability"] == gpu["compute_capability"]
    assert engine["host"]["tensorrt_version"] == trt10.__version__


def test_unpack_of_a_file_that_is_not_an_archive_is_one_line(tmp_path: Path, capsys) -> None:
    not_tar = tmp_path / "notes.txt"
    not_tar.write_text("hello\n")
    with pytest.raises(SystemExit) as exit_info:
        main(["unpack", str(not_tar), "-o", str(tmp_path / "out")])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "is not a readable tar archive" in err and "vggdeploy pack" in err
    assert not (tmp_path / "out").exists()


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
    bundle.save()
    models = plan_triton(Bundle.load(tiny_bundle), TritonOptions(max_batch=32))
    (trt,) = [m for m in models if m.platform == "tensorrt_plan"]
    assert trt.max_batch == 32
    assert list(trt.preferred_batch) == [1, 16]
    with pytest.raises(InputError, match="profile max batch 32"):
        plan_triton(Bundle.load(tiny_bundle), TritonOptions(max_batch=33))
