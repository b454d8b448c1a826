"""`vggdeploy build`: TensorRT engines for fp32/fp16/int8 on the 10.x and 11.x APIs (test double).

Every test that touches TensorRT runs once per API generation (the `trt` fixture). What the
double does and does not model is written in tests/trt_double/fake_tensorrt.py.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vggdeploy.bundle import Bundle, sha256_file
from vggdeploy.errors import BundleError, CheckFailedError, InputError, RuntimeUnavailableError
from vggdeploy.exporter.engine import (
    BuildOptions,
    ProfileSpec,
    _check_profiles,
    build_engine,
    build_profiles,
    check_precision,
    layer_precision,
    parse_profile,
    parse_size,
)
from vggdeploy.metrics import compare_arrays

# trt, trt10 (the TensorRT double per API generation), gpu, precision_bundle(_ro)
pytest_plugins = ("trt_double.fixtures",)

ONNX_KEY = {"fp32": "onnx.fp32", "fp16": "onnx.fp16", "int8": "onnx.int8"}


def plan_header(path: Path) -> dict:
    """The double's plan header (what the fake builder was really given)."""
    data = path.read_bytes()
    (size,) = struct.unpack("<I", data[4:8])
    return json.loads(data[8 : 8 + size])


def ort_logits(onnx_path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    return session.run(["logits"], {"input": x})[0]


# -- end to end: every precision, both generations ------------------------------------------------


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_build_writes_raw_engine_and_full_manifest_entry(trt, precision, precision_bundle) -> None:
    bundle = Bundle.load(precision_bundle)
    onnx_path = bundle.artifact_path(ONNX_KEY[precision])
    record = build_engine(bundle, BuildOptions(precision=precision))

    engine = precision_bundle / f"model.{precision}.engine"
    assert engine.is_file() and not list(precision_bundle.glob(".*.partial"))
    assert engine.read_bytes()[:4] == b"ftrt", "the plan must start the file: nothing prepended"
    saved = Bundle.load(precision_bundle).artifacts[f"engine.{precision}"].to_json_dict()
    assert saved == record.to_json_dict()
    assert saved["sha256"] == sha256_file(engine) and saved["size"] == engine.stat().st_size
    assert saved["kind"] == "tensorrt-engine" and saved["precision"] == precision
    assert saved["tensorrt_version"] == trt.__version__
    assert saved["gpu"] == {
        "name": "NVIDIA A100-SXM4-80GB",
        "compute_capability": "8.0",
        "jetson": False,
    }
    assert saved["cuda_version"] == "12.8"
    assert saved["source_onnx"] == {
        "artifact": ONNX_KEY[precision],
        "path": onnx_path.name,
        "sha256": sha256_file(onnx_path),
    }
    assert saved["profiles"] == [
        {"input": {"min": [1, 3, 32, 32], "opt": [8, 3, 32, 32], "max": [32, 3, 32, 32]}}
    ]
    assert saved["flags"]["strongly_typed"] is True
    assert saved["flags"]["hardware_compat"] == "none"
    assert saved["flags"]["version_compatible"] is False
    assert saved["build_seconds"] >= 0 and saved["built_at"].endswith("+00:00")
    check = saved["precision_check"]
    assert check["passed"] and check["expected"] == precision
    if precision == "int8":
        assert check["by_precision"]["int8"] >= 8  # the 8 Q/DQ convolutions of vgg11
    else:
        assert check["by_precision"] == {precision: check["convolutions"]}

    # The TensorRT runtime consumes it and agrees with ONNX Runtime on the same ONNX.
    from vggdeploy.runtimes.trt import TrtRuntime

    x = np.random.default_rng(1).standard_normal((5, 3, 32, 32), dtype=np.float32)
    with TrtRuntime(precision_bundle, precision=precision) as runtime:
        got = runtime.infer({"input": x})["logits"]
    figures = compare_arrays(ort_logits(onnx_path, x), got)
    assert figures["max_abs"] == 0.0


def test_validate_consumes_the_engines(trt, precision_bundle) -> None:
    from vggdeploy.runtimes.registry import parse_spec
    from vggdeploy.validate import validate_bundle

    bundle = Bundle.load(precision_bundle)
    for precision in ("fp32", "fp16"):
        build_engine(bundle, BuildOptions(precision=precision))
    report = validate_bundle(
        precision_bundle, [parse_spec(f"tensorrt@{p}") for p in ("fp32", "fp16")]
    )
    assert [r.status for r in report.results] == ["compared", "compared"]
    assert report.passed, report


def test_network_is_strongly_typed_on_each_generation(trt, precision_bundle, monkeypatch) -> None:
    flags_seen = []
    original = trt.Builder.create_network

    def spy(self, flags=0):
        flags_seen.append(flags)
        return original(self, flags)

    monkeypatch.setattr(trt.Builder, "create_network", spy)
    build_engine(Bundle.load(precision_bundle), BuildOptions(precision="fp16"))
    if trt.__version__.startswith("10."):
        assert flags_seen == [1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)]
    else:
        assert flags_seen == [0]  # always strongly typed; the flag is accepted but ignored


