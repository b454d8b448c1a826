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


def test_every_command_gives_the_same_tensorrt_install_hint(monkeypatch) -> None:
    """`bench`/`inspect` (the host probe), the runtime registry (every --runtime) and the
    TensorRT loader (build, engine checks) tell a host without TensorRT the same thing."""
    import builtins

    import pytest

    from vggdeploy.errors import RuntimeUnavailableError
    from vggdeploy.runtimes import _trt, registry

    real_import = builtins.__import__

    def no_tensorrt(name, *args, **kwargs):
        if name == "tensorrt":
            raise ImportError("No module named 'tensorrt'", name="tensorrt")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorrt)
    monkeypatch.setattr(host.importlib.util, "find_spec", lambda name, *a: None)
    hint = host.install_hint("tensorrt")
    assert hint in (host.tensorrt_version()[1] or "")
    assert hint in (registry.unavailable(registry.parse_spec("tensorrt")) or "")
    with pytest.raises(RuntimeUnavailableError) as exc:
        _trt.import_tensorrt()
    assert hint in str(exc.value)


def test_install_hints_live_in_host_only() -> None:
    """No module spells out `pip install` itself: each hint comes from `host.INSTALL_HINTS`.
    The exceptions repair an install rather than name a missing package."""
    import ast
    from pathlib import Path

    import vggdeploy

    repairs = {"runtimes/onnxrt.py"}  # swapping onnxruntime for onnxruntime-gpu
    root = Path(vggdeploy.__file__).parent
    found = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if rel in {"host.py", *repairs}:
            continue
        tree = ast.parse(path.read_text("utf-8"))
        docstrings = {
            id(n.body[0].value)
            for n in ast.walk(tree)
            if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef))
            and n.body
            and isinstance(n.body[0], ast.Expr)
        }
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and "pip install" in node.value
                and id(node) not in docstrings
            ):
                found.append(f"{rel}:{node.lineno}")
    assert found == [], f"install hints outside host.INSTALL_HINTS: {found}"
