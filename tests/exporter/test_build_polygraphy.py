"""`vggdeploy build` through Polygraphy's TensorRT loaders, run against the TensorRT double
(tests/trt_double) for the 10.x and 11.x API generations: TF32, the shared timing cache, the
one TensorRT logger, the DLA parser flag."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from vggdeploy.bundle import Bundle
from vggdeploy.exporter.engine import BuildOptions, build_engine

# trt (the TensorRT double per API generation), gpu, precision_bundle(_ro)
pytest_plugins = ("trt_double.fixtures",)


def plan_header(path: Path) -> dict:
    data = path.read_bytes()
    (size,) = struct.unpack("<I", data[4:8])
    return json.loads(data[8 : 8 + size])


@pytest.mark.parametrize("tf32", [False, True])
def test_vgg11_build_through_polygraphy_clears_tf32_unless_asked(trt, precision_bundle, tf32):
    record = build_engine(Bundle.load(precision_bundle), BuildOptions(precision="fp32", tf32=tf32))
    assert plan_header(precision_bundle / record.path)["tf32"] is tf32
    assert record.flags.tf32 is tf32
    assert record.flags.built_with.startswith("polygraphy ")
    manifest = json.loads((precision_bundle / "manifest.json").read_text())
    assert manifest["artifacts"]["engine.fp32"]["flags"]["tf32"] is tf32


def test_timing_cache_merges_what_another_build_saved_meanwhile(trt, precision_bundle, tmp_path):
    """Tests the double's timing cache with Polygraphy's save: entries another process wrote
    to the file during this build survive (locked, `combine`d: backend/trt/loader.py)."""
    cache = tmp_path / "t.cache"
    build_engine(Bundle.load(precision_bundle), BuildOptions(precision="fp16", timing_cache=cache))
    real_build = trt.Builder.build_serialized_network

    def build_while_another_saves(self, network, config):
        blob = bytes(cache.read_bytes())
        other = config.create_timing_cache(blob)
        other._entries["another-build|conv|fake"] = "tactic-x"
        cache.write_bytes(bytes(other.serialize()))
        return real_build(self, network, config)

    trt.Builder.build_serialized_network = build_while_another_saves
    try:
        build_engine(
            Bundle.load(precision_bundle), BuildOptions(precision="fp32", timing_cache=cache)
        )
    finally:
        trt.Builder.build_serialized_network = real_build
    text = cache.read_bytes().decode("latin-1")
    assert "another-build|conv|fake" in text  # the other build's entry
    assert "|FP32" in text or "Float" in text or "fp32" in text.lower()


def test_one_tensorrt_logger_for_builds_runtimes_and_polygraphy(trt, precision_bundle):
    from polygraphy.backend.trt import util as poly_util

    from vggdeploy.runtimes._trt import trt_logger

    build_engine(Bundle.load(precision_bundle), BuildOptions(precision="fp16"))
    first = poly_util.get_trt_logger()
    build_engine(Bundle.load(precision_bundle), BuildOptions(precision="fp32", verbosity=2))
    assert poly_util.get_trt_logger() is first
    assert first.threshold == 4  # the last build's -vv reached the one logger
    assert trt_logger(trt) is first


def test_dla_parse_sets_adjust_for_dla_where_the_release_has_it(trt, gpu, precision_bundle):
    """The double models OnnxParserFlag from the 10.16 C API reference (namespacenvonnxparser:
    ADJUST_FOR_DLA = 4) and the 11.4 DLA guide (dla-onnx-parser.html)."""
    gpu.update(name="Orin", compute_capability="8.7", jetson=True, dla_cores=2)
    seen = []
    real_parse = trt.OnnxParser.parse_from_file

    def spy(self, model):
        seen.append(self.flags)
        return real_parse(self, model)

    trt.OnnxParser.parse_from_file = spy
    try:
        build_engine(
            Bundle.load(precision_bundle),
            BuildOptions(precision="fp16", dla_core=0, gpu_fallback=True),
        )
        build_engine(Bundle.load(precision_bundle), BuildOptions(precision="fp16"))
    finally:
        trt.OnnxParser.parse_from_file = real_parse
    adjust = 1 << int(trt.OnnxParserFlag.ADJUST_FOR_DLA)
    native = 1 << int(trt.OnnxParserFlag.NATIVE_INSTANCENORM)
    assert seen[0] == adjust | native and seen[1] == native


def test_fp32_engines_with_tf32_are_judged_by_the_tf32_limits():
    from types import SimpleNamespace

    from vggdeploy.metrics import TOLERANCES
    from vggdeploy.validate import limits_key

    spec = SimpleNamespace(precision="fp32")
    built = lambda flags: {"built_with": {"flags": flags}}  # noqa: E731
    assert limits_key(spec, built({"tf32": True})) == "tf32"
    assert limits_key(spec, built({"tf32": False})) == "fp32"
    assert limits_key(spec, built({})) == "tf32"  # built before vggdeploy cleared TF32
    assert limits_key(spec, {"runtime": "ort"}) == "fp32"  # not an engine
    assert limits_key(SimpleNamespace(precision="fp16"), built({"tf32": True})) == "fp16"
    assert TOLERANCES["tf32"]["max_rel"] > TOLERANCES["fp32"]["max_rel"]
