"""Install the TensorRT double in a subprocess (tests only): PYTHONPATH=tests/trt_double/shim."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from trt_double import build_module, fake_cuda  # noqa: E402

sys.modules["tensorrt"] = build_module(os.environ.get("VGGDEPLOY_TEST_TRT_GENERATION", "10.16"))
sys.modules["vggdeploy.runtimes._cuda"] = fake_cuda