def test_weakly_typed_10x_network_fails_the_fp16_check(
    trt10, precision_bundle, monkeypatch
) -> None:
    """Without STRONGLY_TYPED, TensorRT 10 ignores the graph's fp16 types: the check catches it."""
    import vggdeploy.exporter.engine as engine_module

    monkeypatch.setattr(engine_module, "network_creation_flags", lambda trt: 0)
    with pytest.raises(CheckFailedError, match=r"fp16 engine runs \d+ of \d+ convolutions in fp32"):
        build_engine(Bundle.load(precision_bundle), BuildOptions(precision="fp16"))
    assert not (precision_bundle / "model.fp16.engine").exists()


def _replace_artifact(root: Path, key: str, source: Path, name: str) -> None:
    bundle = Bundle.load(root)
    shutil.copy(source, root / name)
    precision = key.split(".")[1]
    bundle.add_artifact(key, name, kind="onnx", precision=precision)


def test_fp16_onnx_that_is_really_fp32_is_a_failure(trt, precision_bundle) -> None:
    _replace_artifact(
        precision_bundle, "onnx.fp16", precision_bundle / "model.onnx", "model.fp16.onnx"
    )
    before = (precision_bundle / "manifest.json").read_text()
    with pytest.raises(
        CheckFailedError, match=r"model.fp16.onnx has no fp16 convolutions \(8 fp32\)"
    ):
        build_engine(Bundle.load(precision_bundle), BuildOptions(precision="fp16"))
    assert not (precision_bundle / "model.fp16.engine").exists()
    assert (precision_bundle / "manifest.json").read_text() == before


def test_fp16_with_layers_kept_in_fp32_passes(trt, precision_bundle) -> None:
    """convert_fp16 may keep overflow-prone layers in fp32 on purpose: that is not a failure."""
    import onnx

    from vggdeploy.exporter.fp16 import convert_fp16

    model = onnx.load(str(precision_bundle / "model.onnx"))
    first_conv = next(n.name for n in model.graph.node if n.op_type == "Conv")
    convert_fp16(Bundle.load(precision_bundle), keep_fp32_nodes=[first_conv], samples=2)
    record = build_engine(Bundle.load(precision_bundle), BuildOptions(precision="fp16"))
    check = record.precision_check
    assert check["onnx_convolutions"] == {"fp16": 7, "fp32": 1}
    assert check["by_precision"]["fp16"] >= 7 and check["by_precision"]["fp32"] >= 1


def test_int8_onnx_without_qdq_is_a_failure(trt, precision_bundle) -> None:
    _replace_artifact(
        precision_bundle, "onnx.int8", precision_bundle / "model.onnx", "model.int8.onnx"
    )
    with pytest.raises(CheckFailedError, match="has no int8 convolutions .*vggdeploy calibrate"):
        build_engine(Bundle.load(precision_bundle), BuildOptions(precision="int8"))


@pytest.mark.parametrize(
    ("precision", "hint"),
    [
        ("fp16", "vggdeploy convert .* --precision fp16"),
        ("int8", "vggdeploy calibrate .* --images DIR"),
    ],
)
def test_missing_precision_onnx_points_to_the_command(trt, tiny_bundle, precision, hint) -> None:
    with pytest.raises(BundleError, match=hint):
        build_engine(Bundle.load(tiny_bundle), BuildOptions(precision=precision))


