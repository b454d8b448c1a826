"""GPU acceptance: export a small VGG and a full VGG-16, build fp32/fp16/int8 TensorRT engines,
validate each against PyTorch on the shipped photographs, bench them beside ONNX Runtime's CUDA
provider and torch on CUDA, inspect them, and write one JSON report.

    python benchmarks/gpu_acceptance.py [OUT_DIR]    (default: acceptance-out)

Needs an NVIDIA GPU, TensorRT and Polygraphy (`pip install -e '.[gpu,dev]'`); without them it
stops with one line. The code is `vggdeploy.pipeline.acceptance`, which the `gpu`/`tensorrt`
tests call too. Never run yet: written on a machine without a GPU.
"""

from __future__ import annotations

import sys

from vggdeploy.errors import VggDeployError
from vggdeploy.pipeline.acceptance import run_acceptance


def main(argv: list[str]) -> int:
    out = argv[1] if len(argv) > 1 else "acceptance-out"
    try:
        report = run_acceptance(out)
    except VggDeployError as exc:
        print(f"gpu_acceptance: {exc}", file=sys.stderr)
        return 2
    verdict = "passed" if report["passed"] else "FAILED"
    print(f"gpu_acceptance {verdict}: report in {report['path']}")
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
