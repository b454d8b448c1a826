"""`validate_bundle`'s outputs_cache: a target already run by this process on the same file,
runtime, options and random inputs is judged again from its outputs, exactly as a fresh run
judges it; anything that differs (the file, the inputs, the runtime) runs again."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from test_validate import perturb_onnx

from vggdeploy.bundle import Bundle
from vggdeploy.errors import BundleError
from vggdeploy.runtimes import onnxrt
from vggdeploy.runtimes.registry import parse_spec
from vggdeploy.validate import validate_bundle

FP32 = [parse_spec("onnxruntime:cpu", "fp32")]


def _loads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every ONNX Runtime load, by artifact."""
    loaded: list[str] = []
    original = onnxrt.OrtRuntime._load

    def counted(self):
        loaded.append(self.precision)
        return original(self)

    monkeypatch.setattr(onnxrt.OrtRuntime, "_load", counted)
    return loaded


def _table(report) -> list[tuple]:
    return [
        (r.label, r.status, r.inputs, r.passed, r.metrics, [c.to_dict() for c in r.checks])
        for r in report.results
    ]


def test_two_sessions_give_the_same_outputs_bit_for_bit(tiny_bundle_ro: Path) -> None:
    """What the reuse rests on (validate.REUSABLE): ONNX Runtime CPU, same file, options and
    inputs, two sessions: identical outputs."""
    from vggdeploy.runtimes.base import infer_array
    from vggdeploy.runtimes.registry import open_runtime

    bundle = Bundle.load(tiny_bundle_ro)
    x = np.random.default_rng(0).standard_normal((8, 3, 32, 32), dtype=np.float32)
    outs = []
    for _ in range(2):
        with open_runtime(bundle, FP32[0]) as runtime:
            outs.append(infer_array(runtime, x))
    assert np.array_equal(outs[0], outs[1])


def test_second_validation_reuses_and_judges_the_same(
    tiny_bundle_ro: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fresh = validate_bundle(tiny_bundle_ro, FP32, samples=8)
    loaded = _loads(monkeypatch)
    refs: dict = {}
    outs: dict = {}
    first = validate_bundle(
        tiny_bundle_ro, FP32, samples=8, reference_cache=refs, outputs_cache=outs
    )
    second = validate_bundle(
        tiny_bundle_ro, FP32, samples=8, reference_cache=refs, outputs_cache=outs
    )
    assert loaded == ["fp32"]  # the second validation did not load the file again
    assert len(outs) == 1
    assert _table(first) == _table(second) == _table(fresh)
    assert second.to_dict() == fresh.to_dict()
    assert second.summary() == fresh.summary()


def test_a_changed_file_is_refused_not_reused(
    tiny_bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sha256 is checked again before reusing, as loading the file checks it."""
    refs: dict = {}
    outs: dict = {}
    validate_bundle(tiny_bundle, FP32, samples=8, reference_cache=refs, outputs_cache=outs)
    path = Bundle.load(tiny_bundle).artifact_path("onnx.fp32")
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="does not match the sha256"):
        validate_bundle(tiny_bundle, FP32, samples=8, reference_cache=refs, outputs_cache=outs)


def test_other_inputs_or_another_file_run_again(
    tiny_bundle_ro: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loaded = _loads(monkeypatch)
    refs: dict = {}
    outs: dict = {}
    validate_bundle(tiny_bundle_ro, FP32, samples=8, reference_cache=refs, outputs_cache=outs)
    validate_bundle(tiny_bundle_ro, FP32, samples=4, reference_cache=refs, outputs_cache=outs)
    validate_bundle(
        tiny_bundle_ro, FP32, samples=8, seed=1, reference_cache=refs, outputs_cache=outs
    )
    assert loaded == ["fp32"] * 3
    # the same bundle folder with another model.onnx (re-exported, recorded): runs again
    other = tmp_path / "other"
    shutil.copytree(tiny_bundle_ro, other)
    again = validate_bundle(other, FP32, samples=8, reference_cache=refs, outputs_cache=outs)
    perturb_onnx(other)
    changed = validate_bundle(other, FP32, samples=8, reference_cache=refs, outputs_cache=outs)
    # the copy has the same bytes (sha256): reused; the changed file runs
    assert loaded == ["fp32"] * 4
    assert changed.results[0].metrics != again.results[0].metrics
    assert changed.to_dict() == {**validate_bundle(other, FP32, samples=8).to_dict()}


def test_runtimes_that_may_differ_per_run_are_not_reused(tiny_bundle_ro: Path) -> None:
    """Only ONNX Runtime CPU on random inputs is reused (validate.REUSABLE): torch, and INT8
    on the photographs, run every time."""
    from vggdeploy.validate import REUSABLE

    assert {("onnxruntime", "cpu")} == REUSABLE
    outs: dict = {}
    validate_bundle(tiny_bundle_ro, [parse_spec("torch", "fp32")], samples=8, outputs_cache=outs)
    assert outs == {}