# -- the precision check on inspector JSON ----------------------------------------------------------


def _inspector(*types: str) -> str:
    layers = [
        {"Name": f"conv{i}", "LayerType": "CaskConvolution", "Inputs": [{"Format/Datatype": t}]}
        for i, t in enumerate(types)
    ]
    layers.append(
        {"Name": "pool", "LayerType": "CaskPooling", "Inputs": [{"Format/Datatype": "Float"}]}
    )
    return json.dumps({"Layers": layers, "Bindings": ["input", "logits"]})


def test_layer_precision_reads_terse_and_long_formats() -> None:
    assert layer_precision("Half") == "fp16"
    assert layer_precision("Channel major FP16 format where channel % 8 == 0") == "fp16"
    assert layer_precision("Row major linear FP32") == "fp32"
    assert layer_precision("Float") == "fp32"
    assert layer_precision("Int8") == "int8"
    assert layer_precision("Channel major INT8 format where channel % 32 == 0") == "int8"


def test_check_precision_rules() -> None:
    assert check_precision(_inspector("Half", "Half"), "fp16")["passed"]
    with pytest.raises(CheckFailedError, match="1 of 2 convolutions in fp32 .*conv1"):
        check_precision(_inspector("Half", "Float"), "fp16")
    with pytest.raises(CheckFailedError, match="in fp16"):
        check_precision(_inspector("Float", "Half"), "fp32")
    facts = {"by_precision": {"int8": 2}}
    assert check_precision(_inspector("Int8", "Int8", "Float"), "int8", facts)["passed"]
    with pytest.raises(CheckFailedError, match="although model.int8.onnx types 2 as int8"):
        check_precision(_inspector("Int8", "Half"), "int8", facts)
    kept = {"by_precision": {"fp16": 1, "fp32": 1}}
    assert check_precision(_inspector("Half", "Float"), "fp16", kept)["passed"]
    with pytest.raises(CheckFailedError):
        check_precision(_inspector("Float", "Float"), "fp16", kept)
    with pytest.raises(CheckFailedError, match="layer names only"):
        check_precision(json.dumps({"Layers": ["a", "b"]}), "fp16")
    with pytest.raises(CheckFailedError, match="no convolution layers"):
        check_precision(json.dumps({"Layers": []}), "fp16")


# -- profiles ---------------------------------------------------------------------------------


def test_profile_parsing() -> None:
    assert parse_profile("b=1:8:32") == ProfileSpec((1, 8, 32))
    assert parse_profile("batch=4,h=224:320:512,w=224:256:512") == ProfileSpec(
        (4, 4, 4), (224, 320, 512), (224, 256, 512)
    )
    for bad in ("1:8:32", "b=1:x:3", "b=1:2", "h=224", "b=1:1:1,h=224"):
        with pytest.raises(InputError):
            parse_profile(bad)
    assert build_profiles((), batch=(None, None, 4)) == [ProfileSpec((1, 4, 4))]
    assert build_profiles((), batch=(2, None, None)) == [ProfileSpec((2, 8, 32))]
    assert build_profiles(()) == []
    with pytest.raises(InputError, match="not both"):
        build_profiles(("b=1:1:1",), batch=(1, None, None))


@pytest.mark.parametrize(
    ("profile", "message"),
    [
        (ProfileSpec((8, 4, 16)), r"min <= opt <= max, got 8:4:16"),
        (ProfileSpec((0, 1, 4)), "minimum batch 0 must be at least 1"),
        (ProfileSpec((1, 1, 4), (224,) * 3, (224,) * 3), "need a dense bundle"),
    ],
)
def test_bad_profiles_are_rejected_before_tensorrt(trt, precision_bundle, profile, message) -> None:
    with pytest.raises(InputError, match=message):
        build_engine(
            Bundle.load(precision_bundle), BuildOptions(precision="fp32", profiles=[profile])
        )


