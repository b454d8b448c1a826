"""Test double of TensorRT (10.x and 11.x generations) and of vggdeploy's CUDA glue.

In-process: the `trt` fixture (trt_double.fixtures) puts a fresh fake `tensorrt` module into
sys.modules and the fake CUDA glue in place of `vggdeploy.runtimes._cuda`. In a subprocess:
put tests/trt_double/shim on PYTHONPATH; its sitecustomize does the same, with the generation
taken from VGGDEPLOY_TEST_TRT_GENERATION (a test-only variable; production code never reads it).
"""

from __future__ import annotations

from . import fake_cuda
from .fake_tensorrt import FULL_VERSIONS, build_module

GENERATIONS = tuple(FULL_VERSIONS)


def install(monkeypatch, generation: str):
    """Install the double for `generation` ("10.16" or "11.4") with pytest's monkeypatch."""
    import sys

    module = build_module(generation)
    fake_cuda.reset()
    monkeypatch.setitem(sys.modules, "tensorrt", module)
    monkeypatch.setitem(sys.modules, "vggdeploy.runtimes._cuda", fake_cuda)
    _forget_polygraphy_trt()
    return module


def _forget_polygraphy_trt() -> None:
    """Polygraphy imports `tensorrt` lazily once per module and keeps it
    (polygraphy/mod/importer.py, LazyModule): drop what it kept so that its loaders see the
    generation just installed."""
    import sys

    for name, mod in list(sys.modules.items()):
        lazy = getattr(mod, "trt", None) if name.startswith("polygraphy.") else None
        if lazy is not None and type(lazy).__name__ == "LazyModule":
            object.__setattr__(lazy, "module", None)


__all__ = ["GENERATIONS", "build_module", "fake_cuda", "install"]
