"""Host probes and the one rule for whether an engine runs here."""

from __future__ import annotations

from vggdeploy import host
from vggdeploy.records import EngineRecord


def _engine(**changes) -> EngineRecord:
    data = {
        "path": "model.fp16.engine",
        "sha256": "0" * 64,
        "size": 1,
        "precision": "fp16",
        "tensorrt_version": "10.16.1.11",
        "gpu": {"name": "Tesla T4", "compute_capability": "7.5"},
    }
    data.update(changes)
    return EngineRecord.model_validate(data)


def test_cpu_features_from_flags() -> None:
    info = host.CpuInfo("x", frozenset({"avx2", "avx512f", "avx512_vnni", "sse4_2"}))
    assert info.features == ["avx2", "avx512", "vnni"] and info.has_vnni
    assert not host.CpuInfo("y", frozenset({"avx2"})).has_vnni
    assert host.cpu().name  # this machine's


def test_engine_rules() -> None:
    same = host.HostProbe("10.16.1.11", None, (host.Gpu("Tesla T4", "7.5"),), None)
    assert host.check_engine(_engine(), same).runnable
    other_cc = host.HostProbe("10.16.1.11", None, (host.Gpu("A100", "8.0"),), None)
    verdict = host.check_engine(_engine(), other_cc)
    assert not verdict.runnable and "compute capability 7.5" in verdict.reasons[0]
    other_trt = host.HostProbe("10.17.0.1", None, (host.Gpu("Tesla T4", "7.5"),), None)
    assert (
        "engines run only on the TensorRT version"
        in host.check_engine(_engine(), other_trt).reasons[0]
    )
    compat = _engine(flags={"version_compatible": True})
    assert host.check_engine(compat, other_trt).runnable
    amp = _engine(
        gpu={"name": "A10", "compute_capability": "8.6"}, flags={"hardware_compat": "ampere+"}
    )
    assert host.check_engine(amp, other_cc).runnable
    nothing = host.HostProbe(None, "TensorRT is not importable", (), "no NVIDIA GPU found")
    assert host.check_engine(_engine(), nothing).reasons == (
        "TensorRT is not importable",
        "no NVIDIA GPU found",
    )
    assert (
        host.version_incompatibility(
            _engine(tensorrt_version="10.16.1.11", flags={"version_compatible": True}), "11.4.0.1"
        )
        is None
    )