def test_tensorrt_rejects_inconsistent_profiles(trt) -> None:
    """What the real API does with min > opt or a wrong rank, and how the build reports it."""
    logger = trt.Logger()
    builder = trt.Builder(logger)
    profile = builder.create_optimization_profile()
    with pytest.raises(ValueError, match="opt is inconsistent"):
        profile.set_shape("input", (8, 3, 32, 32), (4, 3, 32, 32), (16, 3, 32, 32))
    with pytest.raises(ValueError, match="max is inconsistent"):
        profile.set_shape("input", (1, 3, 32, 32), (4, 3, 32, 32), (16, 3, 32))

    class Net:
        num_inputs = 1

        def get_input(self, i):
            return trt.ITensor("input", (-1, 3, 32, 32), trt.DataType.FLOAT)

    bad = [{"min": [8, 3, 32, 32], "opt": [4, 3, 32, 32], "max": [16, 3, 32, 32]}]
    with pytest.raises(InputError, match="rejected optimization profile 0: Shape provided for opt"):
        _check_profiles(trt, builder, Net(), "input", bad)


def test_several_profiles_and_dense_sizes(trt, tiny_dense_bundle_ro, tmp_path) -> None:
    root = tmp_path / "dense"
    shutil.copytree(tiny_dense_bundle_ro, root)
    profiles = [
        parse_profile("b=1:1:2,h=224:224:256,w=224:224:256"),
        parse_profile("b=1:2:4,h=256:320:320,w=224:288:320"),
    ]
    record = build_engine(Bundle.load(root), BuildOptions(precision="fp32", profiles=profiles))
    assert record.profiles[1] == {
        "input": {"min": [1, 3, 256, 224], "opt": [2, 3, 320, 288], "max": [4, 3, 320, 320]}
    }
    assert plan_header(root / "model.fp32.engine")["profiles"][1]["input"][2] == [4, 3, 320, 320]
    with pytest.raises(InputError, match="multiple of 32"):
        build_engine(
            Bundle.load(root),
            BuildOptions(precision="fp32", profiles=[parse_profile("b=1,h=224:240:256,w=224")]),
        )


# -- builder options -----------------------------------------------------------------------------


def test_parse_size_units() -> None:
    assert parse_size("4GiB") == 4 * 2**30
    assert parse_size("512MiB") == 512 * 2**20
    assert parse_size("2GB") == 2 * 10**9
    assert parse_size("1.5G") == int(1.5 * 2**30)
    for bad in ("4", "lots", "-1GiB", "4XB", "0MiB"):
        with pytest.raises(InputError):
            parse_size(bad)


def test_options_reach_tensorrt_and_the_manifest(trt, precision_bundle) -> None:
    options = BuildOptions(
        precision="fp16",
        workspace=parse_size("1GiB"),
        opt_level=5,
        hardware_compat="ampere+",
        version_compatible=True,
        exclude_lean_runtime=True,
    )
    record = build_engine(Bundle.load(precision_bundle), options)
    header = plan_header(precision_bundle / "model.fp16.engine")
    assert header["workspace"] == 2**30 and header["opt_level"] == 5
    assert header["hardware"] == int(trt.HardwareCompatibilityLevel.AMPERE_PLUS)
    assert header["version_compatible"] and header["exclude_lean"]
    assert header["verbosity"] == int(trt.ProfilingVerbosity.DETAILED)
    assert record.flags.to_json_dict() == {
        "strongly_typed": True,
        "network_creation_flags": record.flags.network_creation_flags,
        "workspace_bytes": 2**30,
        "builder_optimization_level": 5,
        "hardware_compat": "ampere+",
        "version_compatible": True,
        "exclude_lean_runtime": True,
        "profiling_verbosity": "detailed",
        "tf32": False,
        "built_with": "polygraphy 0.53.6",
    }
    assert header["tf32"] is False  # Polygraphy's CreateConfig cleared TensorRT's default
    build_engine(
        Bundle.load(precision_bundle), BuildOptions(precision="fp32", hardware_compat="same-cc")
    )
    header = plan_header(precision_bundle / "model.fp32.engine")
    assert header["hardware"] == int(trt.HardwareCompatibilityLevel.SAME_COMPUTE_CAPABILITY)


