"""GPU acceptance: export a small VGG and a full VGG-16, build fp32/fp16/int8 TensorRT engines,
validate each against PyTorch on the shipped photographs, bench them beside ONNX Runtime's CUDA
provider and torch on CUDA, inspect them, and write one JSON report.

    python benchmarks/gpu_acceptance.py [OUT_DIR] [--write-docs]    (default: acceptance-out)

Needs an NVIDIA GPU, TensorRT and Polygraphy (`pip install -e '.[gpu,dev]'`); without them it
stops with one line. The code is `vggdeploy.pipeline.acceptance`, which the `gpu`/`tensorrt`
tests call too. Never run yet: written on a machine without a GPU.
"""

from __future__ import annotations

import argparse
import sys

import docs_section

from vggdeploy.errors import VggDeployError
from vggdeploy.pipeline.acceptance import run_acceptance


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", default="acceptance-out", help="output folder")
    docs_section.add_option(parser)
    args = parser.parse_args(argv[1:])
    record = docs_section.Recorder(__file__, args.write_docs, argv[1:])
    try:
        report = run_acceptance(args.out)
    except VggDeployError as exc:
        print(f"gpu_acceptance: {exc}", file=sys.stderr)
        return 2
    verdict = "passed" if report["passed"] else "FAILED"
    with record:
        print(f"gpu_acceptance {verdict}: report in {report['path']}")
        print(f"host: {report['host']}")
        for label, run in report["runs"].items():
            how = "passed" if run["passed"] else f"FAILED: {run.get('failure')}"
            print(f"  {label} ({run['model']}): {how}, {run['seconds']} s")
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
