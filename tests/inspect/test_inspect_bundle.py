"""`vggdeploy inspect`: integrity checks, bare ONNX files, and whether engines can run here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vggdeploy import host
from vggdeploy.bundle import Bundle
from vggdeploy.cli import main
from vggdeploy.inspection import inspect_bundle, inspect_path
from vggdeploy.records import EngineRecord


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(args)
    out, err = capsys.readouterr()
    return int(exc.value.code or 0), out, err


def engine_facts(
    cc: str = "8.7", trt: str = "10.16.1.11", hw: str = "none", vc: bool = False
) -> dict[str, object]:
    """The facts `vggdeploy build` records for an engine (see vggdeploy.exporter.engine)."""
    return {
        "kind": "tensorrt-engine",
        "precision": "fp16",
        "tensorrt_version": trt,
        "gpu": {"name": f"GPU sm{cc}", "compute_capability": cc, "jetson": False},
        "flags": {"strongly_typed": True, "hardware_compat": hw, "version_compatible": vc},
    }


def engine_record(**kwargs: object) -> EngineRecord:
    facts = engine_facts(**kwargs)  # type: ignore[arg-type]
    return EngineRecord.model_validate(
        {**facts, "path": "model.fp16.engine", "sha256": "0" * 64, "size": 1}
    )


def add_fake_engine(root: Path, key: str = "engine.fp16", **facts: object) -> None:
    bundle = Bundle.load(root)
    name = f"model.{key.split('.', 1)[1]}.engine"
    (root / name).write_bytes(b"not a real engine, but bytes with a sha256")
    bundle.add_artifact(key, name, **{**engine_facts(), **facts})


def test_clean_bundle_passes(tiny_bundle_ro: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(["inspect", str(tiny_bundle_ro)], capsys)
    assert code == 0
    assert "onnx.fp32" in out and "ok" in out
    assert "KiB" in out or "MiB" in out  # sizes via report.tables.mib
    info = inspect_bundle(tiny_bundle_ro)
    assert info["ok"] and info["artifacts"][0]["inputs"][0]["shape"] == ["batch", 3, 32, 32]
    assert info["untracked_files"] == []  # the manifest lock file is not an untracked file


def test_tampered_artifact_is_caught(tiny_bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    onnx_path = tiny_bundle / "model.onnx"
    data = bytearray(onnx_path.read_bytes())
    data[-100] ^= 0xFF  # same size, different content: only the sha256 can tell
    onnx_path.write_bytes(bytes(data))
    code, out, err = run_cli(["inspect", str(tiny_bundle)], capsys)
    assert code == 2
    assert "tampered" in out and "onnx.fp32" in err
    info = inspect_bundle(tiny_bundle)
    assert not info["ok"]
    assert info["artifacts"][0]["status"] == "tampered"
    assert "sha256" in info["artifacts"][0]["detail"]


def test_missing_file_is_reported(tiny_bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tiny_bundle / "model.onnx").unlink()
    code, out, _ = run_cli(["inspect", "--json", "-", str(tiny_bundle)], capsys)
    assert code == 2
    info = json.loads(out)  # `--json -`: only JSON on standard output
    assert info["artifacts"][0]["status"] == "missing"
    assert info["problems"] == ["onnx.fp32: model.onnx is listed but missing"]


def test_json_file(
    tiny_bundle_ro: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dest = tmp_path / "inspect.json"
    code, out, _ = run_cli(["inspect", str(tiny_bundle_ro), "--json", str(dest)], capsys)
    assert code == 0
    assert "onnx.fp32" in out and not out.lstrip().startswith("{")  # the table still prints
    info = json.loads(dest.read_text())
    assert info["kind"] == "bundle" and info["ok"] and info["artifacts"][0]["key"] == "onnx.fp32"
    code, out, _ = run_cli(["inspect", str(tiny_bundle_ro / "model.onnx"), "--json", "-"], capsys)
    assert code == 0 and json.loads(out)["kind"] == "onnx"
    code, _, err = run_cli(["inspect", str(tiny_bundle_ro), "--json"], capsys)
    assert code == 2 and "--json" in err  # FILE is required: no boolean flag


def test_manifest_path_outside_bundle_is_refused(
    tiny_bundle: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest_path = tiny_bundle / "manifest.json"
    data = json.loads(manifest_path.read_text())
    data["artifacts"]["onnx.fp32"]["path"] = "../elsewhere/model.onnx"
    manifest_path.write_text(json.dumps(data))
    code, _, err = run_cli(["inspect", str(tiny_bundle)], capsys)
    assert code == 1 and "artifacts.onnx.fp32.path" in err and "leaves the bundle" in err


def test_artifact_linked_out_of_the_bundle_is_a_problem(tiny_bundle: Path, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere.onnx"
    (tiny_bundle / "model.onnx").rename(outside)
    (tiny_bundle / "model.onnx").symlink_to(outside)
    info = inspect_bundle(tiny_bundle)
    assert info["artifacts"][0]["status"] == "bad path"
    assert not info["ok"]


def test_bare_onnx(tiny_bundle_ro: Path, capsys: pytest.CaptureFixture[str]) -> None:
    info = inspect_path(tiny_bundle_ro / "model.onnx")
    assert info["kind"] == "onnx"
    assert info["opset"] == 18
    assert info["inputs"] == [{"name": "input", "shape": ["batch", 3, 32, 32], "dtype": "float32"}]
    assert info["outputs"][0]["name"] == "logits"
    assert info["vggdeploy_metadata"]["vggdeploy.model"] == "vgg11_bn"
    assert info["op_histogram"]["Conv"] == 8  # vgg11: 8 conv layers
    assert info["qdq_nodes"] == 0
    assert "float" in info["initializer_dtypes"]
    code, out, _ = run_cli(["inspect", str(tiny_bundle_ro / "model.onnx")], capsys)
    assert code == 0 and "opset 18" in out and "Q/DQ nodes: 0" in out


def test_qdq_nodes_are_counted(tmp_path: Path) -> None:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    scale = numpy_helper.from_array(np.array(0.1, np.float32), "scale")
    zero = numpy_helper.from_array(np.array(0, np.int8), "zero")
    graph = helper.make_graph(
        [
            helper.make_node("QuantizeLinear", ["x", "scale", "zero"], ["q"]),
            helper.make_node("DequantizeLinear", ["q", "scale", "zero"], ["y"]),
        ],
        "qdq",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
        [scale, zero],
    )
    path = tmp_path / "qdq.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    info = inspect_path(path)
    assert info["qdq_nodes"] == 2
    assert info["initializer_dtypes"]["int8"]["count"] == 1


def test_engine_needs_tensorrt_and_matching_gpu(tiny_bundle: Path) -> None:
    add_fake_engine(tiny_bundle)
    info = inspect_bundle(tiny_bundle)
    assert info["ok"]  # integrity is fine; running it here is a separate question
    engine = next(a for a in info["artifacts"] if a["key"] == "engine.fp16")
    assert engine["host"]["compute_capability"] == "8.7"
    # inspect's verdict is host.check_engine's, on this host
    record = Bundle.load(tiny_bundle).artifacts["engine.fp16"]
    assert isinstance(record, EngineRecord)
    verdict = host.check_engine(record)
    assert engine["host"]["runnable"] == verdict.runnable
    assert engine["host"]["reasons"] == list(verdict.reasons)
    if info["host"]["tensorrt"] is None:
        assert not engine["host"]["runnable"]
        assert any("TensorRT" in r for r in engine["host"]["reasons"])


def probe(trt: str | None, *ccs: str) -> host.HostProbe:
    return host.HostProbe(
        trt,
        None if trt else "TensorRT is not importable (ImportError)",
        tuple(host.Gpu(f"GPU sm{cc}", cc) for cc in ccs),
        None if ccs else "no NVIDIA GPU found",
    )


RECORD = engine_record(cc="8.7", trt="10.16.1.11")


def test_engine_host_rules() -> None:
    """The rules inspect shows (host.check_engine, which TrtRuntime uses too)."""
    check = host.check_engine
    assert check(RECORD, probe("10.16.1.11", "8.7")).runnable
    # other compute capability
    other_gpu = check(RECORD, probe("10.16.1.11", "8.9"))
    assert not other_gpu.runnable and "compute capability 8.7" in other_gpu.reasons[0]
    # hardware-compatible engines run on any Ampere or newer GPU, not on Turing
    ampere = engine_record(hw="ampere+")
    assert check(ampere, probe("10.16.1.11", "8.9")).runnable
    assert not check(ampere, probe("10.16.1.11", "7.5")).runnable
    # other TensorRT version
    other_trt = check(RECORD, probe("10.3.0", "8.7"))
    assert not other_trt.runnable and "built with TensorRT 10.16.1.11" in other_trt.reasons[0]
    # version-compatible engines run on the same or later releases of their major version, and
    # across majors only 8 -> 10 and 10 -> 11 (NVIDIA's TensorRT 11.4.1 support matrix)
    vc = engine_record(vc=True)
    assert check(vc, probe("10.17.0", "8.7")).runnable
    assert not check(vc, probe("10.3.0", "8.7")).runnable
    assert check(vc, probe("11.4.0", "8.7")).runnable
    assert not check(vc, probe("12.0.0", "8.7")).runnable
    assert not check(engine_record(trt="8.6.1", vc=True), probe("11.4.0", "8.7")).runnable
    assert not check(engine_record(trt="11.4.0", vc=True), probe("10.16.1.11", "8.7")).runnable
    assert host.version_incompatibility(vc, "11.4.0") is None
    assert "8 -> 10 and 10 -> 11" in host.version_incompatibility(vc, "12.0.0")
    # nothing here at all: both reasons are given
    assert len(check(RECORD, probe(None)).reasons) == 2


def test_bare_engine_without_tensorrt(
    tiny_bundle: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    add_fake_engine(tiny_bundle)
    info = inspect_path(tiny_bundle / "model.fp16.engine")
    assert info["kind"] == "engine" and info["size"] > 0 and len(info["sha256"]) == 64
    assert info["manifest_record"]["key"] == "engine.fp16"
    assert info["manifest_record"]["sha256_matches"]
    assert info["manifest_record"]["compute_capability"] == "8.7"
    if info["host"]["tensorrt"] is None:
        assert not info["tensorrt"]["read"] and "opaque" in info["tensorrt"]["why"]
    code, out, _ = run_cli(["inspect", str(tiny_bundle / "model.fp16.engine")], capsys)
    assert code == 0 and "engine.fp16" in out


def test_unknown_file_kind(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("hello")
    code, _, err = run_cli(["inspect", str(path)], capsys)
    assert code == 1 and err.startswith("error:") and "bundle folder" in err


@pytest.mark.parametrize("names_file", ["tensorrt-10.16.1.11.names", "tensorrt-11.4.0.106.names"])
def test_engine_header_uses_only_real_tensorrt_names(names_file: str) -> None:
    import ast
    import inspect as pyinspect

    import vggdeploy.inspection as module

    data = Path(__file__).resolve().parents[1] / "data" / "trt-api" / names_file
    lines = data.read_text().split()
    exact = set(lines)
    missing = [
        n for n in module.TENSORRT_API if n not in exact and not any(x.endswith(n) for x in lines)
    ]
    assert not missing, f"not in {names_file}: {missing}"
    # and the code touches no attribute of trt/engine/runtime outside that list
    tree = ast.parse(pyinspect.getsource(module.read_engine_header))
    used = {
        node.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, (ast.Name, ast.Attribute))
        and (getattr(node.value, "id", None) in ("trt", "engine", "runtime") or
             getattr(node.value, "attr", None) in ("Logger", "TensorIOMode"))
    }  # fmt: skip
    strings = {
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and node.value.isidentifier()
    }
    assert {"deserialize_cuda_engine", "num_io_tensors", "get_tensor_profile_shape"} <= used
    assert used | (strings & set(module.TENSORRT_API)) <= set(module.TENSORRT_API), used - set(
        module.TENSORRT_API
    )