def test_option_errors() -> None:
    with pytest.raises(InputError, match="only applies to version-compatible"):
        BuildOptions(exclude_lean_runtime=True)
    with pytest.raises(InputError, match="out of range: use 0"):
        BuildOptions(opt_level=7)
    with pytest.raises(InputError, match="not supported"):
        BuildOptions(precision="bf16")


def test_hardware_compat_needs_ampere_and_no_jetson(trt, precision_bundle, gpu) -> None:
    gpu.update(name="Tesla T4", compute_capability="7.5")
    with pytest.raises(InputError, match="needs an Ampere or later GPU"):
        build_engine(
            Bundle.load(precision_bundle), BuildOptions(precision="fp32", hardware_compat="ampere+")
        )
    gpu.update(name="Orin", compute_capability="8.7", jetson=True)
    with pytest.raises(InputError, match="not supported on Jetson"):
        build_engine(
            Bundle.load(precision_bundle), BuildOptions(precision="fp32", hardware_compat="same-cc")
        )


# -- timing cache -------------------------------------------------------------------------------------


def test_timing_cache_saved_reused_and_mismatch_reported(
    trt, precision_bundle, tmp_path, gpu
) -> None:
    cache = tmp_path / "caches" / "a100.cache"
    first = build_engine(
        Bundle.load(precision_bundle), BuildOptions(precision="fp16", timing_cache=cache)
    )
    assert cache.is_file() and first.timing_cache["loaded"] is False
    size = cache.stat().st_size
    second = build_engine(
        Bundle.load(precision_bundle), BuildOptions(precision="fp32", timing_cache=cache)
    )
    assert second.timing_cache == {
        "path": str(cache),
        "loaded": True,
        "loaded_size": size,
        "saved_size": cache.stat().st_size,
    }
    assert cache.stat().st_size > size  # the fp32 build added its tactics to the same cache

    gpu.update(name="NVIDIA GeForce RTX 3090", compute_capability="8.6")
    before = cache.read_bytes()
    with pytest.raises(
        InputError, match="timing cache .* was rejected by TensorRT .*different device"
    ):
        build_engine(
            Bundle.load(precision_bundle), BuildOptions(precision="fp16", timing_cache=cache)
        )
    assert cache.read_bytes() == before


def test_timing_cache_from_another_tensorrt_version_is_reported(
    precision_bundle, tmp_path, monkeypatch
) -> None:
    from trt_double import install

    cache = tmp_path / "t.cache"
    install(monkeypatch, "10.16")
    build_engine(Bundle.load(precision_bundle), BuildOptions(precision="fp32", timing_cache=cache))
    install(monkeypatch, "11.4")
    with pytest.raises(
        InputError,
        match="rejected by TensorRT .*Version tag does not match.*timing cache will not be used",
    ):
        build_engine(
            Bundle.load(precision_bundle), BuildOptions(precision="fp32", timing_cache=cache)
        )


# -- failures users hit --------------------------------------------------------------------------------


def test_out_of_memory_suggests_smaller_workspace_or_batch(trt, precision_bundle, gpu) -> None:
    gpu["total_memory"] = 1 << 20
    with pytest.raises(
        RuntimeUnavailableError, match="ran out of memory .*--workspace .*--max-batch"
    ):
        build_engine(Bundle.load(precision_bundle), BuildOptions(precision="fp32", workspace=2**30))
    assert not (precision_bundle / "model.fp32.engine").exists()


def test_unsupported_op_lists_the_failing_nodes(trt, precision_bundle) -> None:
    import onnx

    model = onnx.load(str(precision_bundle / "model.onnx"))
    relus = [n for n in model.graph.node if n.op_type == "Relu"]
    for node in relus[:2]:
        node.op_type, node.domain = "FancyRelu", "com.example"
    model.opset_import.append(onnx.helper.make_opsetid("com.example", 1))
    onnx.save(model, str(precision_bundle / "model.onnx"))
    bundle = Bundle.load(precision_bundle)
    bundle.add_artifact("onnx.fp32", "model.onnx", kind="onnx", precision="fp32")
    with pytest.raises(InputError) as info:
        build_engine(bundle, BuildOptions(precision="fp32"))
    text = str(info.value)
    assert f"does not support op FancyRelu in model.onnx: node {relus[0].name} (FancyRelu)" in text
    assert relus[1].name in text and "\n" not in text


def test_a_file_that_is_not_onnx_is_a_parser_error(trt, precision_bundle) -> None:
    (precision_bundle / "model.onnx").write_bytes(b"not a model")
    bundle = Bundle.load(precision_bundle)
    bundle.add_artifact("onnx.fp32", "model.onnx", kind="onnx", precision="fp32")
    # The bundle's artifact check (bundle.artifact_path, verify=True) now refuses it before
    # TensorRT's parser sees it; either way it is one line naming the file.
    with pytest.raises(
        (InputError, BundleError),
        match="(ONNX parser failed on model.onnx: .*MODEL_DESERIALIZE_FAILED|model.onnx "
        r"\(onnx.fp32\) is not an ONNX model)",
    ):
        build_engine(bundle, BuildOptions(precision="fp32"))


def test_no_tensorrt_says_how_to_install(precision_bundle, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(RuntimeUnavailableError, match="pip install tensorrt.*JetPack"):
        build_engine(Bundle.load(precision_bundle), BuildOptions(precision="fp32"))


def test_no_gpu_is_a_clear_error(trt, precision_bundle, gpu) -> None:
    gpu["available"] = False
    with pytest.raises(RuntimeUnavailableError, match="needs an NVIDIA GPU"):
        build_engine(Bundle.load(precision_bundle), BuildOptions(precision="fp32"))


def test_tensorrt_log_follows_verbosity(trt, caplog) -> None:
    from vggdeploy.runtimes.trt import make_logger

    sev = trt.ILogger.Severity
    for verbosity, shown in ((0, {"E", "W"}), (1, {"E", "W", "I"}), (2, {"E", "W", "I", "V"})):
        caplog.clear()
        logger = make_logger(trt, verbosity)
        with caplog.at_level(logging.DEBUG, logger="vggdeploy.tensorrt"):
            for level, tag in (
                (sev.ERROR, "E"),
                (sev.WARNING, "W"),
                (sev.INFO, "I"),
                (sev.VERBOSE, "V"),
            ):
                logger.log(level, f"msg {tag}")
        assert {r.getMessage()[-1] for r in caplog.records} == shown
        assert logger.errors == ["msg E"]


# -- the command line: one clean line per user error ------------------------------------------------


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    from vggdeploy.cli import main

    # main() configures logging (root handler, torch's level at -vv); put it back afterwards so
    # nothing logs into pytest's closed capture stream at exit.
    root = logging.getLogger()
    handlers = list(root.handlers)
    levels = {n: logging.getLogger(n).level for n in ("", "torch", "onnxscript", "onnx_ir")}
    try:
        with pytest.raises(SystemExit) as info:
            main(args)
    finally:
        root.handlers[:] = handlers
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
    out, err = capsys.readouterr()
    return info.value.code, out, err


def test_cli_build_success(trt, precision_bundle, capsys, tmp_path) -> None:
    code, out, err = run_cli(
        ["build", str(precision_bundle), "--precision", "int8", "--max-batch", "4",
         "--workspace", "2GiB", "--timing-cache", str(tmp_path / "tc"), "--opt-level", "2"],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    assert "model.int8.engine" in out and "precision check" in out and "passed" in out
    record = Bundle.load(precision_bundle).artifacts["engine.int8"]
    assert record.profiles[0]["input"]["max"] == [4, 3, 32, 32]
    assert record.flags.workspace_bytes == 2 * 2**30
    assert (tmp_path / "tc").is_file()


@pytest.mark.parametrize(
    ("args", "message", "exit_code"),
    [
        (["--workspace", "lots"], "size 'lots' is not understood", 1),
        (["--min-batch", "8", "--opt-batch", "2"], "min <= opt <= max", 1),
        (["--profile", "b=1:2"], "MIN:OPT:MAX", 1),
        (["--exclude-lean-runtime"], "--version-compatible", 1),
        (["--min-size", "224"], "need a dense bundle", 1),
    ],
)
def test_cli_user_errors_are_one_line(
    trt, precision_bundle, capsys, args, message, exit_code
) -> None:
    code, out, err = run_cli(["build", str(precision_bundle), "--precision", "fp32", *args], capsys)
    assert code == exit_code
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err, err
    assert "Traceback" not in err


def test_cli_precision_failure_exits_2(trt, precision_bundle, capsys) -> None:
    _replace_artifact(
        precision_bundle, "onnx.fp16", precision_bundle / "model.onnx", "model.fp16.onnx"
    )
    code, _out, err = run_cli(["build", str(precision_bundle)], capsys)
    assert code == 2 and "no fp16 convolutions" in err and err.count("\n") == 1


def test_cli_int8_without_calibration(trt, tiny_bundle, capsys) -> None:
    code, _out, err = run_cli(["build", str(tiny_bundle), "--precision", "int8"], capsys)
    assert code == 1 and "vggdeploy calibrate" in err and err.count("\n") == 1


def test_cli_verbose_shows_tensorrt_info(
    trt, precision_bundle, capsys, caplog, monkeypatch
) -> None:
    original = trt.Builder.build_serialized_network

    def chatty(self, network, config):
        self.logger.log(trt.ILogger.Severity.INFO, "[MemUsageChange] Init builder kernel library")
        self.logger.log(trt.ILogger.Severity.VERBOSE, "Tactic timing details")
        return original(self, network, config)

    monkeypatch.setattr(trt.Builder, "build_serialized_network", chatty)
    for flags, info, verbose in (([], False, False), (["-v"], True, False), (["-vv"], True, True)):
        caplog.clear()
        with caplog.at_level(logging.DEBUG, logger="vggdeploy.tensorrt"):
            code, _out, err = run_cli(
                [*flags, "build", str(precision_bundle), "--precision", "fp32"], capsys
            )
        assert code == 0, err
        messages = " ".join(
            r.getMessage() for r in caplog.records if r.name == "vggdeploy.tensorrt"
        )
        assert ("MemUsageChange" in messages) == info
        assert ("Tactic timing" in messages) == verbose


def test_cli_subprocess_without_tensorrt(precision_bundle_ro) -> None:
    """The real environment (no TensorRT here): one line with how to install, exit 1."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "vggdeploy",
            "build",
            str(precision_bundle_ro),
            "--precision",
            "fp32",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    try:
        import tensorrt  # noqa: F401

        pytest.skip("TensorRT is installed here")
    except ImportError:
        pass
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1 and "pip install tensorrt" in proc.stderr
    assert "JetPack" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("generation", ["10.16", "11.4"])
def test_cli_subprocess_with_the_double(precision_bundle, generation) -> None:
    shim = Path(__file__).parents[1] / "trt_double" / "shim"
    env = {**os.environ, "PYTHONPATH": str(shim), "VGGDEPLOY_TEST_TRT_GENERATION": generation}
    proc = subprocess.run(
        [sys.executable, "-m", "vggdeploy", "build", str(precision_bundle), "--precision", "fp16"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    record = Bundle.load(precision_bundle).artifacts["engine.fp16"]
    assert record.tensorrt_version.startswith(generation)


def test_build_failure_messages(trt10) -> None:
    from vggdeploy.exporter.engine import _build_failure

    options = BuildOptions(precision="fp32")
    oom = _build_failure(
        trt10, [], ["Requested amount of GPU memory (1 bytes) could not be allocated."], options
    )
    assert "ran out of memory" in str(oom) and "--workspace 1GiB" in str(oom)
    other = _build_failure(trt10, ["10: Could not find any implementation for node X"], [], options)
    assert "failed to build the engine (10: Could not find any implementation" in str(other)
    assert "-vv" in str(other)


def test_corrupt_timing_cache_is_reported(trt, precision_bundle, tmp_path) -> None:
    cache = tmp_path / "broken.cache"
    cache.write_bytes(b"\x00garbage")
    with pytest.raises(InputError, match="Magic tag does not match.*delete it or choose another"):
        build_engine(
            Bundle.load(precision_bundle), BuildOptions(precision="fp32", timing_cache=cache)
        )
    assert cache.read_bytes() == b"\x00garbage"
